package pages

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/server/access"
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

// viewer is who a request is, for the pages: a signed-in API token, a
// signed link that covers the page, or neither (anonymous, which
// read_access: public lets read).
type viewer struct {
	token *access.Token // an API token (bearer or session cookie); nil: none
	link  bool          // a signed link (or its cookie) covering the page: read-only, below the link's path
}

// authorize finds out who the request is, for path: its token (bearer or
// session) and whether a signed link covers path; both may hold, as when
// someone signed in follows a link from GitHub. A bad ?t= is reported as
// such (err), so the page can say the link expired rather than "sign in";
// a bad bearer token is access.ErrInvalid, and a client over the failure
// limit gets *access.LimitedError.
func (p *Pages) authorize(c echo.Context, path string, now time.Time) (viewer, error) {
	r := c.Request()
	var v viewer
	if got, ok := bearer(r); ok {
		t, err := p.access.Authenticate(c.RealIP(), got, "pages "+r.Method+" "+c.Path())
		if err != nil {
			return viewer{}, err
		}
		v.token = t
	} else {
		v.token = p.session(r, now)
	}
	var linkErr error
	if t := r.URL.Query().Get("t"); t != "" {
		if linkErr = p.signer.Verify(path, t, now); linkErr == nil {
			v.link = true
			return v, nil
		}
	}
	for _, c := range r.Cookies() {
		if c.Name != linkCookie {
			continue
		}
		scope, token, ok := parseLinkCookie(c.Value)
		if ok && within(path, scope) && p.signer.Verify(scope, token, now) == nil {
			v.link = true
			return v, nil
		}
	}
	if v.token != nil {
		linkErr = nil // signed in: a stale link is no reason to refuse
	}
	return v, linkErr
}

// bearer is the request's Authorization: Bearer token, if any.
func bearer(r *http.Request) (string, bool) {
	scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	got = strings.TrimSpace(got)
	return got, strings.EqualFold(scheme, "Bearer") && got != ""
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

// sessionPath is what a session's MAC signs: the session scope and the
// token's fingerprint, so a session opens only while its token is
// configured (removing or changing the token revokes its sessions) and
// carries that token's scopes and repositories. The cookie itself holds
// neither the token nor its fingerprint.
func sessionPath(t *access.Token) string {
	return sessionScope + "\x00" + hex.EncodeToString(t.Fingerprint())
}

// setSession signs the browser in as token t: the cookie holds a signed
// expiry (12 h), tied to t.
func (p *Pages) setSession(w http.ResponseWriter, t *access.Token, now time.Time) {
	e := now.Add(sessionTTL).Unix()
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: strconv.FormatInt(e, 10) + "." + mac(p.signer.sessionKey, sessionPath(t), e), Path: "/",
		Expires: time.Unix(e, 0), HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode,
	})
}

// session is the token the request's session cookie was made for, if the
// cookie is valid, unexpired and that token is still configured.
func (p *Pages) session(r *http.Request, now time.Time) *access.Token {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	var found *access.Token
	for _, t := range p.access.Tokens() { // a few HMACs: tokens are few
		if verify(p.signer.sessionKey, sessionPath(t), c.Value, now) == nil {
			found = t
		}
	}
	return found
}
