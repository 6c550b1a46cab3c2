package github_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/secret"
)

const sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"

const repo = "octo/gens"

// fastRetry keeps retry tests quick while still exercising the waits.
var fastRetry = github.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 2, Attempts: 4}

func newClient(t testing.TB, cfg config.GitHub, installation int64, opts github.Options) *github.Client {
	t.Helper()
	if opts.Retry == (github.Backoff{}) {
		opts.Retry = fastRetry
	}
	f, err := github.New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c, err := f.Client(context.Background(), installation)
	if err != nil {
		t.Fatalf("Client(%d): %v", installation, err)
	}
	return c
}

func callsTo(s *githubtest.Server, method, prefix string) []githubtest.Call {
	var out []githubtest.Call
	for _, c := range s.Calls() {
		if c.Method == method && strings.HasPrefix(c.Path, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func TestParseRepo(t *testing.T) {
	tests := []struct {
		in      string
		want    github.Repo
		wantErr bool
	}{
		{in: "octo/gens", want: github.Repo{Owner: "octo", Name: "gens"}},
		{in: "octo", wantErr: true},
		{in: "/gens", wantErr: true},
		{in: "octo/", wantErr: true},
		{in: "a/b/c", wantErr: true},
	}
	for _, tt := range tests {
		got, err := github.ParseRepo(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseRepo(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	s := githubtest.NewServer(t)
	app := s.AppConfig(t)
	tests := []struct {
		name string
		cfg  config.GitHub
		want string
	}{
		{"both", config.GitHub{AppID: 1, PrivateKey: app.PrivateKey, Token: secret.New("tok-123456"), APIURL: s.URL()}, "not both"},
		{"no key", config.GitHub{AppID: 1, APIURL: s.URL()}, "private key is empty"},
		{"bad key", config.GitHub{AppID: 1, PrivateKey: secret.New("-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n"), PrivateKeyFile: "/k.pem", APIURL: s.URL()}, "/k.pem"},
		{"bad url", config.GitHub{Token: secret.New("tok-123456"), APIURL: "ftp://x/"}, "not an http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := github.New(tt.cfg, github.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAppAuth(t *testing.T) {
	s := githubtest.NewServer(t)
	f, err := github.New(s.AppConfig(t), github.Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	if !f.IsApp() {
		t.Fatal("IsApp() = false for an App config")
	}
	ctx := context.Background()
	c42, err := f.Client(ctx, 42)
	if err != nil {
		t.Fatalf("Client(42): %v", err)
	}
	again, err := f.Client(ctx, 42)
	if err != nil || again != c42 {
		t.Fatalf("second Client(42) = %p, %v; want the cached %p", again, err, c42)
	}
	c7, err := f.Client(ctx, 7)
	if err != nil {
		t.Fatalf("Client(7): %v", err)
	}
	for _, c := range []*github.Client{c42, c7, c42} {
		if err := c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/a/b"}); err != nil {
			t.Fatalf("SetStatus: %v", err)
		}
	}

	tokens := callsTo(s, http.MethodPost, "/app/installations/")
	var got []string
	for _, c := range tokens {
		got = append(got, c.Path+" "+c.Auth)
	}
	want := []string{
		"/app/installations/42/access_tokens app:4242",
		"/app/installations/7/access_tokens app:4242",
	}
	if !slices.Equal(got, want) {
		t.Errorf("token exchanges = %q, want %q (one per installation, JWT verified)", got, want)
	}
	var auths []string
	for _, c := range callsTo(s, http.MethodPost, "/repos/") {
		auths = append(auths, c.Auth)
	}
	if want := []string{"installation:42", "installation:7", "installation:42"}; !slices.Equal(auths, want) {
		t.Errorf("status calls authenticated as %q, want %q", auths, want)
	}

	if _, err := f.Client(ctx, 0); err == nil {
		t.Error("Client(0) in App mode: no error")
	}
}

func TestAppWithWrongKeyFails(t *testing.T) {
	s := githubtest.NewServer(t)
	s.AppConfig(t) // the key the server trusts
	other := githubtest.NewServer(t).AppConfig(t)
	other.APIURL = s.URL()
	other.AppID = s.AppID()
	f, err := github.New(other, github.Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Client(context.Background(), 42)
	if err == nil {
		t.Fatal("Client with a key GitHub does not know: no error")
	}
	if !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "installation 42") || github.IsTransient(err) {
		t.Errorf("error = %v; want a permanent 401 naming installation 42", err)
	}
	if n := len(s.Calls()); n != 1 {
		t.Errorf("%d calls, want 1: a 401 is not retried", n)
	}
}

func TestTokenMode(t *testing.T) {
	s := githubtest.NewServer(t)
	f, err := github.New(s.TokenConfig(), github.Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	if f.IsApp() {
		t.Fatal("IsApp() = true in token mode")
	}
	ctx := context.Background()
	c, err := f.Client(ctx, 12345) // the id is ignored
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(ctx, repo, sha, builds.Status{State: "success", Context: "imagegen/g/c"}); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	calls := s.Calls()
	if len(calls) != 1 || calls[0].Auth != "token" {
		t.Fatalf("calls = %+v; want one status call with the token", calls)
	}
	_, err = c.CreateCheckRun(ctx, repo, builds.CheckRun{Name: "imagegen: g", HeadSHA: sha})
	if !errors.Is(err, github.ErrNeedsApp) {
		t.Errorf("CreateCheckRun in token mode = %v, want ErrNeedsApp", err)
	}
	if len(s.Calls()) != 1 {
		t.Error("CreateCheckRun in token mode called GitHub")
	}
}

func TestFS(t *testing.T) {
	s := githubtest.NewServer(t)
	const r = "octo/gens"
	spec := []byte("name: dstat\nscript: |\n  echo hi ✓\n")
	s.SetFile(r, sha, ".imagegen/dstat.yaml", spec)
	s.SetFile(r, sha, ".imagegen/web.yaml", []byte("name: web\n"))
	s.SetFile(r, sha, "scripts/dstat.sh", []byte("#!/bin/sh\necho dstat\n"))
	s.SetFile(r, sha, "README.md", []byte("# gens\n"))
	s.SetFile(r, sha, "big.bin", bytes.Repeat([]byte("x"), github.MaxFileSize+1))
	s.SetSymlink(r, sha, ".imagegen/link.yaml", "web.yaml")           // to a file: GitHub follows it
	s.SetSymlink(r, sha, ".imagegen/escape.yaml", "../../etc/passwd") // outside: GitHub describes it
	s.SetFile(r, "other", ".imagegen/dstat.yaml", []byte("name: other\n"))

	c := newClient(t, s.AppConfig(t), 42, github.Options{})
	fsys := c.FS(context.Background(), repo, sha)

	t.Run("read", func(t *testing.T) {
		got, err := fs.ReadFile(fsys, ".imagegen/dstat.yaml")
		if err != nil || !bytes.Equal(got, spec) {
			t.Fatalf("ReadFile = %q, %v; want %q", got, err, spec)
		}
		other, err := fs.ReadFile(c.FS(context.Background(), repo, "other"), ".imagegen/dstat.yaml")
		if err != nil || string(other) != "name: other\n" {
			t.Fatalf("ReadFile at another ref = %q, %v", other, err)
		}
	})
	t.Run("readdir", func(t *testing.T) {
		entries, err := fs.ReadDir(fsys, ".imagegen")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name()+":"+e.Type().String())
		}
		want := []string{"dstat.yaml:----------", "escape.yaml:L---------", "link.yaml:L---------", "web.yaml:----------"}
		if !slices.Equal(got, want) {
			t.Errorf("ReadDir(.imagegen) = %q, want %q", got, want)
		}
		root, err := fs.ReadDir(fsys, ".")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range root {
			names = append(names, e.Name())
		}
		if want := []string{".imagegen", "README.md", "big.bin", "scripts"}; !slices.Equal(names, want) {
			t.Errorf("ReadDir(.) = %q, want %q", names, want)
		}
	})
	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			path    string
			wantErr error
			wantMsg string
		}{
			{".imagegen/link.yaml", fs.ErrPermission, "read .imagegen/link.yaml: is a symlink: imagegen reads only regular files of the commit, never symlinks"},
			{".imagegen/escape.yaml", fs.ErrPermission, "is a symlink"},
			{".imagegen/missing.yaml", fs.ErrNotExist, ""},
			{"nope/dstat.yaml", fs.ErrNotExist, ""},
			{"big.bin", github.ErrTooLarge, "limit"},
			{"../x", fs.ErrInvalid, ""},
		}
		for _, tt := range tests {
			_, err := fs.ReadFile(fsys, tt.path)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("ReadFile(%s) = %v; want %v with %q", tt.path, err, tt.wantErr, tt.wantMsg)
			}
		}
	})
	t.Run("cache", func(t *testing.T) {
		before := len(s.Calls())
		for range 3 {
			if _, err := fs.Stat(fsys, ".imagegen/dstat.yaml"); err != nil {
				t.Fatal(err)
			}
			fs.ReadFile(fsys, ".imagegen/missing.yaml")
		}
		if n := len(s.Calls()) - before; n != 0 {
			t.Errorf("%d more calls for paths already read, want 0", n)
		}
	})
	t.Run("fstest", func(t *testing.T) {
		// A tree without symlinks or big files must pass the standard checks.
		s.SetFile(r, "clean", ".imagegen/a.yaml", []byte("name: a\n"))
		s.SetFile(r, "clean", ".imagegen/b.yaml", []byte("name: b\n"))
		s.SetFile(r, "clean", "scripts/a.sh", []byte("echo a\n"))
		if err := fstest.TestFS(c.FS(context.Background(), repo, "clean"), ".imagegen/a.yaml", ".imagegen/b.yaml", "scripts/a.sh"); err != nil {
			t.Error(err)
		}
	})
}

func TestStatusTruncation(t *testing.T) {
	s := githubtest.NewServer(t)
	c := newClient(t, s.TokenConfig(), 0, github.Options{})
	ctx := context.Background()
	long := strings.Repeat("é", 200)
	tests := []struct {
		desc string
		want string
	}{
		{"short", "short"},
		{strings.Repeat("a", 140), strings.Repeat("a", 140)},
		{long, strings.Repeat("é", 139) + "…"},
	}
	for i, tt := range tests {
		st := builds.Status{State: "failure", Context: "imagegen/g/c" + string(rune('0'+i)), Description: tt.desc, TargetURL: "https://imagegen.example/builds/1"}
		if err := c.SetStatus(ctx, repo, sha, st); err != nil {
			t.Fatalf("SetStatus(%d runes): %v", utf8.RuneCountInString(tt.desc), err)
		}
	}
	got := s.Statuses("octo/gens", sha)
	if len(got) != len(tests) {
		t.Fatalf("%d statuses recorded, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		if got[i].Description != tt.want || got[i].State != "failure" || got[i].TargetURL != "https://imagegen.example/builds/1" {
			t.Errorf("status %d = %+v, want description %q", i, got[i], tt.want)
		}
	}
	if err := c.SetStatus(ctx, repo, sha, builds.Status{State: "success", Context: "imagegen/g/c0"}); err != nil {
		t.Fatal(err)
	}
	if latest := s.LatestStatuses("octo/gens", sha); latest["imagegen/g/c0"].State != "success" || len(latest) != 3 {
		t.Errorf("LatestStatuses = %+v", latest)
	}

	// GitHub's own validation still answers, and a 422 is not retried.
	before := len(s.Calls())
	err := c.SetStatus(ctx, repo, sha, builds.Status{State: "done", Context: "imagegen/g/c"})
	if err == nil || !strings.Contains(err.Error(), "422") || github.IsTransient(err) {
		t.Errorf("bad state: %v; want a permanent 422", err)
	}
	if n := len(s.Calls()) - before; n != 1 {
		t.Errorf("bad state: %d calls, want 1", n)
	}
}

func TestCheckRuns(t *testing.T) {
	s := githubtest.NewServer(t)
	c := newClient(t, s.AppConfig(t), 42, github.Options{})
	ctx := context.Background()
	started := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	id, err := c.CreateCheckRun(ctx, repo, builds.CheckRun{
		Name: "imagegen: dstat", HeadSHA: sha, Status: github.CheckInProgress,
		Title: "Building on 2 clouds", Summary: "queued", ExternalID: "b-1",
		DetailsURL: "https://imagegen.example/builds/b-1", StartedAt: started,
	})
	if err != nil {
		t.Fatalf("CreateCheckRun: %v", err)
	}
	runs := s.CheckRuns("octo/gens")
	if len(runs) != 1 || runs[0].ID != id || runs[0].Status != "in_progress" || !runs[0].StartedAt.Equal(started) || runs[0].ExternalID != "b-1" {
		t.Fatalf("after create: %+v (id %d)", runs, id)
	}

	big := strings.Repeat("| image | ✓ |\n", 6000) // 84000 bytes, 72000 characters
	if err := c.UpdateCheckRun(ctx, repo, id, builds.CheckRun{
		Conclusion: github.ConclusionSuccess, Title: "2 images", Summary: big, Text: big,
	}); err != nil {
		t.Fatalf("UpdateCheckRun: %v", err)
	}
	run := s.CheckRuns("octo/gens")[0]
	if run.Name != "imagegen: dstat" {
		t.Errorf("name after an update without one = %q; the run was renamed", run.Name)
	}
	if run.Status != "completed" || run.Conclusion != "success" || run.CompletedAt.IsZero() {
		t.Errorf("after update: status %q conclusion %q completed %v", run.Status, run.Conclusion, run.CompletedAt)
	}
	for name, v := range map[string]string{"summary": run.Summary, "text": run.Text} {
		if n := utf8.RuneCountInString(v); n > github.MaxOutput || !strings.Contains(v, "truncated") || !strings.HasPrefix(v, "| image | ✓ |\n") || !utf8.ValidString(v) {
			t.Errorf("%s: %d characters, valid %v, tail %q", name, n, utf8.ValidString(v), v[max(0, len(v)-80):])
		}
	}

	// GitHub's validation is real: an unknown conclusion is a permanent 422.
	err = c.UpdateCheckRun(ctx, repo, id, builds.CheckRun{Name: "imagegen: dstat", Conclusion: "great"})
	if err == nil || !strings.Contains(err.Error(), "422") {
		t.Errorf("bad conclusion: %v, want 422", err)
	}
	err = c.UpdateCheckRun(ctx, repo, 999999, builds.CheckRun{Name: "x", Status: github.CheckInProgress})
	if !github.IsNotFound(err) {
		t.Errorf("update of a missing run: %v, want not found", err)
	}
}

func TestTruncateOutput(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"ascii", strings.Repeat("a", 70000)},
		{"multibyte at the cut", strings.Repeat("日本語", 30000)},
		{"exactly the limit", strings.Repeat("a", github.MaxOutput)},
		{"short", "fine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := github.TruncateOutput(tt.in)
			if len(tt.in) <= github.MaxOutput {
				if got != tt.in {
					t.Fatalf("changed a value under the limit")
				}
				return
			}
			if len(got) > github.MaxOutput || !utf8.ValidString(got) || !strings.Contains(got, "truncated") {
				t.Fatalf("len %d, valid %v, tail %q", len(got), utf8.ValidString(got), got[len(got)-60:])
			}
			kept := strings.Index(got, "\n\n… (truncated")
			if !strings.HasPrefix(tt.in, got[:kept]) {
				t.Fatalf("the kept part is not a prefix of the input")
			}
		})
	}
}

