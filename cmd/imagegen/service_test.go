package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// helperEnv makes the test binary act as imagegen (serve or worker) with the
// simulated cloud registered, so the two-process test runs real processes
// without depending on which drivers the release binary registers.
const helperEnv = "IMAGEGEN_TEST_HELPER"

func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookup: os.LookupEnv}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(ctx, e, args[1:], reg)
	case "worker":
		err = workerCmd(ctx, e, args[1:], reg)
	default:
		err = fmt.Errorf("helper: unknown command %q", args[0])
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type proc struct {
	cmd  *exec.Cmd
	out  *servicetest.Buffer
	done chan error
}

func startHelper(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	p := &proc{cmd: cmd, out: &servicetest.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T, name string) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", name, err)
		}
		p.done <- err // for the cleanup
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", name)
	}
	if !strings.Contains(p.out.String(), `"msg":"stopped"`) {
		t.Errorf("%s did not log a clean stop", name)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeAndWorkerProcesses runs `serve --no-worker` and `worker` as two
// processes on one Redis: a signed octokit push is built by the worker and
// reported to the fake GitHub; then `imagegen rerun` brings a password to a
// password: ask cloud, which only works because both share encryption_key.
func TestServeAndWorkerProcesses(t *testing.T) {
	const (
		secret   = "whsec-two-processes-0123456789"
		token    = "api-token-two-processes-0123456789"
		password = "s3cret-cloud-password-for-test"
		repo     = "Codertocat/Hello-World"
	)
	rd := servicetest.StartRedis(t)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr, serveMetrics := freeAddr(t), freeAddr(t)
	base := "http://" + addr
	cfg := fmt.Sprintf(`listen: %s
metrics_listen: %s
redis: %s
github:
  app_id: %d
  private_key_file: %s
  webhook_secret: %s
  api_url: %s
api_tokens: ["${TEST_API_TOKEN}"]
encryption_key: %s
build: {timeout: 1m, cleanup_timeout: 10s, concurrency: 4}
clouds:
  sim-a: {type: simulated, launch_delay: 20ms, snapshot_delay: 20ms}
  locked: {type: simulated, launch_delay: 10ms, password: ask}
`, addr, serveMetrics, rd.URL, app.AppID, app.PrivateKeyFile, secret, gh.URL(), strings.Repeat("5a", 32))
	file := filepath.Join(t.TempDir(), "imagegen.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_API_TOKEN", token)

	srv := startHelper(t, "serve", "--no-worker", "--config", file)
	metricsAddr := freeAddr(t)
	wrk := startHelper(t, "worker", "--config", file, "--metrics-listen", metricsAddr)
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	push := githubtest.Example(t, "push", func(m map[string]any) bool {
		return m["ref"] == "refs/heads/master" && m["created"] == true && m["installation"] != nil
	})
	sha := "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
	if !bytes.Contains(push, []byte(sha)) {
		t.Fatalf("the octokit push example no longer pushes %s", sha)
	}
	gh.SetFile(repo, sha, ".imagegen/hello.yaml", []byte("script: echo hi\nclouds:\n  sim-a: {image: debian-12, ssh_user: debian}\n  locked: {image: rocky-9, ssh_user: rocky}\n"))
	resp := githubtest.Delivery(t, base+"/webhook", "push", "two-proc-1", []byte(secret), push)
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	var build string
	waitFor(t, "the check run to complete", func() bool {
		for _, cr := range gh.CheckRuns(repo) {
			if cr.Name == "imagegen: hello" && cr.Status == "completed" {
				build = cr.ExternalID
				return true
			}
		}
		return false
	})
	st := gh.LatestStatuses(repo, sha)
	if st["imagegen/hello/sim-a"].State != "success" || st["imagegen/hello/locked"].State != "pending" ||
		!strings.Contains(st["imagegen/hello/locked"].Description, "needs password") {
		t.Fatalf("statuses after the push: %+v", st)
	}

	// imagegen rerun, with the password on stdin (not a terminal).
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(password + "\n"), stdout: &out, stderr: &errOut,
		lookup: func(k string) (string, bool) {
			if k == "IMAGEGEN_API_TOKEN" {
				return token, true
			}
			return "", false
		}}
	if code := run(context.Background(), e, []string{"rerun", "--server", base, "--cloud", "locked", build}); code != 0 {
		t.Fatalf("imagegen rerun: exit %d: %s", code, errOut.String())
	}
	nb := strings.TrimSpace(out.String())
	if nb == "" || nb == build {
		t.Fatalf("rerun printed %q", nb)
	}
	waitFor(t, "the locked cloud to succeed", func() bool {
		return gh.LatestStatuses(repo, sha)["imagegen/hello/locked"].State == "success"
	})

	code, m := httpGet(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`imagegen_builds_total{cloud="sim-a",state="succeeded"} 1`, `imagegen_builds_total{cloud="locked",state="succeeded"} 1`} {
		if code != 200 || !strings.Contains(m, want) {
			t.Errorf("the worker's metrics (%d) lack %s", code, want)
		}
	}
	// serve's metrics_listen: /metrics there without a token, and none on
	// the main listener; the API's reads need the token (read_access: token).
	for _, c := range []struct {
		url  string
		code int
		want string
	}{
		{"http://" + serveMetrics + "/metrics", 200, `imagegen_webhook_deliveries_total{event="push",outcome="accepted"} 1`},
		{"http://" + serveMetrics + "/readyz", 200, "ready"},
		{base + "/metrics", 404, `{"error":"/metrics is served on metrics_listen, not here"}`},
		{base + "/api/v1/builds", 401, `{"error":"missing Authorization: Bearer TOKEN (this server's read_access is token)"}`},
	} {
		if code, body := httpGet(t, c.url); code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("GET %s: %d %q; want %d %q", c.url, code, body, c.code, c.want)
		}
	}

	srv.stop(t, "serve")
	wrk.stop(t, "worker")

	hits, types := rd.Find(t, password)
	if len(hits) > 0 {
		t.Errorf("the password is in Redis: %v", hits)
	}
	if types["hash"] == 0 {
		t.Errorf("scanned %v: no build records?", types)
	}
	for name, logs := range map[string]string{"serve": srv.out.String(), "worker": wrk.out.String(), "rerun": errOut.String()} {
		if strings.Contains(logs, password) {
			t.Errorf("%s's output holds the password", name)
		}
	}
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRerunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		msg  string
	}{
		{"no server", []string{"rerun", "b1"}, nil, 2, "usage: imagegen rerun"},
		{"no build", []string{"rerun", "--server", "http://127.0.0.1:1"}, nil, 2, "usage: imagegen rerun"},
		{"no token", []string{"rerun", "--server", "http://127.0.0.1:1", "b1"}, nil, 1, "set IMAGEGEN_API_TOKEN"},
		{"other token env", []string{"rerun", "--server", "http://127.0.0.1:1", "--token-env", "MY_TOKEN", "b1"}, nil, 1, "set MY_TOKEN"},
		{"bad server", []string{"rerun", "--server", "ftp://x", "b1"}, map[string]string{"IMAGEGEN_API_TOKEN": "t"}, 1, "not an http(s) URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
				v, ok := tc.env[k]
				return v, ok
			}}
			if code := run(context.Background(), e, tc.args); code != tc.code || !strings.Contains(errOut.String(), tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d containing %q", code, errOut.String(), tc.code, tc.msg)
			}
		})
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	noSecret := filepath.Join(dir, "nosecret.yaml")
	os.WriteFile(noSecret, []byte("github: {token: abc}\nclouds: {}\n"), 0o600)
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"no config", []string{"serve"}, "--config FILE is required"},
		{"empty webhook secret", []string{"serve", "--config", noSecret}, "webhook_secret is empty"},
		{"worker without secret", []string{"worker", "--config", noSecret}, "webhook_secret is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &errOut, lookup: func(string) (string, bool) { return "", false }}
			if code := run(context.Background(), e, tc.args); code != 1 || !strings.Contains(errOut.String(), tc.msg) {
				t.Errorf("exit %d, stderr %q; want 1 containing %q", code, errOut.String(), tc.msg)
			}
		})
	}
}

