package access

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

const (
	readTok  = "read-token-0123456789abcdef"
	rerunTok = "rerun-token-0123456789abcdef"
)

func policy(t *testing.T, readAccess string, publicLogs bool) (*Policy, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	cfg := &config.Config{ReadAccess: readAccess, PublicLogs: publicLogs, APITokens: []config.APIToken{
		{Token: secret.New(readTok), Scopes: []string{config.ScopeRead}, Repos: []string{"fg/*"}},
		{Token: secret.New(rerunTok), Scopes: []string{config.ScopeRead, config.ScopeRerun}, Plain: true},
	}}
	return New(cfg, slog.New(slog.NewTextHandler(&logs, nil))), &logs
}

func TestAuthenticate(t *testing.T) {
	p, logs := policy(t, config.ReadToken, false)
	for _, c := range []struct {
		token string
		want  string // the token's name, or "" for ErrInvalid
	}{
		{readTok, "api_tokens[0]"},
		{rerunTok, "api_tokens[1]"},
		{"", ""},
		{readTok[:len(readTok)-1], ""},
		{readTok + "x", ""},
		{strings.ToUpper(readTok), ""},
	} {
		tok, err := p.Authenticate("192.0.2.1", c.token, "test")
		switch {
		case c.want == "" && !errors.Is(err, ErrInvalid):
			t.Errorf("Authenticate(%q) = %v, %v; want ErrInvalid", c.token, tok, err)
		case c.want != "" && (err != nil || tok.Name != c.want):
			t.Errorf("Authenticate(%q) = %v, %v; want %s", c.token, tok, err, c.want)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "authentication failed") || !strings.Contains(out, "client=192.0.2.1") || !strings.Contains(out, "where=test") {
		t.Errorf("the failures are not logged with the address:\n%s", out)
	}
	if strings.Contains(out, "read-token") {
		t.Errorf("the log holds a token:\n%s", out)
	}
}

// TestFailureLimit: FailBurst failures from one address, then 429-style
// refusals, even for the right token; other addresses are not affected;
// successes cost nothing.
func TestFailureLimit(t *testing.T) {
	p, _ := policy(t, config.ReadToken, false)
	for i := 0; i < 3*FailBurst; i++ {
		if _, err := p.Authenticate("192.0.2.9", readTok, "test"); err != nil {
			t.Fatalf("success %d: %v", i, err)
		}
	}
	for i := 0; i < FailBurst; i++ {
		if _, err := p.Authenticate("192.0.2.1", "wrong-wrong-wrong-wrong", "test"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("failure %d: %v, want ErrInvalid", i, err)
		}
	}
	var lim *LimitedError
	_, err := p.Authenticate("192.0.2.1", readTok, "test")
	if !errors.As(err, &lim) {
		t.Fatalf("after %d failures the right token: %v, want LimitedError", FailBurst, err)
	}
	if s := lim.Seconds(); s < 1 || s > int(FailRefill/time.Second) {
		t.Errorf("Retry-After %d s, want 1..%d", s, int(FailRefill/time.Second))
	}
	if want := "too many failed authentications from this address: retry in "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q", err)
	}
	if _, err := p.Authenticate("192.0.2.2", readTok, "test"); err != nil {
		t.Errorf("another address is refused: %v", err)
	}
	// One IPv6 client holds a /64: its addresses share one budget.
	for i := 0; i < FailBurst; i++ {
		_, _ = p.Authenticate(fmt.Sprintf("2001:db8:1:2::%x", i+1), "wrong", "test")
	}
	if _, err := p.Authenticate("2001:db8:1:2:ffff::1", readTok, "test"); !errors.As(err, &lim) {
		t.Errorf("a fresh address in the same /64: %v, want LimitedError", err)
	}
	if _, err := p.Authenticate("2001:db8:1:3::1", readTok, "test"); err != nil {
		t.Errorf("the next /64: %v", err)
	}
}

// TestFailureLimitParallel: 300 wrong tokens sent at once get FailBurst
// answers, not 300.
func TestFailureLimitParallel(t *testing.T) {
	p, _ := policy(t, config.ReadToken, false)
	var mu sync.Mutex
	invalid, limited := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Authenticate("198.51.100.7", "wrong-token-0123456789", "test")
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrInvalid) {
				invalid++
			} else {
				limited++
			}
		}()
	}
	wg.Wait()
	if invalid != FailBurst || limited != 300-FailBurst {
		t.Errorf("%d checked, %d refused; want %d and %d", invalid, limited, FailBurst, 300-FailBurst)
	}
}