func TestChangedFiles(t *testing.T) {
	s := githubtest.NewServer(t)
	c := newClient(t, s.TokenConfig(), 0, github.Options{})
	ctx := context.Background()
	names := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(".imagegen/g%03d.yaml", i))
		}
		return out
	}
	const r = "octo/gens"
	s.SetChanged(r, "a1", "b1", []string{"README.md", ".imagegen/web.yaml"})
	s.SetRenamed(r, "a1", "b1", ".imagegen/old.yaml", ".imagegen/new.yaml")
	s.SetChanged(r, "a2", "b2", names(40))
	s.SetCommitCount(r, "a2", "b2", 250)
	s.SetChanged(r, "a3", "b3", names(301))

	tests := []struct {
		name      string
		base      string
		head      string
		want      []string
		wantPages int
		wantErr   error
	}{
		{"renames name both paths", "a1", "b1", []string{".imagegen/new.yaml", ".imagegen/old.yaml", ".imagegen/web.yaml", "README.md"}, 1, nil},
		{"many commits, every page", "a2", "b2", names(40), 3, nil},
		{"over GitHub's cap", "a3", "b3", names(300), 1, github.ErrTooManyFiles},
		{"over GitHub's cap: the core's error", "a3", "b3", names(300), 1, builds.ErrChangesCut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.Calls())
			got, err := c.ChangedFiles(ctx, repo, tt.base, tt.head)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ChangedFiles error = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ChangedFiles = %d files %q..., want %d", len(got), got[:min(3, len(got))], len(tt.want))
			}
			if pages := len(s.Calls()) - before; pages != tt.wantPages {
				t.Errorf("%d compare pages fetched, want %d", pages, tt.wantPages)
			}
		})
	}

	if _, err := c.ChangedFiles(ctx, repo, strings.Repeat("0", 40), "b1"); !errors.Is(err, github.ErrNoBase) {
		t.Errorf("zero base: %v, want ErrNoBase", err)
	}
	if _, err := c.ChangedFiles(ctx, repo, "a1", "zzz"); !github.IsNotFound(err) {
		t.Errorf("unknown comparison: %v, want not found", err)
	}
}

