package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/strictyaml"
)

// problems collects what is wrong with a config, so that one run of the
// loader reports all of it, in the order of the sections below.
type problems struct {
	file string
	errs []error
}

// bad reports a problem with key (a dotted path: "github.api_url").
func (p *problems) bad(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s: %s", p.file, key, fmt.Sprintf(format, args...)))
}

// finish fills in the defaults of a decoded config and checks it, section by
// section.
func (c *Config) finish(reg *clouds.Registry) error {
	p := &problems{file: c.File}
	c.finishHTTP(p)
	c.finishProvenance(p)
	c.finishRedis(p)
	c.GitHub.finish(p)
	c.Build.fillDefaults()
	c.Webhook.finish(p)
	if c.Pages.LinkTTL == 0 && c.Build.Retention > 0 {
		c.Pages.LinkTTL = c.Build.Retention
	}
	c.checkLimits(p)
	c.finishAccess(p) // reads token files: before checkSecrets
	c.checkSecrets(p)
	c.finishAllow(p)
	c.loadClouds(reg, p)
	return errors.Join(p.errs...)
}

// finishHTTP: listen, and base_url (derived from listen when unset).
func (c *Config) finishHTTP(p *problems) {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.BaseURL == "" {
		host := c.Listen
		if strings.HasPrefix(host, ":") {
			host = "localhost" + host
		}
		c.BaseURL = "http://" + host
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
	if !isHTTPURL(c.BaseURL) {
		p.bad("base_url", "%q is not an http(s) URL", c.BaseURL)
	}
}

// finishProvenance: the builder id (base_url by default), an absolute URI.
// The key file is read by serve and worker at start (provenance.LoadSigner),
// which say what is wrong with it; here it must only exist.
func (c *Config) finishProvenance(p *problems) {
	pv := &c.Provenance
	if pv.BuilderID == "" {
		pv.BuilderID = c.BaseURL
	}
	if u, err := url.Parse(pv.BuilderID); err != nil || !u.IsAbs() || u.Host == "" {
		p.bad("provenance.builder_id", "%q is not an absolute URI (e.g. https://imagegen.example.org)", pv.BuilderID)
	}
	if pv.SigningKeyFile != "" {
		if _, err := os.Stat(pv.SigningKeyFile); err != nil {
			p.bad("provenance.signing_key_file", "%v", err)
		}
	}
}

// finishRedis: one of redis, redis_sentinel and redis_cluster; redis by
// default; redis_durability ack by default.
func (c *Config) finishRedis(p *problems) {
	switch c.RedisDurability {
	case "":
		c.RedisDurability = DurabilityAck
	case DurabilityAck, DurabilityFsync, DurabilityReplica:
	default:
		p.bad("redis_durability", "%q is not ack, fsync or replica", c.RedisDurability)
	}
	switch {
	case c.RedisSentinel != nil && (c.RedisCluster != nil || c.Redis != ""),
		c.RedisCluster != nil && c.Redis != "":
		p.bad("redis", "set one of redis, redis_sentinel and redis_cluster")
	case c.RedisSentinel != nil:
		if c.RedisSentinel.MasterName == "" {
			p.bad("redis_sentinel.master_name", "is missing: the name Sentinel knows the master by")
		}
		p.checkAddrs("redis_sentinel.addrs", c.RedisSentinel.Addrs)
	case c.RedisCluster != nil:
		p.checkAddrs("redis_cluster.addrs", c.RedisCluster.Addrs)
	default:
		if c.Redis == "" {
			c.Redis = DefaultRedis
		}
		if u, err := url.Parse(c.Redis); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "redis-socket") {
			p.bad("redis", "%q is not a redis:// URL (e.g. %s)", RedactURL(c.Redis), DefaultRedis)
		}
	}
}

func (p *problems) checkAddrs(key string, addrs []string) {
	if len(addrs) == 0 {
		p.bad(key, "is empty: list at least one host:port")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			p.bad(key, "%q is not host:port", a)
		}
	}
}

