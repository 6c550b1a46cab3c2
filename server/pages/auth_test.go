package pages_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/server/pages"
)

func TestSignerVerify(t *testing.T) {
	s := pages.NewSigner(&config.Config{Pages: config.Pages{LinkKey: secret.New(linkKey)}})
	other := pages.NewSigner(&config.Config{Pages: config.Pages{LinkKey: secret.New("another-key-0123456789")}})
	now := time.Unix(1_800_000_000, 0)
	good := s.Token("/builds/abc", now.Add(time.Hour))
	exp, mac, _ := strings.Cut(good, ".")
	flip := func(s string) string { // change one character of the MAC
		b := []byte(s)
		if b[3] == 'A' {
			b[3] = 'B'
		} else {
			b[3] = 'A'
		}
		return string(b)
	}
	later, _ := strconv.ParseInt(exp, 10, 64)
	cases := []struct {
		name, path, token string
		want              error
	}{
		{"valid", "/builds/abc", good, nil},
		{"missing", "/builds/abc", "", pages.ErrNoToken},
		{"expired", "/builds/abc", s.Token("/builds/abc", now.Add(-time.Second)), pages.ErrExpired},
		{"expires now", "/builds/abc", s.Token("/builds/abc", now), pages.ErrExpired},
		{"tampered mac", "/builds/abc", exp + "." + flip(mac), pages.ErrBadToken},
		{"tampered expiry", "/builds/abc", strconv.FormatInt(later+3600, 10) + "." + mac, pages.ErrBadToken},
		{"wrong path", "/builds/abd", good, pages.ErrBadToken},
		{"sub-path of a link's path", "/builds/abc/log/sim-a", good, pages.ErrBadToken},
		{"other key", "/builds/abc", other.Token("/builds/abc", now.Add(time.Hour)), pages.ErrBadToken},
		{"no dot", "/builds/abc", exp + mac, pages.ErrBadToken},
		{"not a number", "/builds/abc", "soon." + mac, pages.ErrBadToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := s.Verify(c.path, c.token, now); !errors.Is(err, c.want) {
				t.Errorf("Verify(%q, %q) = %v, want %v", c.path, c.token, err, c.want)
			}
		})
	}
}

func TestSignerKeys(t *testing.T) {
	enc := secret.New(strings.Repeat("ab", 32))
	cases := []struct {
		name    string
		cfg     config.Config
		signed  bool
		sameAs  *config.Config // a config that must derive the same key
		differs *config.Config // one that must not
	}{
		{name: "link_key", cfg: config.Config{Pages: config.Pages{LinkKey: secret.New(linkKey)}}, signed: true,
			sameAs:  &config.Config{Pages: config.Pages{LinkKey: secret.New(linkKey)}, EncryptionKey: enc},
			differs: &config.Config{Pages: config.Pages{LinkKey: secret.New(linkKey + "2")}}},
		{name: "from encryption_key", cfg: config.Config{EncryptionKey: enc}, signed: true,
			sameAs: &config.Config{EncryptionKey: enc}, differs: &config.Config{EncryptionKey: secret.New(strings.Repeat("cd", 32))}},
		{name: "no key: unsigned", cfg: config.Config{}},
	}
	exp := time.Now().Add(time.Hour)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := pages.NewSigner(&c.cfg)
			if s.Enabled() != c.signed {
				t.Fatalf("Enabled = %v, want %v", s.Enabled(), c.signed)
			}
			u := s.SignedURL("https://ig.example.org/", "/builds/x", time.Hour)
			if !c.signed {
				if u != "https://ig.example.org/builds/x" {
					t.Errorf("unsigned URL = %q", u)
				}
				if err := s.Verify("/builds/x", "1.abc", time.Now()); !errors.Is(err, pages.ErrNoKey) {
					t.Errorf("Verify without a key = %v, want ErrNoKey", err)
				}
				return
			}
			pu, err := url.Parse(u)
			if err != nil || pu.Path != "/builds/x" || pu.Host != "ig.example.org" {
				t.Fatalf("SignedURL = %q", u)
			}
			if err := s.Verify("/builds/x", pu.Query().Get("t"), time.Now()); err != nil {
				t.Errorf("own signed URL does not verify: %v", err)
			}
			tok := s.Token("/builds/x", exp)
			if err := pages.NewSigner(c.sameAs).Verify("/builds/x", tok, time.Now()); err != nil {
				t.Errorf("same key source should verify: %v", err)
			}
			if err := pages.NewSigner(c.differs).Verify("/builds/x", tok, time.Now()); err == nil {
				t.Error("another key source verified the token")
			}
			for _, k := range []secret.String{c.cfg.Pages.LinkKey, c.cfg.EncryptionKey} {
				if !k.IsZero() && strings.Contains(u, k.Reveal()) {
					t.Error("the key itself appears in the link")
				}
			}
		})
	}
}

