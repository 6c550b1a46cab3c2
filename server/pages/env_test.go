package pages_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/server/pages"
	"github.com/imagegen/imagegen/store"
)

const (
	apiToken      = "api-token-0123456789abcdef0123"
	webhookSecret = "whsec-test-0123456789abcdef"
	linkKey       = "link-key-for-tests-0123456789"
	testRepo      = "octo-org/images"
	testSHA       = "3f786850e387550fdab836ed7e6dc881de23001b"
)

// env is the imagegen server (with its pages) on a real redis-server.
type env struct {
	t      *testing.T
	redis  *servicetest.Redis
	rdb    *redis.Client
	cfg    *config.Config
	store  *store.Store
	http   *httptest.Server
	logs   *servicetest.Buffer
	signer *pages.Signer
}

type envOptions struct {
	noLinkKey bool // neither pages.link_key nor encryption_key
	logLimit  int
	baseURL   string             // default http://imagegen.example.org (cookies then not Secure, as the test server is http)
	apiTokens string             // YAML of api_tokens; default [apiToken]
	extra     string             // more YAML at the top level (read_access, trusted_proxies, ...)
	redis     *servicetest.Redis // default: a new redis-server; another env's, to restart "the same" service
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	r := o.redis
	if r == nil {
		r = servicetest.StartRedis(t)
	}
	e := &env{t: t, redis: r, logs: &servicetest.Buffer{}}
	e.rdb = redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { e.rdb.Close() })
	keys := fmt.Sprintf("pages: {link_key: %s, link_ttl: 1h}\nencryption_key: %s\n", linkKey, strings.Repeat("cd", 32))
	if o.noLinkKey {
		keys = ""
	}
	if o.baseURL == "" {
		o.baseURL = "http://imagegen.example.org"
	}
	if o.logLimit == 0 {
		o.logLimit = 1 << 20
	}
	if o.apiTokens == "" {
		o.apiTokens = "[" + apiToken + "]"
	}
	yml := fmt.Sprintf(`listen: 127.0.0.1:0
base_url: %s
redis: %s
github: {token: ghp_test0123456789, webhook_secret: %s}
api_tokens: %s
%sbuild: {log_limit: %d}
clouds:
  sim-a: {type: simulated}
  sim-b: {type: simulated}
  locked: {type: simulated, password: ask}
%s`, o.baseURL, r.URL, webhookSecret, o.apiTokens, keys, o.logLimit, o.extra)
	cfg := configtest.Config(t, yml)
	e.cfg = cfg
	var err error
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The real server as serve --no-worker wires it, so the test also
	// covers how it registers the pages.
	qc, err := queue.NewClient(e.rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store.New(e.rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	reruns := builds.NewReruns(builds.Deps{Config: cfg, Store: e.store, Queue: qc, Logger: log})
	srv, err := server.New(server.Options{Config: cfg, Store: e.store, Queue: qc, Reruns: reruns, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.http = httptest.NewServer(srv.Handler())
	t.Cleanup(e.http.Close)
	e.signer = pages.NewSigner(cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service logs:\n%s", e.logs.String())
		}
	})
	return e
}

// rec describes a build to record; clouds map name → how far it got.
type rec struct {
	id, repo, generator, commit string
	created                     time.Time
	clouds                      map[string]*builds.CloudRecord
}

// record writes a build through the queue's store, as the planner does.
func (e *env) record(r rec) *builds.Build {
	e.t.Helper()
	if r.repo == "" {
		r.repo = testRepo
	}
	if r.generator == "" {
		r.generator = "dstat"
	}
	if r.commit == "" {
		r.commit = testSHA
	}
	if r.created.IsZero() {
		r.created = time.Now().UTC()
	}
	sp := &spec.Spec{Name: r.generator, File: ".imagegen/" + r.generator + ".yaml", Script: "echo hi", Clouds: map[string]spec.CloudSpec{}}
	sp.Digest = "9a0364b9e99bb480dd25e1f0284c8555e0b0f0f8a5f7c8e5d1b8c9a0364b9e99"
	b := &builds.Build{
		ID: r.id, Repo: r.repo, Commit: r.commit, Ref: "refs/heads/main", Generator: r.generator,
		SpecFile: sp.File, Digest: sp.Digest, Created: r.created, Clouds: r.clouds,
	}
	for name, c := range r.clouds {
		c.Cloud = name
		if c.BaseImage == "" {
			c.BaseImage = "base-" + name
		}
		if c.Queued.IsZero() {
			c.Queued = r.created
		}
		sp.Clouds[name] = spec.CloudSpec{Image: c.BaseImage, SSHUser: "ubuntu"}
	}
	if b.ID == "" {
		b.ID = builds.NewID()
	}
	ok, err := e.store.Create(context.Background(), b, sp)
	if err != nil || !ok {
		e.t.Fatalf("create build: %v %v", ok, err)
	}
	return b
}

func (e *env) update(id, cloud string, fn func(*builds.CloudRecord)) {
	e.t.Helper()
	if _, err := e.store.UpdateCloud(context.Background(), id, cloud, fn); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) logLine(id, cloud, stream, text string) {
	e.t.Helper()
	if err := e.store.AppendLog(context.Background(), id, cloud, builds.LogEntry{Time: time.Now().UTC(), Cloud: cloud, Stream: stream, Text: text}); err != nil {
		e.t.Fatal(err)
	}
}

// succeed finishes a cloud with an image, as the worker does, lineage included.
func (e *env) succeed(b *builds.Build, cloud, imageID, imageName string, finished time.Time) {
	e.t.Helper()
	e.update(b.ID, cloud, func(c *builds.CloudRecord) {
		c.State, c.ImageID, c.ImageName, c.Phase = builder.StateSucceeded, imageID, imageName, ""
		if c.Started.IsZero() {
			c.Started = finished.Add(-90 * time.Second)
		}
		c.Finished = finished
	})
	if err := e.store.AddImage(context.Background(), builds.LineageEntry{
		Build: b.ID, Repo: b.Repo, Generator: b.Generator, Cloud: cloud, Commit: b.Commit, Digest: b.Digest,
		BaseImage: "base-" + cloud, ImageID: imageID, ImageName: imageName, Created: finished,
	}); err != nil {
		e.t.Fatal(err)
	}
}

type response struct {
	code   int
	body   string
	header http.Header
}

// do sends a request; opts set headers ("Authorization: ...").
func (e *env) do(client *http.Client, method, path string, body io.Reader, headers ...string) response {
	e.t.Helper()
	if client == nil {
		client = noRedirect()
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.http.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, body: string(b), header: resp.Header}
}

// get is an authorized GET (bearer API token).
func (e *env) get(path string) response {
	e.t.Helper()
	return e.do(nil, http.MethodGet, path, nil, "Authorization: Bearer "+apiToken)
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// browser is a client with a cookie jar, as a browser keeps cookies.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := noRedirect()
	c.Jar = jar
	return c
}

// mustContain checks every want is in the body.
func mustContain(t *testing.T, what, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("%s: missing %q", what, w)
		}
	}
	if t.Failed() {
		t.Logf("%s body:\n%s", what, body)
	}
}

func mustNotContain(t *testing.T, what, body string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(body, b) {
			t.Errorf("%s: must not contain %q", what, b)
		}
	}
}