// finish: the API URL, the secrets kept in files, and one way to authenticate.
func (g *GitHub) finish(p *problems) {
	if g.APIURL == "" {
		g.APIURL = DefaultAPIURL
	}
	if !strings.HasSuffix(g.APIURL, "/") {
		g.APIURL += "/"
	}
	if !isHTTPURL(g.APIURL) {
		p.bad("github.api_url", "%q is not an http(s) URL", g.APIURL)
	}
	p.readSecretFile("github.webhook_secret_file", g.WebhookSecretFile, &g.WebhookSecret)
	p.readSecretFile("github.token_file", g.TokenFile, &g.Token)
	if g.PrivateKeyFile != "" {
		b, err := os.ReadFile(g.PrivateKeyFile)
		if err != nil {
			p.bad("github.private_key_file", "%v", err)
		} else {
			g.PrivateKey = secret.New(string(b))
		}
	}
	if g.AppID != 0 && g.PrivateKeyFile == "" {
		p.bad("github.private_key_file", "app_id is set, so the App's private key file is needed")
	}
	if g.AppID == 0 && g.PrivateKeyFile != "" {
		p.bad("github.app_id", "private_key_file is set, so the App's id is needed")
	}
	if g.AppID != 0 && !g.Token.IsZero() {
		p.bad("github", "set either app_id (a GitHub App) or token, not both")
	}
}

// readSecretFile reads the secret at path (the value of key, a *_file key)
// into dst, trimmed, unless the secret is also given inline.
func (p *problems) readSecretFile(key, path string, dst *secret.String) {
	if path == "" {
		return
	}
	if !dst.IsZero() {
		inline := strings.TrimSuffix(key, "_file")
		p.bad(key, "set both %s and %s_file: keep one", inline, inline)
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		p.bad(key, "%v", err)
		return
	}
	*dst = secret.New(strings.TrimSpace(string(b)))
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https")
}

// finish gives the webhook's bounds their defaults and checks them.
func (w *Webhook) finish(p *problems) {
	if w.MaxConcurrentBytes == 0 {
		w.MaxConcurrentBytes = DefaultWebhookBytes
	}
	if w.MaxConcurrentReads == 0 {
		w.MaxConcurrentReads = DefaultWebhookConcurrency
	}
	if w.MaxConcurrentBytes < MaxWebhookBody {
		p.bad("webhook.max_concurrent_bytes", "must be at least %d (25 MiB, GitHub's largest delivery), got %d", MaxWebhookBody, w.MaxConcurrentBytes)
	}
	if w.MaxConcurrentReads < 0 {
		p.bad("webhook.max_concurrent_reads", "must be positive, got %d", w.MaxConcurrentReads)
	}
}

// fillDefaults gives unset build limits their defaults.
func (b *Build) fillDefaults() {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&b.SSHTimeout, 15 * time.Minute},
		{&b.Timeout, 2 * time.Hour},
		{&b.CleanupTimeout, 10 * time.Minute},
		{&b.Retention, 90 * 24 * time.Hour},
		{&b.SweepInterval, 5 * time.Minute},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if b.Concurrency == 0 {
		b.Concurrency = 10
	}
	if b.LogLimit == 0 {
		b.LogLimit = 4 << 20
	}
	if b.MaxGeneratorsPerPush == 0 {
		b.MaxGeneratorsPerPush = DefaultMaxGeneratorsPerPush
	}
}

// DefaultMaxGeneratorsPerPush is build.max_generators_per_push's default.
const DefaultMaxGeneratorsPerPush = 100

// checkLimits refuses negative durations and counts.
func (c *Config) checkLimits(p *problems) {
	b := &c.Build
	// A slice, not a map: errors come out in the same order every time.
	for _, kd := range []struct {
		key string
		d   time.Duration
	}{{"build.ssh_timeout", b.SSHTimeout}, {"build.timeout", b.Timeout}, {"build.cleanup_timeout", b.CleanupTimeout}, {"build.retention", b.Retention}, {"build.sweep_interval", b.SweepInterval}, {"build.shutdown_grace", b.ShutdownGrace}, {"pages.link_ttl", c.Pages.LinkTTL}} {
		if kd.d < 0 {
			p.bad(kd.key, "must be positive, got %s", kd.d)
		}
	}
	if b.Concurrency < 0 {
		p.bad("build.concurrency", "must be positive, got %d", b.Concurrency)
	}
	if b.LogLimit < 0 {
		p.bad("build.log_limit", "must be positive, got %d", b.LogLimit)
	}
	if b.MaxGeneratorsPerPush < 0 {
		p.bad("build.max_generators_per_push", "must be positive, got %d", b.MaxGeneratorsPerPush)
	}
}