// TestPagesAccess checks who may open the pages: signed links, their cookie,
// API tokens and sessions; everyone else gets 401 and a sign-in page.
func TestPagesAccess(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "b1", clouds: map[string]*builds.CloudRecord{"sim-a": {State: "running"}}})
	e.record(rec{id: "b2", clouds: map[string]*builds.CloudRecord{"sim-a": {State: "queued"}}})
	path := pages.BuildPath(b.ID)
	valid := e.signer.Token(path, time.Now().Add(time.Hour))
	expired := e.signer.Token(path, time.Now().Add(-time.Minute))
	exp, mac, _ := strings.Cut(valid, ".")
	// Change the MAC's first character for sure (upper-casing may change nothing).
	flip := "A"
	if mac[0] == 'A' {
		flip = "B"
	}
	tampered := flip + mac[1:]
	cases := []struct {
		name    string
		path    string
		headers []string
		code    int
		say     string
	}{
		{"missing", path, nil, 401, "need a signed link"},
		{"valid link", path + "?t=" + valid, nil, 200, "dstat"},
		{"expired link", path + "?t=" + expired, nil, 401, "has expired"},
		{"tampered link", path + "?t=" + exp + "." + tampered, nil, 401, "not valid for this page"},
		{"extended expiry", path + "?t=9999999999." + mac, nil, 401, "not valid for this page"},
		{"wrong path", "/builds/b2?t=" + valid, nil, 401, "not valid for this page"},
		{"link does not open the list", "/builds?t=" + valid, nil, 401, "not valid"},
		{"bearer token", path, []string{"Authorization: Bearer " + apiToken}, 200, "dstat"},
		{"bad bearer token", path, []string{"Authorization: Bearer nope-nope-nope-nope"}, 401, "Sign in"},
		{"bearer opens the list", "/builds", []string{"Authorization: Bearer " + apiToken}, 200, "Builds"},
		{"forged session", path, []string{"Cookie: imagegen_session=9999999999.AAAA"}, 401, "Sign in"},
		{"forged link cookie", path + "/log/sim-a", []string{"Cookie: imagegen_link=L2J1aWxkcy9iMQ.9999999999.AAAA"}, 401, "Sign in"},
		{"assets are public", "/assets/pages.css", nil, 200, ".st-ok"},
		{"login page is public", "/login", nil, 200, `name="token"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(nil, http.MethodGet, c.path, nil, c.headers...)
			if r.code != c.code {
				t.Fatalf("GET %s: %d, want %d\n%s", c.path, r.code, c.code, r.body)
			}
			mustContain(t, c.name, r.body, c.say)
			if r.code == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("link cookie opens the pages below the link, and only those", func(t *testing.T) {
		c := browser(t)
		if r := e.do(c, http.MethodGet, path+"?t="+valid, nil); r.code != 200 {
			t.Fatalf("signed link: %d", r.code)
		}
		for p, want := range map[string]int{
			path + "/log/sim-a": 200, path: 200, path + "/events": 200,
			"/builds/b2": 401, "/builds": 401, "/builds/b1x": 401, "/generators/octo-org/images/dstat": 401,
		} {
			if p == path+"/events" {
				continue // a stream: checked in the live-tail tests
			}
			if r := e.do(c, http.MethodGet, p, nil); r.code != want {
				t.Errorf("GET %s with the link's cookie: %d, want %d", p, r.code, want)
			}
		}
	})

	t.Run("sign in with an API token", func(t *testing.T) {
		c := browser(t)
		form := url.Values{"token": {"wrong-token-0123456789"}, "next": {"/builds"}}
		r := e.do(c, http.MethodPost, "/login", strings.NewReader(form.Encode()), "Content-Type: application/x-www-form-urlencoded")
		if r.code != 401 {
			t.Fatalf("bad token: %d", r.code)
		}
		form.Set("token", apiToken)
		form.Set("next", "//evil.example.org/")
		r = e.do(c, http.MethodPost, "/login", strings.NewReader(form.Encode()), "Content-Type: application/x-www-form-urlencoded")
		if r.code != http.StatusSeeOther || r.header.Get("Location") != "/builds" {
			t.Fatalf("login: %d to %q (must stay on this server)", r.code, r.header.Get("Location"))
		}
		sc := r.header.Get("Set-Cookie")
		if strings.Contains(sc, apiToken) || !strings.Contains(sc, "HttpOnly") {
			t.Errorf("session cookie %q must be HttpOnly and not hold the token", sc)
		}
		for _, p := range []string{"/builds", path, "/generators/octo-org/images/dstat"} {
			if r := e.do(c, http.MethodGet, p, nil); r.code != 200 {
				t.Errorf("GET %s signed in: %d", p, r.code)
			}
		}
		if strings.Contains(e.logs.String(), apiToken) {
			t.Error("the API token reached the logs")
		}
	})
}

func TestSecureCookiesOverHTTPS(t *testing.T) {
	e := newEnv(t, envOptions{baseURL: "https://imagegen.example.org"})
	b := e.record(rec{clouds: map[string]*builds.CloudRecord{"sim-a": {State: "queued"}}})
	p := pages.BuildPath(b.ID)
	r := e.do(nil, http.MethodGet, p+"?t="+e.signer.Token(p, time.Now().Add(time.Hour)), nil)
	sc := r.header.Get("Set-Cookie")
	for _, want := range []string{"imagegen_link=", "Path=" + p, "Secure", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %q", sc, want)
		}
	}
}

func TestUnsignedWithoutKey(t *testing.T) {
	e := newEnv(t, envOptions{noLinkKey: true})
	b := e.record(rec{clouds: map[string]*builds.CloudRecord{"sim-a": {State: "queued"}}})
	if u := pages.BuildLink(e.cfg, b.ID); u != "http://imagegen.example.org/builds/"+b.ID {
		t.Errorf("BuildLink without a key = %q", u)
	}
	// A token made with some key cannot open a page on a server without one.
	other := pages.NewSigner(&config.Config{Pages: config.Pages{LinkKey: secret.New(linkKey)}})
	p := pages.BuildPath(b.ID)
	if r := e.do(nil, http.MethodGet, p+"?t="+other.Token(p, time.Now().Add(time.Hour)), nil); r.code != 401 {
		t.Errorf("a token on a server without a link key: %d", r.code)
	}
	if r := e.get(p); r.code != 200 {
		t.Errorf("API token: %d", r.code)
	}
}

func TestBuildLink(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.record(rec{clouds: map[string]*builds.CloudRecord{"sim-a": {State: "queued"}}})
	u, err := url.Parse(pages.BuildLink(e.cfg, b.ID))
	if err != nil {
		t.Fatal(err)
	}
	exp, _, _ := strings.Cut(u.Query().Get("t"), ".")
	n, _ := strconv.ParseInt(exp, 10, 64)
	if d := time.Until(time.Unix(n, 0)); d < 59*time.Minute || d > time.Hour {
		t.Errorf("link expires in %s, want pages.link_ttl (1h)", d)
	}
	// The link as placed on GitHub opens the page on this server.
	if r := e.do(nil, http.MethodGet, u.Path+"?"+u.RawQuery, nil); r.code != 200 {
		t.Errorf("BuildLink's URL: %d", r.code)
	}
}
