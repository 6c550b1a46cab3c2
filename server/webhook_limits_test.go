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
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
)

// countingBody is a request body that counts the reads of it.
type countingBody struct {
	io.Reader
	reads atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	b.reads.Add(1)
	return b.Reader.Read(p)
}

// TestWebhookRefusesBeforeReading: what the headers alone refuse — no or a
// malformed signature, no event or one imagegen does not use, a content
// type it does not take, over 25 MiB — is answered without reading a byte
// of the body.
func TestWebhookRefusesBeforeReading(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	push, _ := pushExample(t)
	sig := githubtest.Sign([]byte(webhookSecret), push)
	tests := []struct {
		name, event, sig, contentType string
		length                        int64 // Content-Length; 0: the body's
		code                          int
		message                       string
	}{
		{"no signature", "push", "", "", 0, 401, "missing X-Hub-Signature-256"},
		{"no signature, 24 MiB", "push", "", "", 24 << 20, 401, "missing X-Hub-Signature-256"},
		{"SHA-1 signature", "push", sha1Signature(push), "", 0, 401, "bad X-Hub-Signature-256: not sha256= and 64 hex digits"},
		{"signature cut short", "push", sig[:len(sig)-1], "", 0, 401, "bad X-Hub-Signature-256: not sha256= and 64 hex digits"},
		{"signature not hex", "push", "sha256=" + strings.Repeat("g", 64), "", 0, 401, "bad X-Hub-Signature-256: not sha256= and 64 hex digits"},
		{"no event", "", sig, "", 0, 400, "missing X-GitHub-Event"},
		{"event not used", "issues", sig, "", 0, 200, `event \"issues\" is not used by imagegen`},
		{"event not used, 24 MiB", "workflow_run", sig, "", 24 << 20, 200, `event \"workflow_run\" is not used by imagegen`},
		{"content type", "push", sig, "text/plain", 0, 400, `unsupported Content-Type \"text/plain\"`},
		{"over 25 MiB", "push", sig, "", 25<<20 + 1, 413, "payload over 26214400 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingBody{Reader: bytes.NewReader(push)}
			req := httptest.NewRequest(http.MethodPost, "/webhook", body)
			req.ContentLength = int64(len(push))
			if tc.length > 0 {
				req.ContentLength = tc.length
			}
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			req.Header.Set("X-GitHub-Event", tc.event)
			req.Header.Set("X-GitHub-Delivery", "d-"+strings.ReplaceAll(tc.name, " ", "-"))
			if tc.sig != "" {
				req.Header.Set("X-Hub-Signature-256", tc.sig)
			}
			rec := httptest.NewRecorder()
			e.handler().ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.message) {
				t.Errorf("answer %d %s; want %d containing %q", rec.Code, rec.Body, tc.code, tc.message)
			}
			if n := body.reads.Load(); n != 0 {
				t.Errorf("the body was read (%d reads) before refusing it", n)
			}
		})
	}
}

// handler is the server's HTTP handler, to call without the network.
func (e *testEnv) handler() http.Handler { return e.http.Config.Handler }

// blockedBody is a request body that sends nothing until released; started
// is closed at its first read (the webhook has taken it in).
type blockedBody struct {
	started chan struct{}
	release chan struct{}
	once    atomic.Bool
}

