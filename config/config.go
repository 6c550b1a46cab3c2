// Package config loads the operator's server config (imagegen.yaml): expands
// ${ENV}, reads secrets from files, validates once at start with errors naming the key.
package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/strictyaml"
)

// Config is the server config. It is loaded once and passed down; nothing
// reads the file or the environment after Load.
type Config struct {
	File    string `yaml:"-"`
	Listen  string `yaml:"listen"`   // default ":8080"
	BaseURL string `yaml:"base_url"` // how users reach this server, for links on GitHub; default http://localhost<listen>
	Redis   string `yaml:"redis"`    // redis:// URL; default redis://127.0.0.1:6379/0

	// RedisSentinel and RedisCluster replace Redis for a Sentinel-managed
	// master or a Redis Cluster (at most one of the three).
	RedisSentinel *RedisSentinel `yaml:"redis_sentinel"`
	RedisCluster  *RedisCluster  `yaml:"redis_cluster"`
	// RedisDurability is what must hold before the webhook answers 202:
	// DurabilityAck (the default), DurabilityFsync or DurabilityReplica.
	RedisDurability Durability `yaml:"redis_durability"`

	GitHub  GitHub  `yaml:"github"`
	Webhook Webhook `yaml:"webhook"`
	Build   Build   `yaml:"build"`
	Pages   Pages   `yaml:"pages"`

	// APITokens are the bearer tokens of the API and the pages' sign-in,
	// each with its scopes and repositories (tokens.go).
	APITokens []APIToken `yaml:"api_tokens"`
	// ReadAccess says who may read builds, image lineage and the build
	// pages: ReadToken (the default) or ReadPublic.
	ReadAccess string `yaml:"read_access"`
	// PublicLogs opens build logs too when ReadAccess is ReadPublic.
	PublicLogs bool `yaml:"public_logs"`
	// MetricsListen, when set, is where serve answers /metrics (and
	// /healthz, /readyz) without authentication; the main listener then
	// answers 404 on /metrics.
	MetricsListen string `yaml:"metrics_listen"`
	// TrustedProxies are the addresses (CIDRs or IPs) of reverse proxies
	// whose X-Forwarded-For names the client; without them the header is
	// ignored and the client is the connection's peer.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Allow is who may build on the clouds without an allow of their own
	// (allow.go); nil: anyone the GitHub App is installed for.
	Allow *Allow `yaml:"allow"`
	// EncryptionKey encrypts passwords in tasks (32 bytes, base64 or hex);
	// when empty, a key is generated at start (passwords then do not survive a restart).
	EncryptionKey secret.String `yaml:"encryption_key"`
	// Provenance is how images' provenance statements are signed.
	Provenance Provenance `yaml:"provenance"`

	// Clouds are the configured clouds, by name. Decoded by their drivers.
	Clouds map[string]*clouds.Entry `yaml:"-"`
	// cloudAllow are the clouds' own allow rules, by cloud name.
	cloudAllow map[string]*Allow
	// CloudsNode is kept for the loader only.
	// It is not marshaled: a driver's raw settings may hold expanded ${ENV} values.
	CloudsNode yaml.Node `yaml:"clouds" json:"-"`
}

// RedisSentinel is a Redis master found through Sentinel (failover).
type RedisSentinel struct {
	MasterName       string        `yaml:"master_name"`
	Addrs            []string      `yaml:"addrs"` // the sentinels, host:port
	DB               int           `yaml:"db"`
	Username         string        `yaml:"username"`
	Password         secret.String `yaml:"password"`
	SentinelPassword secret.String `yaml:"sentinel_password"`
	TLS              bool          `yaml:"tls"`
}

// RedisCluster is a Redis Cluster.
type RedisCluster struct {
	Addrs    []string      `yaml:"addrs"` // seed nodes, host:port
	Username string        `yaml:"username"`
	Password secret.String `yaml:"password"`
	TLS      bool          `yaml:"tls"`
}

// GitHub is how imagegen talks to GitHub.
type GitHub struct {
	AppID             int64         `yaml:"app_id"`
	PrivateKeyFile    string        `yaml:"private_key_file"`
	PrivateKey        secret.String `yaml:"-"` // read from PrivateKeyFile at load
	Token             secret.String `yaml:"token"`
	TokenFile         string        `yaml:"token_file"`
	WebhookSecret     secret.String `yaml:"webhook_secret"`
	WebhookSecretFile string        `yaml:"webhook_secret_file"`
	APIURL            string        `yaml:"api_url"` // default https://api.github.com/
	// AllowRepos, when set, are the only repositories (OWNER/NAME
	// patterns, as allow.repos) whose deliveries the webhook takes; others
	// are answered 200 and ignored.
	AllowRepos []string `yaml:"allow_repos"`
}

