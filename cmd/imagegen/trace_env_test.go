package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// traceEnv is `imagegen serve` (HTTP and worker, in this process) on a real
// Redis, the fake GitHub and the given clouds, signing provenance with a
// fresh ed25519 key: what the traceability tests build on and then ask
// through the CLI, as a user would.
type traceEnv struct {
	t       *testing.T
	base    string // the server's URL
	cfgPath string
	keyFile string // the signing key (private, PKCS#8 PEM)
	gh      *githubtest.Server
	redis   *servicetest.Redis
	logs    *servicetest.Buffer
	delivs  int
}

const (
	traceRepo   = "Codertocat/Hello-World" // the octokit push examples' repository
	traceToken  = "api-token-trace-0123456789abcdef"
	traceSecret = "whsec-trace-0123456789abcdef"
)

// newKeyFile writes a fresh ed25519 key, PKCS#8 PEM, as
// `openssl genpkey -algorithm ed25519` makes it.
func newKeyFile(t *testing.T, name string) string {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// newTraceEnv starts serve with cloudsYAML as the config's clouds map.
func newTraceEnv(t *testing.T, cloudsYAML string, buildTimeout time.Duration) *traceEnv {
	t.Helper()
	e := &traceEnv{t: t, redis: servicetest.StartRedis(t), gh: githubtest.NewServer(t), logs: &servicetest.Buffer{}}
	e.keyFile = newKeyFile(t, "provenance.key")
	app := e.gh.AppConfig(t)
	addr := freeAddr(t)
	e.base = "http://" + addr
	cfg := fmt.Sprintf(`listen: %s
base_url: %s
redis: %s
github:
  app_id: %d
  private_key_file: %s
  webhook_secret: %s
  api_url: %s
api_tokens: [%s]
encryption_key: %s
build: {timeout: %s, cleanup_timeout: 1m, ssh_timeout: 3m, concurrency: 4}
provenance: {signing_key_file: %s}
clouds:
%s`, addr, e.base, e.redis.URL, app.AppID, app.PrivateKeyFile, traceSecret, e.gh.URL(), traceToken,
		strings.Repeat("3c", 32), buildTimeout, e.keyFile, cloudsYAML)
	e.cfgPath = filepath.Join(t.TempDir(), "imagegen.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		env := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: e.logs, lookup: func(string) (string, bool) { return "", false }}
		done <- serveCmd(ctx, env, []string{"--config", e.cfgPath}, registry())
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("serve's log:\n%s", e.logs.String())
		}
	})
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get(e.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return e
}

// push puts spec at sha and delivers a push of sha (after before) that
// changed it, and waits for the generator's check run on sha to succeed; it
// returns the build.
func (e *traceEnv) push(before, sha, spec string, wait time.Duration) *builds.Build {
	e.t.Helper()
	const file = ".imagegen/hello.yaml"
	e.gh.SetFile(traceRepo, sha, file, []byte(spec))
	c := githubtest.PushCommit{Message: "change the script"}
	if strings.Trim(before, "0") == "" {
		c.Added = []string{file}
	} else {
		c.Modified = []string{file}
	}
	body := githubtest.Push(e.t, githubtest.PushOptions{Before: before, After: sha, Commits: []githubtest.PushCommit{c}})
	e.delivs++
	resp := githubtest.Delivery(e.t, e.base+"/webhook", "push", fmt.Sprintf("trace-%d", e.delivs), []byte(traceSecret), body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		e.t.Fatalf("push %s: %d", sha, resp.StatusCode)
	}
	var run githubtest.CheckRun
	deadline := time.Now().Add(wait)
	for {
		found := false
		for _, cr := range e.gh.CheckRuns(traceRepo) {
			if cr.HeadSHA == sha && cr.Name == "imagegen: hello" && cr.Status == "completed" {
				run, found = cr, true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no completed check run on %s after %s", sha, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var b builds.Build
	e.getJSON("/api/v1/builds/"+run.ExternalID, &b)
	if run.Conclusion != "success" || b.State != "succeeded" {
		e.t.Fatalf("build of %s: check run %s, build %+v\n%s", sha, run.Conclusion, b, run.Text)
	}
	return &b
}

// get reads path with the API token; it returns the status and body.
func (e *traceEnv) get(path string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+traceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *traceEnv) getJSON(path string, v any) {
	e.t.Helper()
	code, b := e.get(path)
	if code != 200 {
		e.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
}

// cli runs an imagegen command as a user with the API token in the environment.
func (e *traceEnv) cli(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	env := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
		if k == "IMAGEGEN_API_TOKEN" {
			return traceToken, true
		}
		return "", false
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code = run(ctx, env, args)
	return code, out.String(), errOut.String()
}

// publicKey fetches the server's public key into a file, for verify --key.
func (e *traceEnv) publicKey() string {
	e.t.Helper()
	code, b := e.get("/api/v1/provenance/key")
	if code != 200 || !bytes.HasPrefix(b, []byte("-----BEGIN PUBLIC KEY-----")) {
		e.t.Fatalf("GET /api/v1/provenance/key: %d %s", code, b)
	}
	p := filepath.Join(e.t.TempDir(), "provenance.pub")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// flushRedis forgets everything imagegen recorded, as a lost Redis would.
func (e *traceEnv) flushRedis() {
	e.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.redis.Addr})
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		e.t.Fatal(err)
	}
}

// wantOut fails the test unless the command's exit code is code and its
// stdout holds every fragment.
func wantOut(t *testing.T, what string, code int, stdout, stderr string, wantCode int, fragments ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, code, wantCode, stdout, stderr)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(stdout, f) {
			t.Errorf("%s: stdout lacks %q:\n%s\nstderr:\n%s", what, f, stdout, stderr)
		}
	}
}