func TestLimiterForgetsLeastRecent(t *testing.T) {
	l := NewLimiter(time.Hour, 1, 2)
	now := time.Now()
	for _, k := range []string{"a", "b"} {
		if _, wait := l.reserve(k, now); wait != 0 {
			t.Fatalf("%s refused at once", k)
		}
	}
	if _, wait := l.reserve("a", now); wait == 0 {
		t.Fatal("a's second failure was allowed with a burst of 1")
	}
	l.reserve("c", now) // forgets b, the least recently used
	if _, wait := l.reserve("b", now); wait != 0 {
		t.Error("b was not forgotten")
	}
	if len(l.byKey) != 2 || l.order.Len() != 2 {
		t.Errorf("%d keys kept, want 2", len(l.byKey))
	}
}

func TestReadRules(t *testing.T) {
	tok, _ := policy(t, config.ReadToken, false)
	pub, _ := policy(t, config.ReadPublic, false)
	pubLogs, _ := policy(t, config.ReadPublic, true)
	fg, all := tok.Tokens()[0], tok.Tokens()[1]
	cases := []struct {
		name       string
		p          *Policy
		t          *Token
		repo       string
		read, logs bool
	}{
		{"token: anonymous", tok, nil, "fg/a", false, false},
		{"token: fg token, fg repo", tok, fg, "fg/a", true, true},
		{"token: fg token, other repo", tok, fg, "octo/a", false, false},
		{"token: plain token", tok, all, "octo/a", true, true},
		{"public: anonymous", pub, nil, "octo/a", true, false},
		{"public: fg token, other repo", pub, fg, "octo/a", true, false},
		{"public+logs: anonymous", pubLogs, nil, "octo/a", true, true},
	}
	for _, c := range cases {
		if got := c.p.MayRead(c.t, c.repo); got != c.read {
			t.Errorf("%s: MayRead = %v", c.name, got)
		}
		if got := c.p.MayReadLogs(c.t, c.repo); got != c.logs {
			t.Errorf("%s: MayReadLogs = %v", c.name, got)
		}
	}
	if tok.Filter(all) != nil || tok.Filter(nil) != nil || pub.Filter(fg) != nil {
		t.Error("Filter limits a token that sees everything")
	}
	if f := tok.Filter(fg); f == nil || !f("fg/x") || f("octo/x") {
		t.Error("Filter of a token limited to fg/* is wrong")
	}
}

func TestIPExtractor(t *testing.T) {
	cases := []struct {
		name    string
		trusted []string
		peer    string
		xff     string
		want    string
	}{
		{"no proxies: the peer, whatever the header says", nil, "203.0.113.5:4000", "198.51.100.1", "203.0.113.5"},
		{"no proxies: private peers are not trusted either", nil, "10.0.0.2:4000", "198.51.100.1", "10.0.0.2"},
		{"trusted proxy: the client it names", []string{"10.0.0.0/8"}, "10.0.0.2:4000", "198.51.100.1", "198.51.100.1"},
		{"trusted proxy: a forged first entry is skipped", []string{"10.0.0.0/8"}, "10.0.0.2:4000", "1.2.3.4, 198.51.100.1", "198.51.100.1"},
		{"trusted chain of proxies", []string{"10.0.0.0/8", "192.0.2.7"}, "10.0.0.2:4000", "198.51.100.1, 192.0.2.7", "198.51.100.1"},
		{"untrusted peer: the header is ignored", []string{"10.0.0.0/8"}, "203.0.113.5:4000", "198.51.100.1", "203.0.113.5"},
		{"trusted proxy without the header", []string{"10.0.0.0/8"}, "10.0.0.2:4000", "", "10.0.0.2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ex := IPExtractor(&config.Config{TrustedProxies: c.trusted})
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.peer
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			r.Header.Set("X-Real-IP", "192.0.2.200")
			if got := ex(r); got != c.want {
				t.Errorf("client %q, want %q", got, c.want)
			}
		})
	}
}