// TestWorkerSIGTERMRequeues: a worker stopped mid-build (SIGTERM) cancels the
// build, cleans up and exits; another worker then runs the build to success.
func TestWorkerSIGTERMRequeues(t *testing.T) {
	const (
		secret = "whsec-sigterm-0123456789"
		repo   = "Codertocat/Hello-World"
		sha    = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
	)
	rd := servicetest.StartRedis(t)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %s, webhook_secret: %s, api_url: %q}
build: {timeout: 1m, cleanup_timeout: 10s}
read_access: public # the record is read below without a token
clouds:
  slow: {type: simulated, launch_delay: 800ms}
`, addr, rd.URL, app.AppID, app.PrivateKeyFile, secret, gh.URL())
	file := filepath.Join(t.TempDir(), "imagegen.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startHelper(t, "serve", "--no-worker", "--config", file)
	first := startHelper(t, "worker", "--config", file)
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	gh.SetFile(repo, sha, ".imagegen/hello.yaml", []byte("script: echo hi\nclouds:\n  slow: {image: debian-12, ssh_user: debian}\n"))
	push := githubtest.Example(t, "push", func(m map[string]any) bool {
		return m["ref"] == "refs/heads/master" && m["created"] == true && m["installation"] != nil
	})
	if resp := githubtest.Delivery(t, "http://"+addr+"/webhook", "push", "sigterm-1", []byte(secret), push); resp.StatusCode != 202 {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	waitFor(t, "the build to be launching", func() bool {
		return strings.Contains(gh.LatestStatuses(repo, sha)["imagegen/hello/slow"].Description, "launching")
	})
	t0 := time.Now()
	first.stop(t, "first worker")
	t.Logf("first worker stopped in %s", time.Since(t0))
	if st := gh.LatestStatuses(repo, sha)["imagegen/hello/slow"]; st.State != "pending" {
		t.Fatalf("after the first worker stopped, the status is %+v; want still pending (to be retried)", st)
	}
	if !strings.Contains(first.out.String(), "interrupted by shutdown") {
		t.Errorf("the first worker did not say it interrupted the build")
	}
	second := startHelper(t, "worker", "--config", file)
	defer func(t1 time.Time) { t.Logf("second worker done in %s", time.Since(t1)) }(time.Now())
	waitFor(t, "the second worker to finish the build", func() bool {
		return gh.LatestStatuses(repo, sha)["imagegen/hello/slow"].State == "success"
	})
	var b struct {
		Clouds map[string]struct {
			Attempts int    `json:"attempts"`
			State    string `json:"state"`
		} `json:"clouds"`
	}
	var build string
	for _, cr := range gh.CheckRuns(repo) {
		build = cr.ExternalID
	}
	resp, err := http.Get("http://" + addr + "/api/v1/builds/" + build)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatal(err)
	}
	if c := b.Clouds["slow"]; c.State != "succeeded" || c.Attempts != 2 {
		t.Errorf("record %+v; want succeeded on the second attempt", c)
	}
	second.stop(t, "second worker")
	srv.stop(t, "serve")
}
