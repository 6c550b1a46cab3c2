package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/store"
)

const (
	webhookSecret = "whsec-test-0123456789abcdef"
	apiToken      = "api-token-0123456789abcdef0123"
	exampleRepo   = "Codertocat/Hello-World" // the octokit push examples' repository
)

// testEnv is one imagegen service (HTTP + optional worker) against a real
// redis-server and the fake GitHub.
type testEnv struct {
	t      *testing.T
	redis  *servicetest.Redis
	rdb    *redis.Client
	gh     *githubtest.Server
	cfg    *config.Config
	store  *store.Store
	queue  *queue.Client
	http   *httptest.Server
	logs   *servicetest.Buffer
	worker *queue.Worker
	// deliveries is what the worker does with a delivery task, for tests
	// that play the worker.
	deliveries *builds.Deliveries
}

type envOptions struct {
	noWorker bool
	token    bool   // GitHub token mode instead of the App
	clouds   string // YAML of the clouds map; default: two simulated clouds
	github   string // YAML lines added to the github section ("  allow_repos: [...]\n")
	extra    string // YAML of top-level keys added to the config
}

const defaultClouds = `
  sim-a: {type: simulated, launch_delay: 20ms, ssh_delay: 10ms, snapshot_delay: 20ms}
  sim-b: {type: simulated, launch_delay: 30ms, snapshot_delay: 10ms}
  locked: {type: simulated, launch_delay: 10ms, password: ask}
`

func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	e := &testEnv{t: t, redis: servicetest.StartRedis(t), gh: githubtest.NewServer(t), logs: &servicetest.Buffer{}}
	// Few retries: TestHealth stops Redis and wants a quick answer.
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redis.Addr, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { e.rdb.Close() })
	if o.clouds == "" {
		o.clouds = defaultClouds
	}
	var gh string
	if o.token {
		gh = fmt.Sprintf("  token: %s\n", e.gh.TokenConfig().Token.Reveal())
	} else {
		ac := e.gh.AppConfig(t)
		gh = fmt.Sprintf("  app_id: %d\n  private_key_file: %s\n", ac.AppID, ac.PrivateKeyFile)
	}
	yml := fmt.Sprintf(`listen: 127.0.0.1:0
base_url: https://imagegen.example.org
redis: %s
github:
%s%s  webhook_secret: %s
  api_url: %s
api_tokens: [%s]
encryption_key: %s
build: {timeout: 1m, cleanup_timeout: 20s, concurrency: 4, log_limit: 4096}
%s
clouds:%s`, e.redis.URL, gh, o.github, webhookSecret, e.gh.URL(), apiToken, strings.Repeat("ab", 32), o.extra, o.clouds)
	cfg := configtest.Config(t, yml)
	e.cfg = cfg
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	promReg := prometheus.NewRegistry()
	srv, d := newServer(t, cfg, e.rdb, log, promReg)
	e.store, e.queue = d.Store.(*store.Store), d.Queue.(*queue.Client)
	// The worker's side, as cmd/imagegen wires it.
	f, err := github.New(cfg.GitHub, github.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	d.GitHub = f
	d.Metrics = builds.NewMetrics(promReg)
	e.deliveries = builds.NewDeliveries(github.ParseDelivery, builds.NewPlanner(d), builds.NewReruns(d))
	e.http = httptest.NewServer(srv.Handler())
	t.Cleanup(e.http.Close)
	if !o.noWorker {
		e.worker, err = queue.NewWorker(queue.WorkerOptions{Config: cfg, Redis: e.rdb, Logger: log,
			Deliveries: e.deliveries, Runner: builds.NewRunner(d), Sweeper: builds.NewSweeper(d, e.queue)})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.worker.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.worker.Shutdown)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs:\n%s", e.logs.String())
		}
	})
	return e
}

// newServer is the HTTP side as cmd/imagegen wires it (serve --no-worker),
// on rdb; it returns the server and the Deps the core was given, to which a
// test adds the worker's side.
func newServer(tb testing.TB, cfg *config.Config, rdb redis.UniversalClient, log *slog.Logger, reg *prometheus.Registry) (*server.Server, builds.Deps) {
	tb.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	qc, err := queue.NewClient(rdb, cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: st, Queue: qc, Logger: log}
	srv, err := server.New(server.Options{Config: cfg, Store: st, Queue: qc, Reruns: builds.NewReruns(d), Logger: log, Registry: reg})
	if err != nil {
		tb.Fatal(err)
	}
	return srv, d
}

// spec puts a generator spec into the example repository at sha.
func (e *testEnv) spec(sha, file, body string) {
	e.gh.SetFile(exampleRepo, sha, file, []byte(body))
}

// deliver posts a signed delivery.
func (e *testEnv) deliver(event, id string, body []byte) (int, string) {
	e.t.Helper()
	resp := githubtest.Delivery(e.t, e.http.URL+"/webhook", event, id, []byte(webhookSecret), body)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pushExample is the octokit example of a push creating refs/heads/master,
// sent by a GitHub App installation.
func pushExample(t *testing.T) (body []byte, sha string) {
	t.Helper()
	body = githubtest.Example(t, "push", func(m map[string]any) bool {
		return m["ref"] == "refs/heads/master" && m["created"] == true && m["installation"] != nil
	})
	var m struct {
		After string `json:"after"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return body, m.After
}

// editJSON decodes body, lets fn change it, and encodes it again.
func editJSON(t *testing.T, body []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds or 30 s pass.
func (e *testEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// checkRun returns the check run with the given name, if any.
func (e *testEnv) checkRun(name string) (githubtest.CheckRun, bool) {
	for _, cr := range e.gh.CheckRuns(exampleRepo) {
		if cr.Name == name {
			return cr, true
		}
	}
	return githubtest.CheckRun{}, false
}

// checkRuns returns every check run with the given name.
func (e *testEnv) checkRunsNamed(name string) []githubtest.CheckRun {
	var out []githubtest.CheckRun
	for _, cr := range e.gh.CheckRuns(exampleRepo) {
		if cr.Name == name {
			out = append(out, cr)
		}
	}
	return out
}

// getJSON reads path with the API token into v.
func (e *testEnv) getJSON(path string, v any) int {
	e.t.Helper()
	resp := e.authGet(path, apiToken)
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

// authGet sends GET path with token as a bearer token ("": none).
func (e *testEnv) authGet(path, token string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, e.http.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

func (e *testEnv) post(path, token string, body any) (int, map[string]string) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, e.http.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}
