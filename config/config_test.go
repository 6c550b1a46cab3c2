package config

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
)

// tinyOpener is what the test driver makes: its decoded settings.
type tinyOpener struct {
	Region   string        `yaml:"region"`
	Endpoint string        `yaml:"endpoint"`
	Delay    time.Duration `yaml:"delay"`
}

func (o *tinyOpener) Open(_ context.Context, _ clouds.Credentials) (clouds.Cloud, error) {
	return nil, fmt.Errorf("the test driver opens nothing")
}

// testRegistry has one tiny driver, "tiny", that decodes its keys strictly
// and requires region, as a real driver would.
func testRegistry() *clouds.Registry {
	r := clouds.NewRegistry()
	r.Register("tiny", func(cfg clouds.Config) (clouds.Opener, error) {
		o := &tinyOpener{}
		if err := clouds.DecodeStrict(cfg, o); err != nil {
			return nil, err
		}
		if o.Region == "" {
			return nil, fmt.Errorf("region is required")
		}
		return o, nil
	})
	r.Register("other", func(cfg clouds.Config) (clouds.Opener, error) {
		return &tinyOpener{}, clouds.DecodeStrict(cfg, &struct{}{})
	})
	return r
}

func lookupFrom(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hookFile := write("hook", "file-webhook-secret-123\n")
	tokenFile := write("token", "  ghp_filetoken0123456789\n")
	keyFile := write("app.pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIfake\n-----END RSA PRIVATE KEY-----\n")
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name    string
		src     string
		env     map[string]string
		check   func(t *testing.T, c *Config)
		wantErr []string // fragments of the error, in order, each with its position
		exact   bool     // wantErr is the whole error
	}{
		{
			name: "defaults",
			src:  "clouds: {}\n",
			check: func(t *testing.T, c *Config) {
				want := Config{File: "imagegen.yaml", Listen: ":8080", BaseURL: "http://localhost:8080", Redis: "redis://127.0.0.1:6379/0", RedisDurability: DurabilityAck,
					GitHub:     GitHub{APIURL: "https://api.github.com/"},
					Webhook:    Webhook{MaxConcurrentBytes: 64 << 20, MaxConcurrentReads: 1024},
					Build:      Build{SSHTimeout: 15 * time.Minute, Timeout: 2 * time.Hour, CleanupTimeout: 10 * time.Minute, Concurrency: 10, LogLimit: 4 << 20, Retention: 90 * 24 * time.Hour, SweepInterval: 5 * time.Minute, MaxGeneratorsPerPush: 100},
					Pages:      Pages{LinkTTL: 90 * 24 * time.Hour},
					ReadAccess: ReadToken,
					Provenance: Provenance{BuilderID: "http://localhost:8080"},
					Clouds:     map[string]*clouds.Entry{}, cloudAllow: map[string]*Allow{}}
				c.CloudsNode = want.CloudsNode
				if !reflect.DeepEqual(*c, want) {
					t.Errorf("got  %+v\nwant %+v", *c, want)
				}
			},
		},
		{
			name: "values given",
			src: `listen: 127.0.0.1:9000
base_url: https://imagegen.example.org/
redis: rediss://redis.example.org:6380/2
github:
  api_url: https://ghe.example.org/api/v3
  token: ghp_inline0123456789
build: {ssh_timeout: 90s, timeout: 3h, cleanup_timeout: 5m, concurrency: 4, log_limit: 1024, retention: 24h, max_generators_per_push: 7}
api_tokens: [0123456789abcdef0123]
`,
			check: func(t *testing.T, c *Config) {
				if c.Listen != "127.0.0.1:9000" || c.BaseURL != "https://imagegen.example.org" || c.Redis != "rediss://redis.example.org:6380/2" {
					t.Errorf("listen, base_url, redis = %q, %q, %q", c.Listen, c.BaseURL, c.Redis)
				}
				if c.GitHub.APIURL != "https://ghe.example.org/api/v3/" || c.GitHub.Token.Reveal() != "ghp_inline0123456789" {
					t.Errorf("github = %+v", c.GitHub)
				}
				want := Build{SSHTimeout: 90 * time.Second, Timeout: 3 * time.Hour, CleanupTimeout: 5 * time.Minute, Concurrency: 4, LogLimit: 1024, Retention: 24 * time.Hour, SweepInterval: 5 * time.Minute, MaxGeneratorsPerPush: 7}
				if c.Build != want {
					t.Errorf("build = %+v, want %+v", c.Build, want)
				}
				if len(c.APITokens) != 1 || c.APITokens[0].Token.Reveal() != "0123456789abcdef0123" {
					t.Errorf("api_tokens = %v", c.APITokens)
				}
			},
		},
		{
			name: "env expansion, numbers stay numbers",
			src: `listen: ${LISTEN}
redis: ${REDIS:-redis://10.0.0.1:6379/1}
base_url: "http://${HOST:-localhost}:${PORT}"
github:
  app_id: ${APP_ID}
  private_key_file: ` + keyFile + `
  webhook_secret: ${HOOK}
build:
  concurrency: ${CONC:-3}
  timeout: ${TIMEOUT:-45m}
api_tokens: ["${TOKEN}"]
`,
			env: map[string]string{"LISTEN": ":7000", "PORT": "7000", "APP_ID": "12345", "HOOK": "env-hook-secret", "TOKEN": "tok-0123456789abcdef", "HOST": ""},
			check: func(t *testing.T, c *Config) {
				if c.Listen != ":7000" || c.Redis != "redis://10.0.0.1:6379/1" || c.BaseURL != "http://localhost:7000" {
					t.Errorf("listen, redis, base_url = %q, %q, %q", c.Listen, c.Redis, c.BaseURL)
				}
				if c.GitHub.AppID != 12345 || c.GitHub.WebhookSecret.Reveal() != "env-hook-secret" || !strings.Contains(c.GitHub.PrivateKey.Reveal(), "MIIfake") {
					t.Errorf("github = app_id %d, secret %q, key %q", c.GitHub.AppID, c.GitHub.WebhookSecret.Reveal(), c.GitHub.PrivateKey.Reveal())
				}
				if c.Build.Concurrency != 3 || c.Build.Timeout != 45*time.Minute {
					t.Errorf("build = %+v", c.Build)
				}
				if len(c.APITokens) != 1 || c.APITokens[0].Token.Reveal() != "tok-0123456789abcdef" {
					t.Errorf("api_tokens = %v", c.APITokens)
				}
			},
		},
		{
			name: "provenance: builder id defaults to base_url",
			src:  "base_url: https://imagegen.example.org/\nprovenance: {signing_key_file: " + hookFile + "}\n",
			check: func(t *testing.T, c *Config) {
				if c.Provenance.BuilderID != "https://imagegen.example.org" || c.Provenance.SigningKeyFile != hookFile {
					t.Errorf("provenance = %+v", c.Provenance)
				}
			},
		},
		{
			name:    "provenance: a relative builder id and a missing key file",
			src:     "provenance: {builder_id: imagegen, signing_key_file: /nonexistent/provenance.key}\n",
			wantErr: []string{`imagegen.yaml: provenance.builder_id: "imagegen" is not an absolute URI (e.g. https://imagegen.example.org)`, `imagegen.yaml: provenance.signing_key_file: stat /nonexistent/provenance.key: no such file or directory`},
		},
		{
			name:    "quoted env stays a string",
			src:     "github:\n  app_id: \"${APP_ID}\"\n",
			env:     map[string]string{"APP_ID": "12345"},
			wantErr: []string{"imagegen.yaml: yaml: unmarshal errors:\n  line 2: cannot unmarshal !!str `12345` into int64"},
		},
		{
			name:    "unset env vars",
			src:     "listen: ${LISTEN}\ngithub:\n  webhook_secret: ${HOOK}\n  token: ${EMPTY}\n",
			env:     map[string]string{"EMPTY": ""},
			wantErr: []string{"imagegen.yaml:1:9: environment variable LISTEN is not set (referenced as ${LISTEN})", "imagegen.yaml:3:19: environment variable HOOK is not set", "imagegen.yaml:4:10: environment variable EMPTY is not set"},
		},
		{
			name:    "unknown keys at every level",
			src:     "listne: x\ngithub:\n  appid: 1\nbuild:\n  timeout: 1h\n  retries: 3\n",
			wantErr: []string{`imagegen.yaml:1:1: unknown key "listne": did you mean "listen"? (known: allow, api_tokens, base_url, build, clouds, encryption_key, github, listen, metrics_listen, pages, provenance, public_logs, read_access, redis, redis_cluster, redis_durability, redis_sentinel, trusted_proxies, webhook)`, `imagegen.yaml:3:3: unknown key "appid" in github: did you mean "app_id"? (known: allow_repos, api_url, app_id, private_key_file, token, token_file, webhook_secret, webhook_secret_file)`, `imagegen.yaml:6:3: unknown key "retries" in build (known: cleanup_timeout, concurrency, log_limit, max_generators_per_push, retention, shutdown_grace, ssh_timeout, sweep_interval, timeout)`},
		},
		{
			name: "secrets from files",
			src:  "github:\n  webhook_secret_file: " + hookFile + "\n  token_file: " + tokenFile + "\n",
			check: func(t *testing.T, c *Config) {
				if c.GitHub.WebhookSecret.Reveal() != "file-webhook-secret-123" || c.GitHub.Token.Reveal() != "ghp_filetoken0123456789" {
					t.Errorf("webhook secret %q, token %q: want the files' trimmed contents", c.GitHub.WebhookSecret.Reveal(), c.GitHub.Token.Reveal())
				}
			},
		},
		{
			name:    "secret file problems",
			src:     "github:\n  webhook_secret: x\n  webhook_secret_file: " + hookFile + "\n  token_file: " + missing + "\n",
			wantErr: []string{"imagegen.yaml: github.webhook_secret_file: set both github.webhook_secret and github.webhook_secret_file: keep one", "imagegen.yaml: github.token_file: open " + missing + ": no such file or directory"},
		},
		{
			name:    "app id without key, token with app",
			src:     "github:\n  app_id: 7\n  token: ghp_x\n",
			wantErr: []string{"github.private_key_file: app_id is set, so the App's private key file is needed", "github: set either app_id (a GitHub App) or token, not both"},
		},
		{
			name: "clouds, password ask",
			src:  "clouds:\n  hotel: {type: tiny, region: r1, password: ask, delay: 2s}\n  sierra:\n    type: tiny\n    region: r2\n    endpoint: https://sierra.example.org\n",
			check: func(t *testing.T, c *Config) {
				if got := c.CloudNames(); !reflect.DeepEqual(got, []string{"hotel", "sierra"}) {
					t.Fatalf("CloudNames = %v", got)
				}
				h, s := c.Clouds["hotel"], c.Clouds["sierra"]
				if !h.AsksPassword() || s.AsksPassword() || h.Type != "tiny" || h.Name != "hotel" {
					t.Errorf("hotel %+v asks %v, sierra asks %v", h.Config, h.AsksPassword(), s.AsksPassword())
				}
				if o := h.Opener.(*tinyOpener); o.Region != "r1" || o.Delay != 2*time.Second {
					t.Errorf("hotel's driver got %+v", *o)
				}
				if o := s.Opener.(*tinyOpener); o.Endpoint != "https://sierra.example.org" {
					t.Errorf("sierra's driver got %+v", *o)
				}
			},
		},
		{
			name:    "bad password value",
			src:     "clouds:\n  hotel: {type: tiny, region: r, password: hunter2}\n",
			wantErr: []string{`imagegen.yaml:2:3: clouds.hotel.password: the only value is "ask"`},
		},
		{
			name:    "unknown cloud type",
			src:     "clouds:\n  hotel: {type: openstak}\n",
			wantErr: []string{`imagegen.yaml:2:3: clouds.hotel: cloud "hotel": unknown type "openstak" (known: other, tiny)`},
		},
		{
			name:    "missing type, bad name, not a mapping",
			src:     "clouds:\n  hotel: {region: r}\n  9lives: {type: tiny}\n  box: tiny\n",
			wantErr: []string{"imagegen.yaml:2:3: clouds.hotel.type is missing (one of: other, tiny)", "imagegen.yaml:3:3: clouds.9lives: a cloud name is letters", "imagegen.yaml:4:3: clouds.box: must be a mapping"},
		},
		{
			name:    "unknown driver key",
			src:     "clouds:\n  hotel:\n    type: tiny\n    region: r\n    regoin: r\n",
			wantErr: []string{`imagegen.yaml:5:5: cloud "hotel": unknown key "regoin" for type tiny: did you mean "region"? (known: type, password, allow, delay, endpoint, region)`},
			exact:   true,
		},
		{
			name:    "driver decode error keeps the cloud's position",
			src:     "clouds:\n  hotel:\n    type: tiny\n    region: r\n    delay: soon\n",
			wantErr: []string{"imagegen.yaml:2:3: clouds.hotel: cloud \"hotel\": imagegen.yaml: cloud \"hotel\": yaml: unmarshal errors:\n  line 5: cannot unmarshal !!str `soon` into time.Duration"},
			exact:   true,
		},
		{
			name:    "driver's own check",
			src:     "clouds:\n  hotel: {type: tiny}\n",
			wantErr: []string{`imagegen.yaml:2:3: clouds.hotel: cloud "hotel": region is required`},
		},
		{
			name:    "clouds not a mapping",
			src:     "clouds: [a]\n",
			wantErr: []string{"imagegen.yaml: clouds: must be a mapping of cloud name to its settings"},
		},
		{
			name:    "bad urls",
			src:     "redis: http://localhost:6379\nbase_url: ftp://x\ngithub: {api_url: 'gopher://x'}\n",
			wantErr: []string{`imagegen.yaml: base_url: "ftp://x" is not an http(s) URL`, `imagegen.yaml: redis: "http://localhost:6379" is not a redis:// URL (e.g. redis://127.0.0.1:6379/0)`, `imagegen.yaml: github.api_url: "gopher://x/" is not an http(s) URL`},
		},
		{
			name:    "short api token",
			src:     "api_tokens: [0123456789abcdef, short]\n",
			wantErr: []string{"imagegen.yaml: api_tokens[1]: is shorter than 16 characters"},
		},
		{
			name:    "negative durations",
			src:     "build: {timeout: -1m, ssh_timeout: -1s, retention: -1h, cleanup_timeout: -1ms, concurrency: -2, log_limit: -1, max_generators_per_push: -5}\n",
			wantErr: []string{"imagegen.yaml: build.ssh_timeout: must be positive, got -1s", "imagegen.yaml: build.timeout: must be positive, got -1m0s", "imagegen.yaml: build.cleanup_timeout: must be positive, got -1ms", "imagegen.yaml: build.retention: must be positive, got -1h0m0s", "imagegen.yaml: build.concurrency: must be positive, got -2", "imagegen.yaml: build.log_limit: must be positive, got -1", "imagegen.yaml: build.max_generators_per_push: must be positive, got -5"},
		},
		{
			name:    "webhook bounds",
			src:     "webhook: {max_concurrent_bytes: 1048576, max_concurrent_reads: -1}\n",
			wantErr: []string{"imagegen.yaml: webhook.max_concurrent_bytes: must be at least 26214400 (25 MiB, GitHub's largest delivery), got 1048576", "imagegen.yaml: webhook.max_concurrent_reads: must be positive, got -1"},
		},
		{
			name: "webhook bounds given",
			src:  "webhook: {max_concurrent_bytes: 26214400, max_concurrent_reads: 3}\n",
			check: func(t *testing.T, c *Config) {
				if c.Webhook != (Webhook{MaxConcurrentBytes: 25 << 20, MaxConcurrentReads: 3}) {
					t.Errorf("webhook %+v", c.Webhook)
				}
			},
		},
		{
			name:    "bad duration",
			src:     "build:\n  timeout: 10 minutes\n",
			wantErr: []string{"imagegen.yaml: yaml: unmarshal errors:\n  line 2: cannot unmarshal !!str `10 minutes` into time.Duration"},
		},
		{
			name:    "invalid yaml",
			src:     "listen: [\n",
			wantErr: []string{"imagegen.yaml:2:1: invalid YAML: did not find expected node content"},
		},
		{
			name:    "two documents",
			src:     "listen: :1\n---\nlisten: :2\n",
			wantErr: []string{`imagegen.yaml:2:1: a config file holds one YAML document`},
		},
		{
			name:    "duplicate keys",
			src:     "listen: :1\nclouds:\n  hotel: {type: tiny, region: r}\n  hotel: {type: tiny, region: s}\nlisten: :2\n",
			wantErr: []string{`imagegen.yaml:4:3: key "hotel" in clouds is already set at line 3: keep one`, `imagegen.yaml:5:1: key "listen" is already set at line 1: keep one`},
		},
		{
			name: "aliases share settings",
			src:  "redis_cluster: {addrs: &seeds ['n1:6379', 'n2:6379']}\nclouds:\n  a: &a {type: tiny, region: r1}\n  b: {type: tiny, region: r2, endpoint: &e https://e}\n  c: {type: tiny, region: r3, endpoint: *e}\n",
			check: func(t *testing.T, c *Config) {
				if got := c.Clouds["c"].Opener.(*tinyOpener).Endpoint; got != "https://e" || len(c.RedisCluster.Addrs) != 2 {
					t.Errorf("endpoint %q, addrs %v", got, c.RedisCluster.Addrs)
				}
			},
		},
		{
			name:    "unknown key behind an alias",
			src:     "build: &b {timeout: 1h}\npages: *b\n",
			wantErr: []string{`imagegen.yaml:1:12: unknown key "timeout" in pages (known: link_key, link_ttl)`},
		},
		{
			name:    "alias bomb",
			src:     "api_tokens: &a [0123456789abcdef0, 0123456789abcdef1, 0123456789abcdef2, 0123456789abcdef3, 0123456789abcdef4, 0123456789abcdef5, 0123456789abcdef6, 0123456789abcdef7, 0123456789abcdef8, 0123456789abcdef9]\nbuild: {x: [" + strings.Repeat("*a, ", 2000) + "]}\n",
			wantErr: []string{"aliases expand to more than 10000 values"},
		},
		{
			name:    "alias in itself",
			src:     "github: &g {api_url: *g}\n",
			wantErr: []string{"imagegen.yaml:1:22: alias *g is used inside the value of its own anchor"},
		},
		{
			name:    "empty",
			src:     "# nothing\n",
			wantErr: []string{"imagegen.yaml: the config is empty"},
		},
		{
			name:    "not a mapping",
			src:     "- listen\n",
			wantErr: []string{"imagegen.yaml:1:1: the config must be a mapping"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.src), "imagegen.yaml", testRegistry(), lookupFrom(tt.env))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want %q", tt.wantErr)
				}
				msg, at := err.Error(), 0
				if tt.exact && msg != strings.Join(tt.wantErr, "\n") {
					t.Errorf("error:\n%s\nwant:\n%s", msg, strings.Join(tt.wantErr, "\n"))
				}
				for _, w := range tt.wantErr {
					i := strings.Index(msg[at:], w)
					if i < 0 {
						t.Fatalf("error:\n%s\nwant, in order, each of:\n%s", msg, strings.Join(tt.wantErr, "\n"))
					}
					at += i + len(w)
				}
				if n := strings.Count(msg, "\n") + 1 - strings.Count(strings.Join(tt.wantErr, ""), "\n"); n != len(tt.wantErr) {
					t.Errorf("error has %d lines, want %d:\n%s", n, len(tt.wantErr), msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// TestSecretsStayHidden checks that printing or marshaling a loaded config
// shows none of its secrets.
func TestSecretsStayHidden(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "app.pem")
	if err := os.WriteFile(keyFile, []byte("PRIVATE-KEY-MATERIAL-4242"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HOOK":  "hook-secret-4242",
		"TOKEN": "api-token-4242-0123456789",
		"KEY":   "encryption-key-4242",
	}
	src := `github:
  app_id: 1
  private_key_file: ` + keyFile + `
  webhook_secret: ${HOOK}
api_tokens: ["${TOKEN}"]
encryption_key: ${KEY}
clouds:
  hotel: {type: tiny, region: r, password: ask}
`
	c, err := Parse([]byte(src), "imagegen.yaml", testRegistry(), lookupFrom(env))
	if err != nil {
		t.Fatal(err)
	}
	// Sanity: the secrets were loaded, so their absence below means something.
	if c.GitHub.WebhookSecret.Reveal() != env["HOOK"] || c.APITokens[0].Token.Reveal() != env["TOKEN"] || c.EncryptionKey.Reveal() != env["KEY"] || c.GitHub.PrivateKey.Reveal() != "PRIVATE-KEY-MATERIAL-4242" {
		t.Fatalf("secrets not loaded: %+v", c)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", c),
		"%+v":  fmt.Sprintf("%+v", c),
		"%#v":  fmt.Sprintf("%#v", c),
		"*%+v": fmt.Sprintf("%+v", *c),
		"json": string(js),
	}
	for name, out := range outputs {
		// The secrets themselves, not "4242": %v prints pointers, whose hex may hold it.
		for _, sec := range []string{env["HOOK"], env["TOKEN"], env["KEY"], "PRIVATE-KEY-MATERIAL-4242"} {
			if strings.Contains(out, sec) {
				t.Errorf("%s shows a secret: %s", name, out)
			}
		}
		if name != "%v" && name != "%#v" && !strings.Contains(out, secret.Redacted) {
			t.Errorf("%s does not show %s where the secrets are: %s", name, secret.Redacted, out)
		}
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "imagegen.yaml")
	if err := os.WriteFile(p, []byte("listen: ${IMAGEGEN_TEST_LISTEN_4242:-:9999}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, testRegistry())
	if err != nil || c.Listen != ":9999" || c.File != p {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if _, err := Load(p+".missing", testRegistry()); err == nil || !strings.Contains(err.Error(), "read config:") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestCheckService(t *testing.T) {
	tests := []struct {
		src  string
		want string
	}{
		{"github: {token: ghp_x, webhook_secret: s}\n", ""},
		{"github: {token: ghp_x}\n", "github.webhook_secret is empty"},
		{"github: {webhook_secret: s}\n", ""}, // anonymous: a warning, not an error
	}
	for _, tt := range tests {
		c, err := Parse([]byte(tt.src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckService()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("CheckService(%q) = %v, want %q", tt.src, err, tt.want)
		}
	}
}

func TestRedisSentinelAndCluster(t *testing.T) {
	tests := []struct {
		name  string
		src   string
		want  string // error substring; "" = loads
		check func(t *testing.T, c *Config)
	}{
		{name: "sentinel", src: "redis_sentinel: {master_name: mymaster, addrs: ['10.0.0.1:26379', 's2:26379'], db: 2, password: '${RP}', sentinel_password: '${SP}'}\n",
			check: func(t *testing.T, c *Config) {
				r := c.RedisSentinel
				if c.Redis != "" || r.MasterName != "mymaster" || len(r.Addrs) != 2 || r.DB != 2 || r.Password.Reveal() != "redis-pw-123" || r.SentinelPassword.Reveal() != "sentinel-pw-456" {
					t.Errorf("got redis %q, sentinel %+v", c.Redis, r)
				}
				if a := c.RedisAddr(); a != "sentinel mymaster via 10.0.0.1:26379,s2:26379" || strings.Contains(a, "pw") {
					t.Errorf("RedisAddr() = %q", a)
				}
			}},
		{name: "cluster", src: "redis_cluster: {addrs: ['n1:6379'], tls: true}\n",
			check: func(t *testing.T, c *Config) {
				if c.Redis != "" || !c.RedisCluster.TLS || c.RedisCluster.Addrs[0] != "n1:6379" {
					t.Errorf("got redis %q, cluster %+v", c.Redis, c.RedisCluster)
				}
			}},
		{name: "url password redacted", src: "redis: redis://:${RP}@127.0.0.1:6379/0\n",
			check: func(t *testing.T, c *Config) {
				if a := c.RedisAddr(); strings.Contains(a, "redis-pw-123") || !strings.Contains(a, "127.0.0.1:6379") {
					t.Errorf("RedisAddr() = %q", a)
				}
			}},
		{name: "two at once", src: "redis: redis://x:1/0\nredis_cluster: {addrs: ['n1:6379']}\n", want: "set one of redis, redis_sentinel and redis_cluster"},
		{name: "sentinel without master", src: "redis_sentinel: {addrs: ['s:26379']}\n", want: "redis_sentinel.master_name: is missing"},
		{name: "sentinel without addrs", src: "redis_sentinel: {master_name: m}\n", want: "redis_sentinel.addrs: is empty"},
		{name: "cluster bad addr", src: "redis_cluster: {addrs: ['n1']}\n", want: `redis_cluster.addrs: "n1" is not host:port`},
		{name: "unknown sentinel key", src: "redis_sentinel: {master: m, addrs: ['s:1']}\n", want: `1:18: unknown key "master" in redis_sentinel`},
		{name: "durability ack by default", src: "redis: redis://x:1/0\n",
			check: func(t *testing.T, c *Config) {
				if c.RedisDurability != DurabilityAck {
					t.Errorf("redis_durability = %q, want ack", c.RedisDurability)
				}
			}},
		{name: "durability replica", src: "redis_sentinel: {master_name: m, addrs: ['s:1']}\nredis_durability: replica\n",
			check: func(t *testing.T, c *Config) {
				if c.RedisDurability != DurabilityReplica {
					t.Errorf("redis_durability = %q, want replica", c.RedisDurability)
				}
			}},
		{name: "durability fsync", src: "redis_durability: fsync\n",
			check: func(t *testing.T, c *Config) {
				if c.RedisDurability != DurabilityFsync {
					t.Errorf("redis_durability = %q, want fsync", c.RedisDurability)
				}
			}},
		{name: "durability unknown", src: "redis_durability: always\n", want: `redis_durability: "always" is not ack, fsync or replica`},
	}
	env := lookupFrom(map[string]string{"RP": "redis-pw-123", "SP": "sentinel-pw-456"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.src), "imagegen.yaml", testRegistry(), env)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
			// A password inside the redis URL is the operator's choice of a
			// plain string; the structured settings keep theirs secret.
			if out := fmt.Sprintf("%+v %+v", c.RedisSentinel, c.RedisCluster); strings.Contains(out, "redis-pw-123") || strings.Contains(out, "sentinel-pw-456") {
				t.Errorf("a Redis password is printed: %s", out)
			}
		})
	}
}