func TestRetries(t *testing.T) {
	status := builds.Status{State: "pending", Context: "imagegen/g/c"}
	tests := []struct {
		name      string
		fail      func(s *githubtest.Server)
		wantCalls int // calls to the statuses endpoint
		minWait   time.Duration
		wantErr   string
		transient bool
	}{
		{
			name:      "503 three times then success",
			fail:      func(s *githubtest.Server) { s.FailNext("POST", "/repos/", 503, 3, nil) },
			wantCalls: 4,
		},
		{
			name: "429 with Retry-After",
			fail: func(s *githubtest.Server) {
				s.FailNext("POST", "/repos/", 429, 1, map[string]string{"Retry-After": "1"})
			},
			wantCalls: 2, minWait: time.Second,
		},
		{
			name: "403 secondary rate limit",
			fail: func(s *githubtest.Server) {
				s.FailNext("POST", "/repos/", 403, 1, map[string]string{"Retry-After": "1"})
			},
			wantCalls: 2, minWait: 900 * time.Millisecond,
		},
		{
			name: "primary rate limit resets soon",
			fail: func(s *githubtest.Server) {
				s.FailNext("POST", "/repos/", 403, 1, githubtest.RateLimitHeaders(time.Now().Add(time.Second)))
			},
			wantCalls: 2,
		},
		{
			name: "primary rate limit as 429",
			fail: func(s *githubtest.Server) {
				s.FailNext("POST", "/repos/", 429, 1, githubtest.RateLimitHeaders(time.Now().Add(time.Second)))
			},
			wantCalls: 2,
		},
		{
			name: "primary rate limit resets too late",
			fail: func(s *githubtest.Server) {
				s.FailNext("POST", "/repos/", 403, 1, githubtest.RateLimitHeaders(time.Now().Add(time.Hour)))
			},
			wantCalls: 1, wantErr: "rate limit is exhausted until", transient: true,
		},
		{
			name:      "503 forever",
			fail:      func(s *githubtest.Server) { s.FailNext("POST", "/repos/", 503, 100, nil) },
			wantCalls: fastRetry.Attempts, wantErr: "gave up after 4 tries", transient: true,
		},
		{
			name:      "404 is permanent",
			fail:      func(s *githubtest.Server) { s.FailNext("POST", "/repos/", 404, 1, nil) },
			wantCalls: 1, wantErr: "not found",
		},
		{
			name:      "token exchange 502 then success",
			fail:      func(s *githubtest.Server) { s.FailNext("POST", "/app/", 502, 2, nil) },
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // most of the time is spent waiting out Retry-After
			s := githubtest.NewServer(t)
			cfg := s.AppConfig(t)
			tt.fail(s)
			start := time.Now()
			c := newClient(t, cfg, 42, github.Options{MaxRateLimitWait: time.Minute})
			err := c.SetStatus(context.Background(), repo, sha, status)
			elapsed := time.Since(start)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("SetStatus: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("SetStatus error = %v, want %q", err, tt.wantErr)
			case tt.wantErr != "" && github.IsTransient(err) != tt.transient:
				t.Fatalf("IsTransient(%v) = %v, want %v", err, !tt.transient, tt.transient)
			}
			if n := len(callsTo(s, http.MethodPost, "/repos/")); n != tt.wantCalls {
				t.Errorf("%d status calls, want %d", n, tt.wantCalls)
			}
			if elapsed < tt.minWait {
				t.Errorf("took %v, want at least %v (Retry-After honoured)", elapsed, tt.minWait)
			}
			if err == nil && len(s.Statuses("octo/gens", sha)) != 1 {
				t.Errorf("status not recorded after retries")
			}
		})
	}
}

