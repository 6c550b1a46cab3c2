package pages

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// Errors of Signer.Verify.
var (
	ErrNoToken  = errors.New("no link token")
	ErrBadToken = errors.New("the link token is not valid for this page")
	ErrExpired  = errors.New("the link has expired")
	ErrNoKey    = errors.New("links are not signed on this server (set pages.link_key or encryption_key)")
)

// Signer makes and checks the expiring links placed on GitHub
// (?t=<expiry>.<mac>, an HMAC-SHA256 over the path and expiry) and the
// session cookies of people who signed in with an API token.
type Signer struct {
	linkKey    []byte // nil: links are unsigned
	sessionKey []byte
}

// NewSigner derives its keys from pages.link_key, else from encryption_key.
// Every serve and worker with the same config derives the same key, so a
// link a worker puts on GitHub opens on any server.
func NewSigner(cfg *config.Config) *Signer {
	var base secret.String
	switch {
	case !cfg.Pages.LinkKey.IsZero():
		base = cfg.Pages.LinkKey
	case !cfg.EncryptionKey.IsZero():
		base = cfg.EncryptionKey
	}
	s := &Signer{}
	if !base.IsZero() {
		// Derived, never the key itself: the encryption key also seals passwords.
		s.linkKey = derive([]byte(base.Reveal()), "imagegen pages link v1")
		s.sessionKey = derive([]byte(base.Reveal()), "imagegen pages session v1")
	} else {
		// Sessions still work, for this process's lifetime.
		s.sessionKey = make([]byte, 32)
		_, _ = rand.Read(s.sessionKey)
	}
	return s
}

func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// Enabled reports whether links are signed.
func (s *Signer) Enabled() bool { return s.linkKey != nil }

func mac(key []byte, path string, expiry int64) string {
	m := hmac.New(sha256.New, key)
	// The NUL keeps "path + digits" from being read another way.
	fmt.Fprintf(m, "%s\x00%d", path, expiry)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Token returns the link token for path, valid until expiry.
func (s *Signer) Token(path string, expiry time.Time) string {
	e := expiry.Unix()
	return strconv.FormatInt(e, 10) + "." + mac(s.linkKey, path, e)
}

// SignedURL is baseURL+path with a token that opens the page, without a
// login, for ttl. With no key configured it is the plain URL.
func (s *Signer) SignedURL(baseURL, path string, ttl time.Duration) string {
	u := strings.TrimSuffix(baseURL, "/") + path
	if !s.Enabled() {
		return u
	}
	return u + "?t=" + s.Token(path, time.Now().Add(ttl))
}

// BuildLink is the signed link to a build's page, for commit statuses'
// target_url and check runs' details_url.
func BuildLink(cfg *config.Config, id string) string {
	return NewSigner(cfg).SignedURL(cfg.BaseURL, BuildPath(id), cfg.Pages.LinkTTL)
}

// BuildPath is the path of a build's page.
func BuildPath(id string) string { return "/builds/" + id }

// Verify checks a link token made for path.
func (s *Signer) Verify(path, token string, now time.Time) error {
	return verify(s.linkKey, path, token, now)
}

func verify(key []byte, path, token string, now time.Time) error {
	if token == "" {
		return ErrNoToken
	}
	if key == nil {
		return ErrNoKey
	}
	es, m, ok := strings.Cut(token, ".")
	if !ok {
		return ErrBadToken
	}
	e, err := strconv.ParseInt(es, 10, 64)
	if err != nil {
		return ErrBadToken
	}
	// The MAC first, so an attacker learns nothing from which check fails.
	if !hmac.Equal([]byte(m), []byte(mac(key, path, e))) {
		return ErrBadToken
	}
	if now.Unix() >= e {
		return ErrExpired
	}
	return nil
}

// within reports whether path is scope or below it, as a browser matches a
// cookie's Path.
func within(path, scope string) bool {
	return path == scope || strings.HasPrefix(path, strings.TrimSuffix(scope, "/")+"/")
}

// Cookies.
const (
	linkCookie    = "imagegen_link"
	sessionCookie = "imagegen_session"
	sessionTTL    = 12 * time.Hour
	sessionScope  = "session" // the "path" a session token signs
)

// linkCookieValue carries the page a link opened and its token, so pages
// below it (a build's logs and live tail) open too, until the link expires.
func linkCookieValue(path, token string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(path)) + "." + token
}

func parseLinkCookie(v string) (path, token string, ok bool) {
	p, token, ok := strings.Cut(v, ".")
	if !ok {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return "", "", false
	}
	return string(b), token, true
}

// access is how a request may see the pages.
type access int

const (
	accessNone  access = iota
	accessLink         // a signed link (or its cookie): read-only, below the link's path
	accessToken        // an API token (bearer or session cookie)
)

// authorize decides a request's access to path. A bad ?t= is reported as
// such (err), so the page can say the link expired rather than "sign in".
func (p *Pages) authorize(r *http.Request, path string, now time.Time) (access, error) {
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && got != "" {
		if p.validAPIToken(got) {
			return accessToken, nil
		}
		return accessNone, errors.New("invalid API token")
	}
	if c, err := r.Cookie(sessionCookie); err == nil && verify(p.signer.sessionKey, sessionScope, c.Value, now) == nil {
		return accessToken, nil
	}
	var linkErr error
	if t := r.URL.Query().Get("t"); t != "" {
		if linkErr = p.signer.Verify(path, t, now); linkErr == nil {
			return accessLink, nil
		}
	}
	for _, c := range r.Cookies() {
		if c.Name != linkCookie {
			continue
		}
		scope, token, ok := parseLinkCookie(c.Value)
		if ok && within(path, scope) && p.signer.Verify(scope, token, now) == nil {
			return accessLink, nil
		}
	}
	return accessNone, linkErr
}

// validAPIToken compares against every configured token in constant time.
func (p *Pages) validAPIToken(got string) bool {
	match := 0
	for _, t := range p.cfg.APITokens {
		match |= subtle.ConstantTimeCompare([]byte(got), []byte(t.Reveal()))
	}
	return match == 1
}

// setLinkCookie remembers a valid ?t= for the pages below its path.
func (p *Pages) setLinkCookie(w http.ResponseWriter, path, token string) {
	es, _, _ := strings.Cut(token, ".")
	e, _ := strconv.ParseInt(es, 10, 64)
	http.SetCookie(w, &http.Cookie{
		Name: linkCookie, Value: linkCookieValue(path, token), Path: path,
		Expires: time.Unix(e, 0), HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode,
	})
}

// setSession signs the browser in after it showed a valid API token. The
// cookie holds a signed expiry, never the token itself.
func (p *Pages) setSession(w http.ResponseWriter, now time.Time) {
	e := now.Add(sessionTTL).Unix()
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: strconv.FormatInt(e, 10) + "." + mac(p.signer.sessionKey, sessionScope, e), Path: "/",
		Expires: time.Unix(e, 0), HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode,
	})
}