var validCloudName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// loadClouds hands each entry of clouds to its driver.
func (c *Config) loadClouds(reg *clouds.Registry, p *problems) {
	c.Clouds = map[string]*clouds.Entry{}
	c.cloudAllow = map[string]*Allow{}
	n := &c.CloudsNode
	if n.Kind != 0 && n.Kind != yaml.MappingNode {
		p.bad("clouds", "must be a mapping of cloud name to its settings")
		return
	}
	for _, f := range strictyaml.Pairs(n) {
		e, err := c.cloud(reg, f.Key, f.Value)
		if err != nil {
			p.errs = append(p.errs, err)
			continue
		}
		c.Clouds[f.Key.Value] = e
	}
}

// cloud checks one entry of clouds (k its name, body its settings): the keys
// every cloud has (type, password, allow), then its driver's.
func (c *Config) cloud(reg *clouds.Registry, k, body *yaml.Node) (*clouds.Entry, error) {
	e, allow, err := c.cloudEntry(reg, k, body)
	if err == nil && allow != nil {
		c.cloudAllow[k.Value] = allow
	}
	return e, err
}

// cloudEntry is cloud's work: the entry, its own allow rule (nil: none), and
// what is wrong with either.
func (c *Config) cloudEntry(reg *clouds.Registry, k, body *yaml.Node) (*clouds.Entry, *Allow, error) {
	name := k.Value
	at := fmt.Sprintf("%s:%d:%d", c.File, k.Line, k.Column)
	if !validCloudName.MatchString(name) {
		return nil, nil, fmt.Errorf("%s: clouds.%s: a cloud name is letters, digits, '-' and '_', starting with a letter", at, name)
	}
	if body.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s: clouds.%s: must be a mapping with at least a type", at, name)
	}
	cc := clouds.Config{Name: name, Node: body, File: c.File}
	var allow *Allow
	var allowErr error
	for _, f := range strictyaml.Pairs(body) {
		switch f.Key.Value {
		case "type":
			cc.Type = f.Value.Value
		case "password":
			cc.Password = f.Value.Value
		case "allow":
			allow, allowErr = c.cloudAllowOf(name, f.Value)
		}
	}
	if cc.Type == "" {
		return nil, nil, errors.Join(allowErr, fmt.Errorf("%s: clouds.%s.type is missing (one of: %s)", at, name, strings.Join(reg.Types(), ", ")))
	}
	if cc.Password != "" && cc.Password != clouds.PasswordAsk {
		return nil, nil, errors.Join(allowErr, fmt.Errorf("%s: clouds.%s.password: the only value is %q (each build brings the password); put stored credentials where the driver reads them (clouds.yaml, the AWS credential chain)", at, name, clouds.PasswordAsk))
	}
	e, err := reg.Configure(cc)
	if err != nil {
		// A driver error that names its own position (clouds.DecodeStrict's
		// unknown keys) goes out as is: the file:line:col an editor jumps
		// to is then the key at fault, not the cloud's name.
		if inner := errors.Unwrap(err); inner != nil && positioned(c.File, inner) {
			return nil, nil, errors.Join(allowErr, inner)
		}
		return nil, nil, errors.Join(allowErr, fmt.Errorf("%s: clouds.%s: %w", at, name, err))
	}
	if allowErr != nil {
		return nil, nil, allowErr
	}
	return e, allow, nil
}

// positioned reports whether err's message starts with file:line:col.
func positioned(file string, err error) bool {
	rest, ok := strings.CutPrefix(err.Error(), file+":")
	if !ok {
		return false
	}
	line, rest, ok := strings.Cut(rest, ":")
	if !ok || line == "" || strings.Trim(line, "0123456789") != "" {
		return false
	}
	col, _, ok := strings.Cut(rest, ":")
	return ok && col != "" && strings.Trim(col, "0123456789") == ""
}