func TestRetryStopsAtDeadline(t *testing.T) {
	s := githubtest.NewServer(t)
	c := newClient(t, s.TokenConfig(), 0, github.Options{})
	s.FailNext("POST", "/repos/", 429, 1, map[string]string{"Retry-After": "30"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/g/c"})
	if err == nil || !strings.Contains(err.Error(), "deadline") || !github.IsTransient(err) {
		t.Fatalf("SetStatus = %v; want a transient error about the deadline", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("waited %v for a retry that could not fit the deadline", time.Since(start))
	}
}

func TestEnterprisePrefix(t *testing.T) {
	s := githubtest.NewServer(t)
	s.SetFile("octo/gens", sha, ".imagegen/a.yaml", []byte("name: a\n"))
	cfg := s.AppConfig(t)
	cfg.APIURL = s.URL() + "api/v3/"
	c := newClient(t, cfg, 42, github.Options{})
	ctx := context.Background()
	if _, err := fs.ReadFile(c.FS(ctx, repo, sha), ".imagegen/a.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/a/x"}); err != nil {
		t.Fatal(err)
	}
	calls := s.Calls()
	if len(calls) != 4 {
		t.Fatalf("%d calls, want 4 (token, contents of .imagegen and of the file, status)", len(calls))
	}
	for _, c := range calls {
		if c.Prefix != "/api/v3" {
			t.Errorf("%s %s came without the /api/v3 prefix", c.Method, c.Path)
		}
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	s := githubtest.NewServer(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	var errs []string

	app := s.AppConfig(t)
	tok := s.TokenConfig()
	for _, cfg := range []config.GitHub{app, tok} {
		// Retries log; errors carry messages: both must stay clean.
		s.FailNext("", "/", 503, 2, nil)
		s.FailNext("POST", "/repos/", 429, 1, map[string]string{"Retry-After": "0"})
		c := newClient(t, cfg, 42, github.Options{Logger: log})
		if err := c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/g/c"}); err != nil {
			t.Fatal(err)
		}
		s.FailNext("POST", "/repos/", 401, 1, nil)
		err := c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/g/c"})
		if err == nil {
			t.Fatal("a 401 was not reported")
		}
		errs = append(errs, err.Error())
	}
	f, _ := github.New(app, github.Options{Logger: log, Retry: fastRetry})
	s.FailNext("POST", "/app/", 401, 1, nil)
	if _, err := f.Client(ctx, 9); err == nil {
		t.Fatal("a failed token exchange was not reported")
	} else {
		errs = append(errs, err.Error())
	}

	if !strings.Contains(logs.String(), "retrying") {
		t.Fatalf("no retry was logged; the test would prove nothing: %s", logs.String())
	}
	secrets := map[string]string{"token": tok.Token.Reveal()}
	for i, it := range s.InstallationTokens() {
		secrets["installation token "+string(rune('0'+i))] = it
	}
	for i, line := range strings.Split(app.PrivateKey.Reveal(), "\n") {
		if len(line) > 20 {
			secrets["key line "+string(rune('0'+i%10))] = line
		}
	}
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets to look for", len(secrets))
	}
	out := logs.String() + strings.Join(errs, "\n")
	for what, v := range secrets {
		if strings.Contains(out, v) {
			t.Errorf("the %s appears in a log line or error", what)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s := githubtest.NewServer(t)
	f, err := github.New(s.AppConfig(t), github.Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	s.SetFile("octo/gens", sha, ".imagegen/a.yaml", []byte("name: a\n"))
	ctx := context.Background()
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			c, err := f.Client(ctx, int64(1+i%2))
			if err == nil {
				_, err = fs.ReadFile(c.FS(ctx, repo, sha), ".imagegen/a.yaml")
			}
			if err == nil {
				err = c.SetStatus(ctx, repo, sha, builds.Status{State: "pending", Context: "imagegen/a/c" + string(rune('a'+i))})
			}
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(s.LatestStatuses("octo/gens", sha)); n != 16 {
		t.Errorf("%d statuses, want 16", n)
	}
	// The same client (and token) serves later calls for each installation.
	c1, _ := f.Client(ctx, 1)
	c1b, _ := f.Client(ctx, 1)
	if c1 != c1b {
		t.Error("Client(1) is not cached")
	}
}

func TestKeyFormats(t *testing.T) {
	s := githubtest.NewServer(t)
	app := s.AppConfig(t)
	block, _ := pem.Decode([]byte(app.PrivateKey.Reveal()))
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
	_, edKey, _ := ed25519.GenerateKey(nil)
	ed, _ := x509.MarshalPKCS8PrivateKey(edKey)
	tests := []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"PKCS #1", []byte(app.PrivateKey.Reveal()), ""},
		{"PKCS #8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), ""},
		{"ed25519", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ed}), "use RSA"},
		{"not PEM", []byte("ghp_notakey"), "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app
			cfg.PrivateKey = secret.New(string(tt.pem))
			f, err := github.New(cfg, github.Options{Retry: fastRetry})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), cfg.PrivateKeyFile) {
					t.Fatalf("New = %v, want an error with %q naming the key file", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Client(context.Background(), 3); err != nil {
				t.Fatalf("Client: %v", err)
			}
		})
	}
}

func TestTransportErrors(t *testing.T) {
	// A TLS server whose certificate the client does not trust: permanent.
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshake is expected
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	// A port nothing listens on any more: transient, retried.
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL + "/"
	closed.Close()

	tests := []struct {
		name      string
		api       string
		wantTries int
		transient bool
		want      string
	}{
		{"untrusted certificate", tlsSrv.URL + "/", 1, false, "TLS certificate"},
		{"connection refused", closedURL, fastRetry.Attempts, true, "gave up after 4 tries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := config.GitHub{Token: secret.New("ghp_transport_test"), APIURL: tt.api}
			c := newClient(t, cfg, 0, github.Options{Logger: log})
			err := c.SetStatus(context.Background(), repo, sha, builds.Status{State: "pending", Context: "imagegen/g/c"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || github.IsTransient(err) != tt.transient {
				t.Fatalf("SetStatus = %v (transient %v); want %q, transient %v", err, github.IsTransient(err), tt.want, tt.transient)
			}
			if retries := strings.Count(logs.String(), "retrying"); retries != tt.wantTries-1 {
				t.Errorf("%d retries logged, want %d", retries, tt.wantTries-1)
			}
		})
	}
}

func TestInstallationTokenRefresh(t *testing.T) {
	tests := []struct {
		name       string
		lifetime   time.Duration
		wantTokens int // token exchanges for Client and three calls
	}{
		{"valid for an hour: fetched once", time.Hour, 1},
		{"about to expire: fetched again for each call", 30 * time.Second, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := githubtest.NewServer(t)
			s.SetTokenLifetime(tt.lifetime)
			c := newClient(t, s.AppConfig(t), 42, github.Options{})
			for range 3 {
				if err := c.SetStatus(context.Background(), repo, sha, builds.Status{State: "pending", Context: "imagegen/g/c"}); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(callsTo(s, http.MethodPost, "/app/installations/42/")); n != tt.wantTokens {
				t.Errorf("%d token exchanges, want %d", n, tt.wantTokens)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	b := github.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	for n, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %s; want %s", n, got, want)
		}
	}
	if got := (github.Backoff{}).Delay(3); got != 100*time.Millisecond {
		t.Errorf("zero Backoff: Delay(3) = %s; want 100ms (no growth below factor 1)", got)
	}
}
