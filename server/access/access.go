// Package access decides who may do what over HTTP: API tokens with their
// scopes and repositories, read_access, and the per-address limit on failed
// authentication. The API (server) and the build pages (server/pages) share one Policy.
package access

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/config"
)

// Token is a configured API token, as the server knows it: its scopes and
// repositories, and a digest of its value (the value itself is not kept).
type Token struct {
	// Name is "api_tokens[N]", for logs: never the token.
	Name   string
	cfg    config.APIToken
	digest [sha256.Size]byte
}

// Has reports whether the token has scope (config.ScopeRead, ScopeRerun,
// ScopeAdmin); admin has every scope and rerun includes read.
func (t *Token) Has(scope string) bool { return t.cfg.Has(scope) }

// Sees reports whether the token may see repo (OWNER/NAME).
func (t *Token) Sees(repo string) bool { return t.cfg.SeesRepo(repo) }

// AllRepos reports whether the token sees every repository.
func (t *Token) AllRepos() bool { return len(t.cfg.Repos) == 0 }

// Fingerprint is a digest of the token's value: an input to MACs that tie
// something (a page session) to the token, so that removing or changing
// the token in the config revokes it. Never show it.
func (t *Token) Fingerprint() []byte { return t.digest[:] }

// Policy is who may read and do what, and the limit on failed authentication.
type Policy struct {
	tokens     []*Token
	public     bool
	publicLogs bool
	limiter    *Limiter
	log        *slog.Logger
}

// Limits on failed authentication, per client address (an IPv6 client's /64).
const (
	FailBurst   = 10              // failures allowed at once
	FailRefill  = 6 * time.Second // one more allowed every FailRefill (10 a minute)
	FailClients = 10000           // addresses remembered (least recently seen forgotten first)
)

// New builds the policy of cfg; log receives failed authentications
// (address and place, never the token). log may be nil.
func New(cfg *config.Config, log *slog.Logger) *Policy {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Policy{
		public:     cfg.ReadAccess == config.ReadPublic,
		publicLogs: cfg.ReadAccess == config.ReadPublic && cfg.PublicLogs,
		limiter:    NewLimiter(FailRefill, FailBurst, FailClients),
		log:        log,
	}
	for i, t := range cfg.APITokens {
		p.tokens = append(p.tokens, &Token{Name: fmt.Sprintf("api_tokens[%d]", i), cfg: t, digest: sha256.Sum256([]byte(t.Token.Reveal()))})
	}
	return p
}

// HasTokens reports whether any API token is configured.
func (p *Policy) HasTokens() bool { return len(p.tokens) > 0 }

// Tokens are the configured tokens.
func (p *Policy) Tokens() []*Token { return p.tokens }

// Public reports whether builds and lineage are readable without a token.
func (p *Policy) Public() bool { return p.public }

// PublicLogs reports whether build logs are readable without a token.
func (p *Policy) PublicLogs() bool { return p.publicLogs }

// MayRead reports whether t (nil: no token) may read the builds and
// lineage of repo.
func (p *Policy) MayRead(t *Token, repo string) bool {
	return p.public || (t != nil && t.Has(config.ScopeRead) && t.Sees(repo))
}

// MayReadLogs reports whether t (nil: no token) may read repo's build logs.
func (p *Policy) MayReadLogs(t *Token, repo string) bool {
	return p.publicLogs || (t != nil && t.Has(config.ScopeRead) && t.Sees(repo))
}

// Filter is the repositories t may list: nil when it may list every one.
func (p *Policy) Filter(t *Token) func(repo string) bool {
	if p.public || t == nil || t.AllRepos() {
		return nil
	}
	return t.Sees
}

// ErrInvalid is a token that is not configured.
var ErrInvalid = errors.New("invalid token")

// LimitedError refuses an authentication because its client failed too often.
type LimitedError struct {
	RetryAfter time.Duration
}

func (e *LimitedError) Error() string {
	return fmt.Sprintf("too many failed authentications from this address: retry in %d s", e.Seconds())
}

// Seconds is RetryAfter in whole seconds, rounded up, for Retry-After.
func (e *LimitedError) Seconds() int { return int(math.Ceil(e.RetryAfter.Seconds())) }

// Authenticate finds the configured token presented by client (an IP
// address, as echo's RealIP gives it) at where (for the log: "api",
// "login", ...). A client that failed more than FailBurst times recently is
// refused (*LimitedError) before its token is looked at; a token that is
// not configured is ErrInvalid, counted and logged with the address.
func (p *Policy) Authenticate(client, presented, where string) (*Token, error) {
	key := clientKey(client)
	r, wait := p.limiter.reserve(key, time.Now())
	if wait > 0 {
		return nil, &LimitedError{RetryAfter: wait}
	}
	if t := p.lookup(presented); t != nil {
		r.refund()
		return t, nil
	}
	p.log.Warn("authentication failed", "client", client, "where", where, "reason", "not a configured API token")
	return nil, ErrInvalid
}

// lookup compares the digest of presented with every token's, in constant
// time and without stopping at a match, so neither the token's length nor
// its place in the list shows in the time taken.
func (p *Policy) lookup(presented string) *Token {
	if presented == "" {
		return nil
	}
	d := sha256.Sum256([]byte(presented))
	var found *Token
	for _, t := range p.tokens {
		if subtle.ConstantTimeCompare(d[:], t.digest[:]) == 1 {
			found = t
		}
	}
	return found
}

// clientKey is the limiter's key for an address: the address, or for IPv6
// its /64, which one client usually holds whole.
func clientKey(client string) string {
	ip := net.ParseIP(client)
	if ip == nil || ip.To4() != nil {
		return client
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// IPExtractor is how the server finds a request's client address: the
// connection's peer, or with trusted_proxies, the last address in
// X-Forwarded-For that is not one of them (when the peer is one).
// Without trusted_proxies, X-Forwarded-For and X-Real-IP are ignored:
// anyone can write them.
func IPExtractor(cfg *config.Config) echo.IPExtractor {
	if len(cfg.TrustedProxies) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, s := range cfg.TrustedProxies {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			ip := net.ParseIP(s) // the config checked it is one or the other
			bits := 8 * len(ip.To16())
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			n = &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}
		}
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
