package githubtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"
)

func TestExample(t *testing.T) {
	tests := []struct {
		event string
		pick  func(map[string]any) bool
		check func(t *testing.T, ev any)
	}{
		{
			event: "push",
			pick: func(m map[string]any) bool {
				c, _ := m["commits"].([]any)
				return m["installation"] != nil && len(c) > 0
			},
			check: func(t *testing.T, ev any) {
				p := ev.(*github.PushEvent)
				if p.GetInstallation().GetID() == 0 || len(p.Commits) == 0 || p.GetRepo().GetFullName() == "" || p.GetAfter() == "" {
					t.Errorf("push example lacks what the pick asked for: %+v", p)
				}
			},
		},
		{
			event: "ping",
			check: func(t *testing.T, ev any) {
				if ev.(*github.PingEvent).GetZen() == "" {
					t.Error("ping example without zen")
				}
			},
		},
		{
			event: "check_run",
			// The "rerequested" examples carry "2018-04-25 20:42:10" timestamps
			// that go-github cannot parse; "requested_action" parses.
			pick: func(m map[string]any) bool { return m["action"] == "requested_action" },
			check: func(t *testing.T, ev any) {
				cr := ev.(*github.CheckRunEvent)
				if cr.GetAction() != "requested_action" || cr.GetCheckRun().GetHeadSHA() == "" || cr.GetInstallation().GetID() == 0 {
					t.Errorf("check_run example: action %q head %q", cr.GetAction(), cr.GetCheckRun().GetHeadSHA())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.event, func(t *testing.T) {
			raw := Example(t, tt.event, tt.pick)
			ev, err := github.ParseWebHook(tt.event, raw)
			if err != nil {
				t.Fatalf("go-github cannot parse the %s example: %v", tt.event, err)
			}
			tt.check(t, ev)
		})
	}
}

// fatalTB records a Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func runFatal(t *testing.T, fn func(tb testing.TB)) string {
	ftb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ftb)
	}()
	<-done
	return ftb.msg
}

func TestExampleFailsClearly(t *testing.T) {
	tests := []struct {
		name string
		env  string
		fn   func(tb testing.TB)
		want string
	}{
		{"missing package", t.TempDir(), func(tb testing.TB) { Example(tb, "push", nil) }, "make test-deps"},
		{"unknown event", "", func(tb testing.TB) { Example(tb, "no_such_event", nil) }, `no "no_such_event" webhook examples`},
		{"nothing matches", "", func(tb testing.TB) { Example(tb, "ping", func(map[string]any) bool { return false }) }, "none of the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv(ExamplesEnv, tt.env)
			}
			if msg := runFatal(t, tt.fn); !strings.Contains(msg, tt.want) {
				t.Errorf("failure message %q, want one containing %q", msg, tt.want)
			}
		})
	}
}

func TestSignAndDelivery(t *testing.T) {
	secret := []byte("It's a Secret to Everybody")
	// The example from GitHub's docs on validating deliveries.
	if got, want := Sign(secret, []byte("Hello, World!")), "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}

	type seen struct {
		event, delivery string
		err             error
	}
	got := make(chan seen, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := github.ValidatePayload(r, secret)
		got <- seen{github.WebHookType(r), github.DeliveryID(r), err}
	}))
	t.Cleanup(srv.Close)
	body := []byte(`{"zen":"Design for failure.","hook_id":1}`)
	Delivery(t, srv.URL, "ping", "d-1", secret, body)
	if s := <-got; s.err != nil || s.event != "ping" || s.delivery != "d-1" {
		t.Errorf("signed delivery: %+v", s)
	}
	Delivery(t, srv.URL, "ping", "d-2", nil, body)
	if s := <-got; s.err == nil {
		t.Errorf("unsigned delivery validated")
	}
}

