package config

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/internal/secret"
)

// Who may read (read_access).
const (
	ReadToken  = "token"  // reading needs an API token (or a signed link, on the pages)
	ReadPublic = "public" // anyone reads builds and lineage; logs need a token unless public_logs
)

// Scopes an API token may have.
const (
	ScopeRead  = "read"  // builds, logs, image lineage, the pages, /metrics
	ScopeRerun = "rerun" // re-run builds (and read)
	ScopeAdmin = "admin" // every scope, present and future
)

// Scopes are the known scopes, in the order messages list them.
var Scopes = []string{ScopeRead, ScopeRerun, ScopeAdmin}

// PlainTokenScopes are the scopes of a token given as a plain string
// (api_tokens: ["${TOK}"]): what such a token could do before tokens had
// scopes (re-run; reading was open to everyone), and every repository.
var PlainTokenScopes = []string{ScopeRead, ScopeRerun}

// APIToken is one entry of api_tokens: a plain string (the token, with
// PlainTokenScopes and every repository), or a mapping
// {token | token_file, scopes, repos}.
type APIToken struct {
	Token     secret.String `yaml:"token"`
	TokenFile string        `yaml:"token_file"`
	// Scopes are what the token may do: read, rerun, admin. Required in
	// the mapping form.
	Scopes []string `yaml:"scopes"`
	// Repos limits the token to the repositories matching one of these
	// OWNER/NAME patterns (path.Match, case-insensitive: "fg/*"); empty:
	// every repository.
	Repos []string `yaml:"repos"`
	// Plain is set when the entry was a plain string.
	Plain bool `yaml:"-"`
}

// UnmarshalYAML reads either form.
func (t *APIToken) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = APIToken{Token: secret.New(n.Value), Plain: true}
		return nil
	}
	type fields APIToken // without this method
	return n.Decode((*fields)(t))
}

// Has reports whether the token was given scope (admin has every scope;
// rerun includes read).
func (t *APIToken) Has(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope || s == ScopeAdmin || (s == ScopeRerun && scope == ScopeRead) {
			return true
		}
	}
	return false
}

// finishAccess checks read_access, public_logs, metrics_listen,
// trusted_proxies and api_tokens (reading the token files).
func (c *Config) finishAccess(p *problems) {
	switch c.ReadAccess {
	case "":
		c.ReadAccess = ReadToken
	case ReadToken, ReadPublic:
	default:
		p.bad("read_access", "%q is not one of: token, public", c.ReadAccess)
	}
	if c.PublicLogs && c.ReadAccess != ReadPublic {
		p.bad("public_logs", "is true but read_access is %s: build logs are public only with read_access: public", c.ReadAccess)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			p.bad("metrics_listen", "%q is not host:port or :port", c.MetricsListen)
		} else if c.MetricsListen == c.Listen {
			p.bad("metrics_listen", "is the same address as listen: /metrics gets its own listener")
		}
	}
	for i, s := range c.TrustedProxies {
		if _, _, err := net.ParseCIDR(s); err != nil && net.ParseIP(s) == nil {
			p.bad(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or CIDR (10.0.0.0/8)", s)
		}
	}
	seen := map[string]int{}
	for i := range c.APITokens {
		c.APITokens[i].finish(p, fmt.Sprintf("api_tokens[%d]", i))
		v := c.APITokens[i].Token.Reveal()
		if j, dup := seen[v]; dup && v != "" {
			p.bad(fmt.Sprintf("api_tokens[%d]", i), "is the same token as api_tokens[%d]: give each token once, with all its scopes and repos", j)
		}
		seen[v] = i
	}
}

// finish reads token_file, fills a plain token's scopes and checks the entry.
// Messages name the entry, never the token.
func (t *APIToken) finish(p *problems, key string) {
	if t.TokenFile != "" {
		p.readSecretFile(key+".token_file", t.TokenFile, &t.Token)
	} else if t.Token.IsZero() {
		p.bad(key, "has no token: set token (e.g. ${IMAGEGEN_API_TOKEN}) or token_file")
		return
	}
	if !t.Token.IsZero() && len(t.Token.Reveal()) < 16 {
		p.bad(key, "is shorter than 16 characters: use a long random token (openssl rand -hex 32)")
	}
	if t.Plain {
		t.Scopes = slices.Clone(PlainTokenScopes)
	}
	if len(t.Scopes) == 0 {
		p.bad(key+".scopes", "is missing: list what the token may do (%s)", strings.Join(Scopes, ", "))
	}
	for j, s := range t.Scopes {
		if !slices.Contains(Scopes, s) {
			p.bad(fmt.Sprintf("%s.scopes[%d]", key, j), "%q is not one of: %s", s, strings.Join(Scopes, ", "))
		}
	}
	p.checkRepoPatterns(key+".repos", t.Repos)
}

// SeesRepo reports whether the token may see repo (OWNER/NAME).
func (t *APIToken) SeesRepo(repo string) bool {
	return len(t.Repos) == 0 || MatchRepo(t.Repos, repo)
}