// AcceptsRepo reports whether deliveries about repo are taken
// (github.allow_repos).
func (g *GitHub) AcceptsRepo(repo string) bool {
	return g.AllowRepos == nil || MatchRepo(g.AllowRepos, repo)
}

// Webhook bounds what POST /webhook reads at once. A delivery past either
// bound is answered 503 (with Retry-After) before its body is read; one
// refused by its headers alone (no or a malformed signature, an event
// imagegen does not use, over 25 MiB) is never read and does not count.
type Webhook struct {
	// MaxConcurrentBytes bounds the bytes of the bodies being read at once,
	// each counted by its Content-Length (25 MiB without one); default
	// 64 MiB, at least 25 MiB (GitHub's largest delivery).
	MaxConcurrentBytes int64 `yaml:"max_concurrent_bytes"`
	// MaxConcurrentReads bounds how many bodies are read at once; default 1024.
	MaxConcurrentReads int `yaml:"max_concurrent_reads"`
}

// Webhook limits: GitHub's largest delivery, and the defaults.
const (
	MaxWebhookBody            = 25 << 20
	DefaultWebhookBytes       = 64 << 20
	DefaultWebhookConcurrency = 1024
)

// Build holds limits for builds.
type Build struct {
	SSHTimeout     time.Duration `yaml:"ssh_timeout"`     // default 15m
	Timeout        time.Duration `yaml:"timeout"`         // one cloud's build; default 2h
	CleanupTimeout time.Duration `yaml:"cleanup_timeout"` // default 10m
	Concurrency    int           `yaml:"concurrency"`     // builds one worker runs at once; default 10
	LogLimit       int           `yaml:"log_limit"`       // bytes of log kept per cloud (the tail); default 4 MiB
	Retention      time.Duration `yaml:"retention"`       // how long build records are kept; default 2160h (90 days)
	// SweepInterval is how often a worker looks for resources of builds that
	// no longer run, and for builds whose task was lost; default 5m.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// ShutdownGrace is how long a worker told to stop (SIGTERM) lets its
	// running builds go on before it cancels them, cleans up and hands them
	// back to the queue; default 0: at once.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// MaxGeneratorsPerPush bounds the generators one push builds: past it,
	// the push builds none and says so on the commit; default 100.
	MaxGeneratorsPerPush int `yaml:"max_generators_per_push"`
}

// Provenance configures the in-toto/SLSA statements signed for every image.
type Provenance struct {
	// SigningKeyFile is a PEM PKCS#8 private key, ed25519 or ECDSA P-256
	// (openssl genpkey -algorithm ed25519); read by serve and worker at
	// start. Unset: statements are written unsigned, with a warning.
	SigningKeyFile string `yaml:"signing_key_file"`
	// BuilderID names this deployment in the statements (SLSA's
	// builder.id): an absolute URI; default base_url.
	BuilderID string `yaml:"builder_id"`
}

// Pages configures the build pages in the browser.
type Pages struct {
	// LinkKey signs the expiring links placed on GitHub; when empty, a key
	// derived from EncryptionKey is used, and with neither, links are unsigned.
	LinkKey secret.String `yaml:"link_key"`
	// LinkTTL is how long a signed link opens its page; default build.retention.
	LinkTTL time.Duration `yaml:"link_ttl"`
}

// Durability is what the webhook waits for before it answers 202: how much
// of a Redis failure an accepted delivery survives.
type Durability string

// The durabilities (README, "Durability").
const (
	// DurabilityAck: Redis has the delivery in memory and in its AOF's
	// buffer. It survives a Redis restart or crash; with appendfsync
	// everysec, the crash of the Redis host may lose up to a second of
	// deliveries, and a failover those not yet on the replica.
	DurabilityAck Durability = "ack"
	// DurabilityFsync: as ack, on a Redis (every node) with appendonly yes
	// and appendfsync always, which imagegen checks at start: the delivery
	// is on the Redis host's disk before the answer.
	DurabilityFsync Durability = "fsync"
	// DurabilityReplica: as ack, and a replica has the delivery too (WAIT 1
	// on the queue's master): it survives the loss of the Redis host and a
	// failover to that replica.
	DurabilityReplica Durability = "replica"
)