// request calls the fake directly, for what the real clients never send.
func request(t *testing.T, s *Server, method, path, auth string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, strings.TrimSuffix(s.URL(), "/")+path, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func signJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, 5, sum[:]) // 5 is crypto.SHA256's value
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestFakeAuth(t *testing.T) {
	s := NewServer(t)
	s.AppConfig(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now().Unix()
	appID := strconv.FormatInt(s.AppID(), 10)
	good := map[string]any{"iss": appID, "iat": now - 30, "exp": now + 90}
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"valid JWT", "Bearer " + signJWT(t, s.key, good), 201},
		{"wrong key", "Bearer " + signJWT(t, other, good), 401},
		{"wrong issuer", "Bearer " + signJWT(t, s.key, map[string]any{"iss": "1", "iat": now - 30, "exp": now + 90}), 401},
		{"expired", "Bearer " + signJWT(t, s.key, map[string]any{"iss": appID, "iat": now - 700, "exp": now - 100}), 401},
		{"too long lived", "Bearer " + signJWT(t, s.key, map[string]any{"iss": appID, "iat": now, "exp": now + 3600}), 401},
		{"personal token", "token " + s.token, 401},
		{"none", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := request(t, s, "POST", "/app/installations/5/access_tokens", tt.auth, nil)
			if code != tt.want {
				t.Fatalf("status %d (%v), want %d", code, body, tt.want)
			}
			if code == 201 {
				tok, _ := body["token"].(string)
				code, _ := request(t, s, "POST", "/repos/o/r/statuses/abc", "token "+tok, map[string]string{"state": "success"})
				if code != 201 {
					t.Errorf("the issued token was refused: %d", code)
				}
			}
		})
	}
	if code, _ := request(t, s, "POST", "/repos/o/r/statuses/abc", "token ghs_guessed", map[string]string{"state": "success"}); code != 401 {
		t.Errorf("an unknown token got %d, want 401", code)
	}
	if code, _ := request(t, s, "POST", "/repos/o/r/check-runs", "token "+s.token, map[string]string{"name": "n", "head_sha": "abc"}); code != 403 {
		t.Errorf("a check run with a personal token got %d, want 403", code)
	}
}

func TestFakeValidation(t *testing.T) {
	s := NewServer(t)
	auth := "token " + s.token
	long := strings.Repeat("x", 65536)
	tests := []struct {
		name  string
		path  string
		body  any
		field string
	}{
		{"status state", "/repos/o/r/statuses/abc", map[string]string{"state": "done"}, "state"},
		{"status description", "/repos/o/r/statuses/abc", map[string]string{"state": "error", "description": strings.Repeat("é", 141)}, "description"},
		{"status target", "/repos/o/r/statuses/abc", map[string]string{"state": "error", "target_url": "javascript:alert(1)"}, "target_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := request(t, s, "POST", tt.path, auth, tt.body)
			errs, _ := body["errors"].([]any)
			if code != 422 || len(errs) != 1 || errs[0].(map[string]any)["field"] != tt.field {
				t.Errorf("got %d %v; want 422 on %s", code, body, tt.field)
			}
		})
	}
	if code, _ := request(t, s, "POST", "/repos/o/r/statuses/abc", auth, map[string]string{"state": "error", "description": strings.Repeat("é", 140)}); code != 201 {
		t.Errorf("a 140-character description got %d", code)
	}

	// Check runs need an installation token.
	s.AppConfig(t)
	code, tokBody := request(t, s, "POST", "/app/installations/1/access_tokens", "Bearer "+signJWT(t, s.key, map[string]any{"iss": strconv.FormatInt(s.AppID(), 10), "iat": time.Now().Unix() - 10, "exp": time.Now().Unix() + 60}), nil)
	if code != 201 {
		t.Fatalf("token: %d", code)
	}
	inst := "token " + tokBody["token"].(string)
	runs := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no name", map[string]any{"head_sha": "abc"}, "name"},
		{"no sha", map[string]any{"name": "n"}, "head_sha"},
		{"bad status", map[string]any{"name": "n", "head_sha": "abc", "status": "done"}, "status"},
		{"completed without conclusion", map[string]any{"name": "n", "head_sha": "abc", "status": "completed"}, "conclusion"},
		{"bad conclusion", map[string]any{"name": "n", "head_sha": "abc", "conclusion": "great"}, "conclusion"},
		{"output without title", map[string]any{"name": "n", "head_sha": "abc", "output": map[string]string{"summary": "s"}}, "output.title"},
		{"output without summary", map[string]any{"name": "n", "head_sha": "abc", "output": map[string]string{"title": "t"}}, "output.summary"},
		{"summary too long", map[string]any{"name": "n", "head_sha": "abc", "output": map[string]string{"title": "t", "summary": long}}, "output.summary"},
		{"text too long", map[string]any{"name": "n", "head_sha": "abc", "output": map[string]string{"title": "t", "summary": "s", "text": long}}, "output.text"},
	}
	for _, tt := range runs {
		t.Run(tt.name, func(t *testing.T) {
			code, body := request(t, s, "POST", "/repos/o/r/check-runs", inst, tt.body)
			errs, _ := body["errors"].([]any)
			if code != 422 || len(errs) != 1 || errs[0].(map[string]any)["field"] != tt.field {
				t.Errorf("got %d %v; want 422 on %s", code, body, tt.field)
			}
		})
	}
	if n := len(s.CheckRuns("o/r")); n != 0 {
		t.Errorf("%d invalid check runs were recorded", n)
	}
}

