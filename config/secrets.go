package config

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/imagegen/imagegen/internal/secret"
)

// namedSecret is a secret of the config with the key it came from.
type namedSecret struct {
	key string
	s   secret.String
}

// namedSecrets lists every secret the config holds, with its key.
func (c *Config) namedSecrets() []namedSecret {
	out := []namedSecret{
		{"encryption_key", c.EncryptionKey},
		{"github.webhook_secret", c.GitHub.WebhookSecret},
		{"github.token", c.GitHub.Token},
		{"github.private_key_file", c.GitHub.PrivateKey},
		{"pages.link_key", c.Pages.LinkKey},
	}
	for i, t := range c.APITokens {
		out = append(out, namedSecret{fmt.Sprintf("api_tokens[%d]", i), t.Token})
	}
	if u, err := url.Parse(c.Redis); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			out = append(out, namedSecret{"redis", secret.New(pw)})
		}
	}
	if r := c.RedisSentinel; r != nil {
		out = append(out, namedSecret{"redis_sentinel.password", r.Password}, namedSecret{"redis_sentinel.sentinel_password", r.SentinelPassword})
	}
	if r := c.RedisCluster; r != nil {
		out = append(out, namedSecret{"redis_cluster.password", r.Password})
	}
	return out
}

// Secrets returns every secret of the config (tokens, keys, passwords; a
// private key also line by line), for the redaction of build logs: a script
// that prints one of them leaves "[redacted]" in the stored log. Empty
// values are left out.
func (c *Config) Secrets() []secret.String {
	var out []secret.String
	for _, n := range c.namedSecrets() {
		v := n.s.Reveal()
		if v == "" {
			continue
		}
		out = append(out, n.s)
		if !strings.Contains(v, "\n") {
			continue
		}
		// A PEM key: each line of its body too, so a script printing part
		// of the key does not reveal that part.
		for _, line := range strings.Split(v, "\n") {
			line = strings.TrimSpace(line)
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				out = append(out, secret.New(line))
			}
		}
	}
	return out
}

// checkSecrets refuses secrets too long to be redacted as a log streams.
// The App's private key is exempt: a large RSA key is longer, and is also
// redacted line by line.
func (c *Config) checkSecrets(p *problems) {
	for _, n := range c.namedSecrets() {
		if n.key == "github.private_key_file" {
			continue
		}
		if err := secret.Validate(n.s); err != nil {
			p.bad(n.key, "%v", err)
		}
	}
}