// Defaults for values the config leaves out.
const (
	DefaultListen = ":8080"
	DefaultRedis  = "redis://127.0.0.1:6379/0"
	DefaultAPIURL = "https://api.github.com/"
)

// Load reads, expands and validates the config at path, with each cloud
// checked by its driver in reg.
func Load(path string, reg *clouds.Registry) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path, reg, os.LookupEnv)
}

// yamlOptions: the config is the operator's, so it may share settings with
// anchors and aliases (their expansion bounded) and use tags.
var yamlOptions = strictyaml.Options{Kind: "config", AllowAliases: true, AllowTags: true}

// Parse is Load on bytes, with the environment given as lookup.
func Parse(data []byte, file string, reg *clouds.Registry, lookup func(string) (string, bool)) (*Config, error) {
	doc := strictyaml.Parse(file, data, yamlOptions)
	if len(doc.Errs) > 0 {
		return nil, doc.Errs
	}
	root := doc.Root
	if root == nil {
		return nil, fmt.Errorf("%s: the config is empty", file)
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d:%d: the config must be a mapping", file, root.Line, root.Column)
	}
	expand(doc, root, lookup)
	if len(doc.Errs) > 0 {
		return nil, doc.Errs
	}
	cfg := &Config{File: file}
	if err := strictyaml.Decode(file, root, cfg, strictyaml.KeyCheck{}); err != nil {
		return nil, err
	}
	if err := cfg.finish(reg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// RedactURL hides a password in a URL (redis://:pw@host → redis://:xxxxx@host).
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// RedisAddr describes where Redis is, without secrets, for logs and errors.
func (c *Config) RedisAddr() string {
	switch {
	case c.RedisSentinel != nil:
		return "sentinel " + c.RedisSentinel.MasterName + " via " + strings.Join(c.RedisSentinel.Addrs, ",")
	case c.RedisCluster != nil:
		return "cluster " + strings.Join(c.RedisCluster.Addrs, ",")
	}
	return RedactURL(c.Redis)
}

// CloudNames returns the configured clouds' names, sorted.
func (c *Config) CloudNames() []string {
	names := make([]string, 0, len(c.Clouds))
	for n := range c.Clouds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CheckService checks what serve and worker need beyond what build needs.
func (c *Config) CheckService() error {
	if c.GitHub.WebhookSecret.IsZero() {
		return fmt.Errorf("%s: github.webhook_secret is empty: set it (e.g. webhook_secret: ${IMAGEGEN_WEBHOOK_SECRET}) to the secret configured on the GitHub webhook; imagegen never accepts unsigned deliveries", c.File)
	}
	return nil
}

// Warnings lists what the service can run without but a user should know.
func (c *Config) Warnings() []string {
	var w []string
	if c.GitHub.AppID == 0 && c.GitHub.Token.IsZero() {
		w = append(w, "github: no app_id or token: imagegen reads public repositories only and reports no statuses or check runs (set app_id and private_key_file for a GitHub App, or token for statuses only)")
	} else if c.GitHub.AppID == 0 {
		w = append(w, "github: token mode: commit statuses only; check runs need a GitHub App (app_id, private_key_file)")
	}
	switch {
	case len(c.APITokens) == 0 && c.ReadAccess == ReadToken:
		w = append(w, "api_tokens is empty and read_access is token: the API refuses every request and the build pages open only through the signed links on GitHub")
	case len(c.APITokens) == 0:
		w = append(w, "api_tokens is empty: the re-run API refuses every request")
	}
	w = append(w, c.BuildWarnings()...)
	if c.ReadAccess == ReadPublic {
		what := "every build and image lineage (build logs still need a token)"
		if c.PublicLogs {
			what = "every build, image lineage and build log"
		}
		w = append(w, "read_access is public: anyone who reaches this server reads "+what)
	}
	return w
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${NAME} and ${NAME:-default} in every scalar value (never in keys).
func expand(doc *strictyaml.Doc, n *yaml.Node, lookup func(string) (string, bool)) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := lookup(m[1]); ok && v != "" {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			doc.Errorf(n, "environment variable %s is not set (referenced as %s)", m[1], ref)
			return ""
		})
		// A plain scalar is resolved again after expansion, so app_id: ${APP_ID}
		// decodes as a number; a quoted one stays a string.
		if n.Style == 0 {
			n.Tag = ""
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			expand(doc, n.Content[i], lookup)
		}
	default:
		for _, c := range n.Content {
			expand(doc, c, lookup)
		}
	}
}