func TestFakeFailNext(t *testing.T) {
	s := NewServer(t)
	auth := "token " + s.token
	s.FailNext("POST", "/repos/o/r/statuses/", 503, 2, nil)
	s.FailNext("", "/repos/", 403, 1, map[string]string{"Retry-After": "7"})
	var got []string
	for range 4 {
		req, _ := http.NewRequest("POST", s.URL()+"api/v3/repos/o/r/statuses/abc", strings.NewReader(`{"state":"success"}`))
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Retry-After")))
		if resp.StatusCode == 403 && !strings.Contains(string(b), "secondary rate limit") {
			t.Errorf("403 body %s does not say secondary rate limit", b)
		}
	}
	want := []string{"503 ", "503 ", "403 7", "201 "}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("answers %q, want %q", got, want)
	}
	calls := s.Calls()
	if len(calls) != 4 || calls[0].Prefix != "/api/v3" || calls[0].Path != "/repos/o/r/statuses/abc" || calls[0].Auth != "token" || calls[3].Status != 201 {
		t.Errorf("calls = %+v", calls)
	}
}

func TestPush(t *testing.T) {
	tests := []struct {
		name string
		o    PushOptions
	}{
		{"defaults", PushOptions{Before: "aaa1", After: "bbb2"}},
		{"created ref, two commits", PushOptions{
			Repo: "octo/gens", Ref: "refs/heads/dev", DefaultBranch: "trunk", Installation: 77, Forced: true,
			Before: strings.Repeat("0", 40), After: "ccc3",
			Commits: []PushCommit{
				{ID: "c1", Added: []string{".imagegen/a.yaml"}},
				{Modified: []string{"scripts/a.sh"}, Removed: []string{".imagegen/old.yaml"}},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := Push(t, tt.o)
			ev, err := github.ParseWebHook("push", raw)
			if err != nil {
				t.Fatal(err)
			}
			p := ev.(*github.PushEvent)
			wantRepo := tt.o.Repo
			if wantRepo == "" {
				wantRepo = "Codertocat/Hello-World"
			}
			wantRef := tt.o.Ref
			if wantRef == "" {
				wantRef = "refs/heads/main"
			}
			wantInst := tt.o.Installation
			if wantInst == 0 {
				wantInst = 1
			}
			if p.GetRepo().GetFullName() != wantRepo || p.GetRef() != wantRef || p.GetAfter() != tt.o.After ||
				p.GetBefore() != tt.o.Before || p.GetInstallation().GetID() != wantInst || p.GetForced() != tt.o.Forced ||
				p.GetCreated() != (strings.Trim(tt.o.Before, "0") == "") {
				t.Errorf("push = repo %s ref %s %s..%s inst %d forced %v created %v", p.GetRepo().GetFullName(), p.GetRef(),
					p.GetBefore(), p.GetAfter(), p.GetInstallation().GetID(), p.GetForced(), p.GetCreated())
			}
			if p.GetHeadCommit().GetID() != tt.o.After || p.Commits[len(p.Commits)-1].GetID() != tt.o.After {
				t.Errorf("head commit %s, want %s", p.GetHeadCommit().GetID(), tt.o.After)
			}
			if len(tt.o.Commits) == 2 {
				if got := p.Commits[0].Added; len(got) != 1 || got[0] != ".imagegen/a.yaml" {
					t.Errorf("commit 0 added %q", got)
				}
				if got := p.Commits[1].Removed; len(got) != 1 || got[0] != ".imagegen/old.yaml" {
					t.Errorf("commit 1 removed %q", got)
				}
				if p.GetRepo().GetDefaultBranch() != "trunk" {
					t.Errorf("default branch %q", p.GetRepo().GetDefaultBranch())
				}
			}
		})
	}
}