func newBlockedBody() *blockedBody {
	return &blockedBody{started: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockedBody) Read([]byte) (int, error) {
	if b.once.CompareAndSwap(false, true) {
		close(b.started)
	}
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

// TestWebhookReadLimits: the bodies read at once are bounded in bytes
// (webhook.max_concurrent_bytes, each counted by its Content-Length) and in
// number (webhook.max_concurrent_reads); a delivery past either is answered
// 503 with Retry-After without reading it, and is taken again once the
// bodies before it are done.
func TestWebhookReadLimits(t *testing.T) {
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := configtest.Config(t, fmt.Sprintf("redis: %s\ngithub: {token: t, webhook_secret: %s}\nwebhook: {max_concurrent_bytes: 26214400, max_concurrent_reads: 2}\n", rd.URL, webhookSecret))
	srv, _ := newServer(t, cfg, rdb, slog.New(slog.DiscardHandler), nil)
	h := srv.Handler()
	push := githubtest.Push(t, githubtest.PushOptions{Repo: "o/r", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40)})

	post := func(delivery string, body io.Reader, length int64, signed []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/webhook", body)
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", delivery)
		req.Header.Set("X-Hub-Signature-256", githubtest.Sign([]byte(webhookSecret), signed))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// hold starts a delivery whose body never comes until released.
	hold := func(delivery string, length int64) (release func() int) {
		b := newBlockedBody()
		done := make(chan int, 1)
		go func() { done <- post(delivery, b, length, nil).Code }()
		select {
		case <-b.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the webhook did not start reading", delivery)
		}
		return func() int { close(b.release); return <-done }
	}
	busy := func(name string, length int64) {
		t.Helper()
		body := &countingBody{Reader: bytes.NewReader(push)}
		rec := post(name, body, length, push)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" ||
			!strings.Contains(rec.Body.String(), "too many deliveries being read at once; retry later") {
			t.Errorf("%s: answer %d (Retry-After %q) %s; want 503, Retry-After 5", name, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
		if body.reads.Load() != 0 {
			t.Errorf("%s: the body was read", name)
		}
	}

	// Bytes: a 20 MiB body in flight leaves 5 MiB.
	release20 := hold("big", 20<<20)
	busy("10 MiB while 20 MiB are read", 10<<20)
	if rec := post("small", bytes.NewReader(push), int64(len(push)), push); rec.Code != http.StatusAccepted {
		t.Errorf("a 7 kB push beside the 20 MiB: %d %s; want 202", rec.Code, rec.Body)
	}
	// Number: two bodies in flight.
	releaseSmall := hold("slow", 100)
	busy("a third body", int64(len(push)))
	if code := release20(); code != http.StatusBadRequest {
		t.Errorf("the 20 MiB body cut short: %d; want 400", code)
	}
	if code := releaseSmall(); code != http.StatusBadRequest {
		t.Errorf("the slow body cut short: %d; want 400", code)
	}
	// All given back: the same push is taken (already received: it was accepted above).
	if rec := post("again", bytes.NewReader(push), int64(len(push)), push); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "already received") {
		t.Errorf("after the bodies in flight ended: %d %s; want 200 already received", rec.Code, rec.Body)
	}
	other := bytes.Replace(push, []byte(strings.Repeat("2", 40)), []byte(strings.Repeat("3", 40)), 1)
	if rec := post("other", bytes.NewReader(other), int64(len(other)), other); rec.Code != http.StatusAccepted {
		t.Errorf("another push after the bodies in flight ended: %d %s; want 202", rec.Code, rec.Body)
	}
}

// TestLargePushStoredSmall: a signed 24 MiB push is stored in Redis as the
// little the worker needs — a few hundred bytes, not the 24 MiB body kept
// 72 h — whether its bulk is a commit message or file names past
// builds.MaxChangedFiles (then stored Incomplete, without files).
func TestLargePushStoredSmall(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	ctx := context.Background()
	// The push's last commit is its head_commit too: the message and the
	// files of one commit come twice.
	message := strings.Repeat("m", 12<<20)
	var files []string
	for i := 0; len(files)*103 < 23<<20+256<<10; i++ {
		files = append(files, fmt.Sprintf("%s/%06d", strings.Repeat("d", 92), i))
	}
	var commits []githubtest.PushCommit
	for i := range 20 {
		n := len(files) / 20
		commits = append(commits, githubtest.PushCommit{Modified: files[i*n : (i+1)*n]})
	}
	tests := []struct {
		name       string
		opts       githubtest.PushOptions
		incomplete bool
	}{
		{"a 24 MiB commit message", githubtest.PushOptions{Commits: []githubtest.PushCommit{{Message: message, Modified: []string{".imagegen/a.yaml"}}}}, false},
		{"24 MiB of file names", githubtest.PushOptions{Commits: commits}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Repo, tc.opts.Before, tc.opts.After = "o/r", strings.Repeat("1", 40), strings.Repeat(fmt.Sprint(i+2), 40)
			body := githubtest.Push(t, tc.opts)
			if len(body) < 24<<20 || len(body) > 25<<20 {
				t.Fatalf("the push is %d bytes; want 24 to 25 MiB", len(body))
			}
			delivery := fmt.Sprintf("large-%d", i)
			if code, msg := e.deliver("push", delivery, body); code != http.StatusAccepted {
				t.Fatalf("answer %d %s; want 202", code, msg)
			}
			ev, err := github.ParseDelivery("push", body)
			if err != nil {
				t.Fatal(err)
			}
			if p := ev.(builds.Push); p.Incomplete != tc.incomplete {
				t.Errorf("go-github's push: Incomplete %v; want %v", p.Incomplete, tc.incomplete)
			}
			key := "asynq:{" + queue.QueueName + "}:t:" + queue.DeliveryTaskID(queue.Delivery{ID: delivery, Event: "push", Parsed: ev})
			size, err := e.rdb.MemoryUsage(ctx, key).Result()
			if err != nil {
				t.Fatalf("MEMORY USAGE %s: %v", key, err)
			}
			t.Logf("a %d-byte push: its task takes %d bytes in Redis", len(body), size)
			if size > 4096 {
				t.Errorf("the task of a %d-byte push takes %d bytes in Redis; want under 4 KiB", len(body), size)
			}
			d, ok := deliveryTask(t, e, delivery)
			if !ok {
				t.Fatal("no task")
			}
			want := ev.(builds.Push)
			want.Delivery = delivery
			if b, _ := json.Marshal(d.Parsed); !bytes.Equal(b, mustJSON(t, want)) {
				t.Errorf("task holds %s; want %s", b, mustJSON(t, want))
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
