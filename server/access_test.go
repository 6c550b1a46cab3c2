package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// The tokens of the access tests: what each may do is in its name.
const (
	plainTok   = "plain-token-0123456789abcdef" // a plain string: read and rerun, every repository
	fgReadTok  = "fg-read-token-0123456789abcdef"
	fgRerunTok = "fg-rerun-token-0123456789abcdef"
	adminTok   = "admin-token-0123456789abcdef" // from a file
)

// accessEnv is the HTTP side alone on a real redis-server, with two builds:
// "bfg" in fg/images and "boc" in octo/images, each with a log line and an image.
type accessEnv struct {
	t    *testing.T
	http *httptest.Server
	logs *servicetest.Buffer
}

func newAccessEnv(t *testing.T, extra string) *accessEnv {
	t.Helper()
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	tokFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokFile, []byte(adminTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := configtest.Config(t, fmt.Sprintf(`redis: %s
github: {token: ghp_test0123456789, webhook_secret: %s}
api_tokens:
  - %s
  - {token: %s, scopes: [read], repos: ["fg/*"]}
  - {token: %s, scopes: [rerun], repos: ["fg/*"]}
  - {token_file: %s, scopes: [admin]}
trusted_proxies: [127.0.0.1]
clouds:
  sim-a: {type: simulated}
%s`, rd.URL, webhookSecret, plainTok, fgReadTok, fgRerunTok, tokFile, extra))
	logs := &servicetest.Buffer{}
	srv, d := newServer(t, cfg, rdb, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	st := d.Store.(*store.Store)
	now := time.Now().UTC()
	for id, repo := range map[string]string{"bfg": "fg/images", "boc": "octo/images"} {
		b := &builds.Build{ID: id, Repo: repo, Commit: strings.Repeat("a", 40), Generator: "g", Created: now,
			Clouds: map[string]*builds.CloudRecord{"sim-a": {Cloud: "sim-a", State: builder.StateFailed, Queued: now, Finished: now}}}
		ctx := context.Background()
		if _, err := st.Create(ctx, b, &spec.Spec{Name: "g", Script: "true", Clouds: map[string]spec.CloudSpec{"sim-a": {Image: "debian"}}}); err != nil {
			t.Fatal(err)
		}
		if err := st.AppendLog(ctx, id, "sim-a", builds.LogEntry{Time: now, Cloud: "sim-a", Stream: "stdout", Text: "log of " + id}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddImage(ctx, builds.LineageEntry{Build: id, Repo: repo, Generator: "g", Cloud: "sim-a", ImageID: "img-" + id, Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	e := &accessEnv{t: t, http: httptest.NewServer(srv.Handler()), logs: logs}
	t.Cleanup(e.http.Close)
	return e
}

// do sends method path as client (its X-Forwarded-For: the server trusts
// 127.0.0.1 as a proxy) with the Authorization header auth ("": none).
func (e *accessEnv) do(method, path, auth, client string) (int, string, http.Header) {
	e.t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"clouds": ["sim-a"]}`)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.http.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

type accessCase struct {
	method, path, token string // token "" sends none; "Basic ..." is sent as is
	code                int
	want                []string // in the body
	not                 []string // not in the body
}

func runAccessCases(t *testing.T, e *accessEnv, cases []accessCase) {
	t.Helper()
	for i, c := range cases {
		auth := ""
		switch {
		case strings.HasPrefix(c.token, "Basic "):
			auth = c.token
		case c.token != "":
			auth = "Bearer " + c.token
		}
		name := fmt.Sprintf("%s %s as %s", c.method, c.path, tokenName(c.token))
		t.Run(name, func(t *testing.T) {
			// Each case its own client address: the wrong tokens here stay
			// under the failure limit, which TestAPIFailureLimit checks.
			code, body, h := e.do(c.method, c.path, auth, fmt.Sprintf("198.51.100.%d", i+1))
			if code != c.code {
				t.Fatalf("%d, want %d: %s", code, c.code, body)
			}
			for _, w := range c.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q: %s", w, body)
				}
			}
			for _, n := range c.not {
				if strings.Contains(body, n) {
					t.Errorf("body holds %q: %s", n, body)
				}
			}
			if code == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}

func tokenName(tok string) string {
	switch tok {
	case "":
		return "anonymous"
	case plainTok:
		return "plain"
	case fgReadTok:
		return "fg-read"
	case fgRerunTok:
		return "fg-rerun"
	case adminTok:
		return "admin"
	}
	return "wrong"
}

const (
	msgNoToken   = `{"error":"missing Authorization: Bearer TOKEN (this server's read_access is token)"}`
	msgBadToken  = `{"error":"invalid token"}`
	msgNoBOC     = `{"error":"no build \"boc\" (builds are kept for 2160h0m0s)"}`
	msgNoRerun   = `{"error":"this token may not re-run builds: it lacks the rerun scope"}`
	msgNoLogs    = `{"error":"build logs need Authorization: Bearer TOKEN (public_logs is off)"}`
	msgNotBearer = `{"error":"the Authorization header must be: Bearer TOKEN"}`
)

// TestAPIAccessToken: read_access: token (the default). Every read needs a
// token; a token limited to fg/* finds none of octo's builds, images or
// logs; a re-run needs the rerun scope; /metrics needs a token on every
// repository.
func TestAPIAccessToken(t *testing.T) {
	e := newAccessEnv(t, "")
	const wrong = "wrong-token-0123456789abcdef"
	runAccessCases(t, e, []accessCase{
		{"GET", "/api/v1/builds", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/builds", wrong, 401, []string{msgBadToken}, nil},
		{"GET", "/api/v1/builds", "Basic dXNlcjpwYXNz", 401, []string{msgNotBearer}, nil},
		{"GET", "/api/v1/builds", plainTok, 200, []string{`"id":"bfg"`, `"id":"boc"`}, nil},
		{"GET", "/api/v1/builds", fgReadTok, 200, []string{`"id":"bfg"`}, []string{"boc", "octo"}},
		{"GET", "/api/v1/builds?repo=octo/images", fgReadTok, 200, []string{`{"builds":[]}`}, nil},
		{"GET", "/api/v1/builds/bfg", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/builds/bfg", fgReadTok, 200, []string{`"repo":"fg/images"`}, nil},
		{"GET", "/api/v1/builds/boc", fgReadTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/builds/boc", fgRerunTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/builds/boc", plainTok, 200, []string{`"repo":"octo/images"`}, nil},
		{"GET", "/api/v1/builds/boc", adminTok, 200, []string{`"repo":"octo/images"`}, nil},
		{"GET", "/api/v1/builds/bfg/log?cloud=sim-a", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/builds/bfg/log?cloud=sim-a", fgReadTok, 200, []string{"[stdout] log of bfg"}, nil},
		{"GET", "/api/v1/builds/boc/log?cloud=sim-a", fgReadTok, 404, []string{msgNoBOC}, []string{"log of"}},
		{"GET", "/api/v1/builds/boc/log?cloud=sim-a", plainTok, 200, []string{"log of boc"}, nil},
		{"GET", "/api/v1/images?repo=fg/images&generator=g", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/images?repo=fg/images&generator=g", fgReadTok, 200, []string{`"image_id":"img-bfg"`}, nil},
		{"GET", "/api/v1/images?repo=octo/images&generator=g", fgReadTok, 200, []string{`"images":[]`}, []string{"img-boc"}},
		{"GET", "/api/v1/images?repo=octo/images&generator=g", plainTok, 200, []string{`"image_id":"img-boc"`}, nil},
		{"GET", "/metrics", "", 401, []string{`{"error":"missing Authorization: Bearer TOKEN (this server's read_access is token; or set metrics_listen)"}`}, nil},
		{"GET", "/metrics", fgReadTok, 403, []string{`{"error":"/metrics counts every repository's builds: use a token without repos"}`}, nil},
		{"GET", "/metrics", plainTok, 200, []string{"imagegen_queue_depth"}, nil},
		{"GET", "/healthz", "", 200, []string{"ok"}, nil},
		{"GET", "/readyz", "", 200, []string{"ready"}, nil},
		{"POST", "/api/v1/builds/bfg/rerun", "", 401, []string{`{"error":"missing Authorization: Bearer TOKEN"}`}, nil},
		{"POST", "/api/v1/builds/bfg/rerun", wrong, 401, []string{msgBadToken}, nil},
		{"POST", "/api/v1/builds/bfg/rerun", fgReadTok, 403, []string{msgNoRerun}, nil},
		{"POST", "/api/v1/builds/boc/rerun", fgReadTok, 403, []string{msgNoRerun}, nil},
		{"POST", "/api/v1/builds/boc/rerun", fgRerunTok, 404, []string{msgNoBOC}, nil},
		{"POST", "/api/v1/builds/bfg/rerun", fgRerunTok, 202, []string{`"build":`}, nil},
		{"POST", "/api/v1/builds/boc/rerun", plainTok, 202, []string{`"build":`}, nil},
		{"POST", "/api/v1/builds/boc/rerun", adminTok, 202, []string{`"build":`}, nil},
	})
}

// TestAPIAccessPublic: read_access: public opens builds, lineage and
// /metrics; logs still need a token unless public_logs; re-runs need one.
func TestAPIAccessPublic(t *testing.T) {
	t.Run("without public_logs", func(t *testing.T) {
		e := newAccessEnv(t, "read_access: public\n")
		runAccessCases(t, e, []accessCase{
			{"GET", "/api/v1/builds", "", 200, []string{`"id":"bfg"`, `"id":"boc"`}, nil},
			{"GET", "/api/v1/builds", fgReadTok, 200, []string{`"id":"bfg"`, `"id":"boc"`}, nil},
			{"GET", "/api/v1/builds", "wrong-token-0123456789abcdef", 401, []string{msgBadToken}, nil},
			{"GET", "/api/v1/builds/boc", "", 200, []string{`"repo":"octo/images"`}, nil},
			{"GET", "/api/v1/images?repo=octo/images&generator=g", "", 200, []string{"img-boc"}, nil},
			{"GET", "/metrics", "", 200, []string{"imagegen_queue_depth"}, nil},
			{"GET", "/api/v1/builds/bfg/log?cloud=sim-a", "", 401, []string{msgNoLogs}, []string{"log of"}},
			{"GET", "/api/v1/builds/bfg/log?cloud=sim-a", fgReadTok, 200, []string{"log of bfg"}, nil},
			{"GET", "/api/v1/builds/boc/log?cloud=sim-a", fgReadTok, 403, []string{`{"error":"this token may not read the build logs of octo/images"}`}, []string{"log of"}},
			{"GET", "/api/v1/builds/boc/log?cloud=sim-a", plainTok, 200, []string{"log of boc"}, nil},
			{"POST", "/api/v1/builds/bfg/rerun", "", 401, []string{`{"error":"missing Authorization: Bearer TOKEN"}`}, nil},
			{"POST", "/api/v1/builds/bfg/rerun", fgReadTok, 403, []string{msgNoRerun}, nil},
		})
	})
	t.Run("with public_logs", func(t *testing.T) {
		e := newAccessEnv(t, "read_access: public\npublic_logs: true\n")
		runAccessCases(t, e, []accessCase{
			{"GET", "/api/v1/builds/boc/log?cloud=sim-a", "", 200, []string{"log of boc"}, nil},
			{"GET", "/api/v1/builds/boc/log?cloud=sim-a", fgReadTok, 200, []string{"log of boc"}, nil},
			{"POST", "/api/v1/builds/boc/rerun", "", 401, []string{`{"error":"missing Authorization: Bearer TOKEN"}`}, nil},
		})
	})
}

// TestAPIFailureLimit: 300 wrong tokens from one address get 10 answers of
// 401 and then 429 with Retry-After, the right token too, while another
// address goes on; X-Forwarded-For counts only from a trusted proxy. The
// log names the address, never the token.
func TestAPIFailureLimit(t *testing.T) {
	e := newAccessEnv(t, "")
	const wrong = "wrong-token-for-the-limit-0123456789"
	counts := map[int]int{}
	start := time.Now()
	var retry string
	var body429 string
	for range 300 {
		code, body, h := e.do("GET", "/api/v1/builds", "Bearer "+wrong, "203.0.113.9")
		counts[code]++
		if code == http.StatusTooManyRequests {
			retry, body429 = h.Get("Retry-After"), body
		}
	}
	t.Logf("300 wrong tokens in %s", time.Since(start))
	if counts[401] != 10 || counts[429] != 290 {
		t.Errorf("answers %v; want 10 × 401 and 290 × 429", counts)
	}
	if retry == "" || retry == "0" {
		t.Errorf("Retry-After %q", retry)
	}
	if want := `{"error":"too many failed authentications from this address: retry in ` + retry + ` s"}`; strings.TrimSpace(body429) != want {
		t.Errorf("429 body %s, want %s", body429, want)
	}
	if code, _, _ := e.do("GET", "/api/v1/builds", "Bearer "+plainTok, "203.0.113.9"); code != http.StatusTooManyRequests {
		t.Errorf("the right token from the limited address: %d, want 429", code)
	}
	if code, _, _ := e.do("POST", "/api/v1/builds/bfg/rerun", "Bearer "+plainTok, "203.0.113.9"); code != http.StatusTooManyRequests {
		t.Errorf("a re-run from the limited address: %d, want 429", code)
	}
	if code, _, _ := e.do("GET", "/api/v1/builds", "Bearer "+plainTok, "203.0.113.10"); code != http.StatusOK {
		t.Errorf("another address: %d, want 200", code)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"msg":"authentication failed","client":"203.0.113.9","where":"api GET /api/v1/builds"`) {
		t.Errorf("the log does not name the address:\n%.2000s", logs)
	}
	if n := strings.Count(logs, `"msg":"authentication failed"`); n != 10 {
		t.Errorf("%d failures logged, want 10 (refusals are not checked, so not logged as failures)", n)
	}
	if strings.Contains(logs, wrong) || strings.Contains(logs, plainTok) {
		t.Error("the log holds a token")
	}
}

// TestAPIFailureLimitIgnoresForgedForwardedFor: without trusted_proxies,
// X-Forwarded-For is anyone's to write, so changing it gains nothing.
func TestAPIFailureLimitIgnoresForgedForwardedFor(t *testing.T) {
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := configtest.Config(t, fmt.Sprintf("redis: %s\ngithub: {token: ghp_test0123456789, webhook_secret: %s}\napi_tokens: [%s]\n", rd.URL, webhookSecret, plainTok))
	srv, _ := newServer(t, cfg, rdb, nil, nil)
	e := &accessEnv{t: t, http: httptest.NewServer(srv.Handler())}
	defer e.http.Close()
	counts := map[int]int{}
	for i := range 30 {
		code, _, _ := e.do("GET", "/api/v1/builds", "Bearer wrong-token-0123456789abcdef", fmt.Sprintf("192.0.2.%d", i+1))
		counts[code]++
	}
	if counts[401] != 10 || counts[429] != 20 {
		t.Errorf("answers %v; want 10 × 401, then 429 whatever X-Forwarded-For says", counts)
	}
}
