package server_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
)

// TestWebhookAnswers sends real octokit payloads (and broken ones) through
// the real handler, with no worker, and checks each answer and what was
// enqueued: the task of an accepted delivery holds what the worker's parser
// (go-github) makes of the payload.
func TestWebhookAnswers(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	push, _ := pushExample(t)
	edit := func(body []byte, fn func(m map[string]any)) []byte { return editJSON(t, body, fn) }
	// Pushes of other commits: the same commit pushed again is a replay.
	pushOf := func(after string) []byte {
		return edit(push, func(m map[string]any) { m["after"] = strings.Repeat(after, 40) })
	}
	ping := githubtest.Example(t, "ping", nil)
	notOurs := githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "rerequested" })
	rerequested := edit(notOurs, func(m map[string]any) { m["check_run"].(map[string]any)["external_id"] = "b-1" })
	created := githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "created" })
	suiteRerequested := githubtest.Example(t, "check_suite", func(m map[string]any) bool { return m["action"] == "rerequested" })
	suiteCompleted := githubtest.Example(t, "check_suite", func(m map[string]any) bool { return m["action"] == "completed" })
	tagDeleted := githubtest.Example(t, "push", func(m map[string]any) bool { return m["deleted"] == true })
	issues := githubtest.Example(t, "issues", nil)
	huge := bytes.Repeat([]byte(" "), 30<<20)
	// Deeper than encoding/json's limit, and deep enough to overflow a
	// goroutine's stack in a recursive validator.
	deep := bytes.Repeat([]byte("["), 20<<20)
	var indented bytes.Buffer
	if err := json.Indent(&indented, pushOf("b"), "", "  "); err != nil {
		t.Fatal(err)
	}
	indented.WriteString("\n")
	form := []byte("payload=" + url.QueryEscape(string(pushOf("c"))))
	// A control character inside a string: invalid JSON that a lax parser
	// (one that only looks for the closing quote) would take.
	ctrl := bytes.Replace(push, []byte(`"refs/heads/master"`), []byte("\"refs/heads/mas\x01ter\""), 1)

	type request struct {
		event, delivery string
		body            []byte
		sign            []byte // what the signature covers; nil: body
		noSig           bool
		badSecret       bool
		sigValue        string // the X-Hub-Signature-256 to send instead of the right one
		contentType     string // default application/json
	}
	tests := []struct {
		name     string
		req      request
		code     int
		message  string
		enqueued []byte // the JSON payload whose parsed event the task with this delivery id holds; nil: no task
	}{
		{"ping", request{event: "ping", delivery: "d-ping", body: ping}, 200, "pong", nil},
		{"push", request{event: "push", delivery: "d-push", body: push}, 202, "accepted", push},
		{"push redelivered", request{event: "push", delivery: "d-push", body: push}, 200, "already received", push},
		{"push replayed under a new delivery id", request{event: "push", delivery: "d-replay", body: push}, 200, "already received", nil},
		{"push replayed, pretty-printed", request{event: "push", delivery: "d-replay2", body: append(bytes.Clone(push), '\n')}, 200, "already received", nil},
		{"push pretty-printed", request{event: "push", delivery: "d-indented", body: indented.Bytes()}, 202, "accepted", pushOf("b")},
		{"push form-encoded", request{event: "push", delivery: "d-form", body: form, contentType: "application/x-www-form-urlencoded"}, 202, "accepted", pushOf("c")},
		{"content type with a charset", request{event: "push", delivery: "d-charset", body: pushOf("d"), contentType: "application/json; charset=utf-8"}, 202, "accepted", pushOf("d")},
		{"check_run rerequested", request{event: "check_run", delivery: "d-rerun", body: rerequested}, 202, "accepted", rerequested},
		{"check_run rerequested, not imagegen's", request{event: "check_run", delivery: "d-notours", body: notOurs}, 200, "not a check run imagegen made", nil},
		{"check_run created", request{event: "check_run", delivery: "d-created", body: created}, 200, "nothing to do", nil},
		{"check_suite rerequested", request{event: "check_suite", delivery: "d-suite", body: suiteRerequested}, 202, "accepted", suiteRerequested},
		{"check_suite completed", request{event: "check_suite", delivery: "d-suite-done", body: suiteCompleted}, 200, "nothing to do", nil},
		{"tag deleted", request{event: "push", delivery: "d-tag", body: tagDeleted}, 200, "branch deletion", nil},
		{"tag pushed", request{event: "push", delivery: "d-tagpush", body: edit(push, func(m map[string]any) { m["ref"] = "refs/tags/v1" })}, 200, "not a branch push", nil},
		{"unknown event", request{event: "issues", delivery: "d-issues", body: issues}, 200, `event \"issues\" is not used`, nil},
		{"unknown event, unsigned", request{event: "issues", delivery: "d-issues2", body: issues, noSig: true}, 401, "missing X-Hub-Signature-256", nil},
		{"missing event", request{delivery: "d-noevent", body: push}, 400, "missing X-GitHub-Event", nil},
		{"missing signature", request{event: "push", delivery: "d-nosig", body: push, noSig: true}, 401, "missing X-Hub-Signature-256", nil},
		{"bad signature", request{event: "push", delivery: "d-badsig", body: push, badSecret: true}, 401, "bad X-Hub-Signature-256", nil},
		{"SHA-1 signature in the SHA-256 header", request{event: "push", delivery: "d-sha1", body: push, sigValue: sha1Signature(push)}, 401, "bad X-Hub-Signature-256: not sha256= and 64 hex digits", nil},
		{"signature not hex", request{event: "push", delivery: "d-nothex", body: push, sigValue: "sha256=" + strings.Repeat("zz", 32)}, 401, "bad X-Hub-Signature-256: not sha256=", nil},
		{"signature too short", request{event: "push", delivery: "d-short", body: push, sigValue: "sha256=abc"}, 401, "bad X-Hub-Signature-256: not sha256=", nil},
		{"truncated in transit", request{event: "push", delivery: "d-trunc", body: push[:len(push)/2], sign: push}, 401, "bad X-Hub-Signature-256", nil},
		{"truncated and signed", request{event: "push", delivery: "d-trunc2", body: push[:len(push)/2]}, 400, "malformed payload", nil},
		{"control character in a string", request{event: "push", delivery: "d-ctrl", body: ctrl}, 400, "malformed payload", nil},
		{"not an object", request{event: "push", delivery: "d-array", body: []byte(`[1,2]`)}, 400, "not a JSON object", nil},
		{"null", request{event: "push", delivery: "d-null", body: []byte(`null`)}, 400, "not a JSON object", nil},
		{"ref not a string", request{event: "push", delivery: "d-ref", body: edit(push, func(m map[string]any) { m["ref"] = 5 })}, 400, "ref: not a string", nil},
		{"deleted not a boolean", request{event: "push", delivery: "d-del", body: edit(push, func(m map[string]any) { m["deleted"] = "no" })}, 400, "deleted: not a boolean", nil},
		{"repository not an object", request{event: "push", delivery: "d-repo", body: edit(push, func(m map[string]any) { m["repository"] = "o/r" })}, 400, "repository: not an object", nil},
		{"commits a string", request{event: "push", delivery: "d-commits", body: edit(push, func(m map[string]any) { m["commits"] = "x" })}, 400, "malformed payload: commits: not an array", nil},
		{"commits an object", request{event: "push", delivery: "d-commits2", body: edit(push, func(m map[string]any) { m["commits"] = map[string]any{"added": []string{"a"}} })}, 400, "malformed payload: commits: not an array", nil},
		{"a commit a string", request{event: "push", delivery: "d-commits3", body: edit(push, func(m map[string]any) { m["commits"] = []any{"c0ffee"} })}, 400, "malformed payload: commits[0]: not an object", nil},
		{"a commit's files a string", request{event: "push", delivery: "d-commits4", body: edit(push, func(m map[string]any) { m["commits"] = []any{map[string]any{"added": ".imagegen/a.yaml"}} })}, 400, "malformed payload: commits[0].added: not an array", nil},
		{"installation id a string", request{event: "push", delivery: "d-inst", body: edit(push, func(m map[string]any) { m["installation"] = map[string]any{"id": "1"} })}, 400, "malformed payload: installation.id: not a 64-bit integer", nil},
		{"push without after", request{event: "push", delivery: "d-noafter", body: edit(push, func(m map[string]any) { delete(m, "after") })}, 400, "push without repository or after", nil},
		{"unsupported content type", request{event: "push", delivery: "d-ct", body: push, contentType: "text/plain"}, 400, "unsupported Content-Type", nil},
		{"20 MB of nesting", request{event: "push", delivery: "d-deep", body: deep}, 400, "malformed payload", nil},
		{"30 MB body", request{event: "push", delivery: "d-huge", body: huge}, 413, "payload over", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.http.URL+"/webhook", bytes.NewReader(tc.req.body))
			if err != nil {
				t.Fatal(err)
			}
			ct := tc.req.contentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			req.Header.Set("X-GitHub-Event", tc.req.event)
			req.Header.Set("X-GitHub-Delivery", tc.req.delivery)
			signed := tc.req.sign
			if signed == nil {
				signed = tc.req.body
			}
			secret := []byte(webhookSecret)
			if tc.req.badSecret {
				secret = []byte("not-the-secret")
			}
			switch {
			case tc.req.sigValue != "":
				req.Header.Set("X-Hub-Signature-256", tc.req.sigValue)
			case !tc.req.noSig:
				req.Header.Set("X-Hub-Signature-256", githubtest.Sign(secret, signed))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.message) {
				t.Errorf("answer %d %s; want %d containing %q", resp.StatusCode, b, tc.code, tc.message)
			}
			var msg struct{ Message string }
			if err := json.Unmarshal(b, &msg); err != nil || msg.Message == "" {
				t.Errorf("answer %q is not a JSON message", b)
			}
			d, ok := deliveryTask(t, e, tc.req.delivery)
			if ok != (tc.enqueued != nil) {
				t.Fatalf("delivery task enqueued = %v; want %v", ok, tc.enqueued != nil)
			}
			if tc.enqueued == nil {
				return
			}
			want, err := github.ParseDelivery(tc.req.event, tc.enqueued)
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := want.(builds.Push); ok {
				p.Delivery = tc.req.delivery
				want = p
			}
			if d.Event != tc.req.event || !reflect.DeepEqual(d.Parsed, want) {
				t.Errorf("task holds %s %#v; want %s %#v", d.Event, d.Parsed, tc.req.event, want)
			}
		})
	}
	// Exactly the accepted deliveries are queued, each once.
	tasks, err := asynqInspector(e).ListPendingTasks(queue.QueueName)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range tasks {
		d, _, err := queue.DecodeDelivery(ti.Payload)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	if want := "[d-charset d-form d-indented d-push d-rerun d-suite]"; fmt.Sprint(ids) != want {
		t.Errorf("pending tasks of deliveries %v; want %s", ids, want)
	}
	// Deliveries are counted by event and outcome.
	m := e.get("/metrics") // with the API token: read_access is token
	for _, want := range []string{
		`imagegen_webhook_deliveries_total{event="push",outcome="accepted"} 4`,
		`imagegen_webhook_deliveries_total{event="push",outcome="duplicate"} 3`,
		`imagegen_webhook_deliveries_total{event="push",outcome="unauthorized"} 6`,
		`imagegen_queue_depth 6`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// deliveryTask finds the queued task of delivery id, decoded as the worker
// decodes it.
func deliveryTask(t *testing.T, e *testEnv, id string) (queue.Delivery, bool) {
	t.Helper()
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){asynqInspector(e).ListPendingTasks, asynqInspector(e).ListCompletedTasks} {
		tasks, err := list(queue.QueueName)
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		for _, ti := range tasks {
			d, _, err := queue.DecodeDelivery(ti.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if d.ID == id {
				return d, true
			}
		}
	}
	return queue.Delivery{}, false
}

// sha1Signature is an X-Hub-Signature (SHA-1) value for body: right for the
// old header, and go-github's ValidateSignature takes it whatever the header.
func sha1Signature(body []byte) string {
	m := hmac.New(sha1.New, []byte(webhookSecret))
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

// TestWebhookLogsOneLine: each delivery is one log line, with its id, event,
// outcome and status, and neither the secret nor the signature in it.
func TestWebhookLogsOneLine(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	push, _ := pushExample(t)
	tests := []struct {
		name, delivery string
		body           []byte
		secret         string
		outcome        string
		status         float64
	}{
		{"accepted", "d-log-accepted", push, webhookSecret, "accepted", 202},
		{"duplicate", "d-log-accepted", push, webhookSecret, "duplicate", 200},
		{"bad signature", "d-log-unauth", push, "wrong", "unauthorized", 401},
		{"malformed", "d-log-bad", []byte(`{"ref":`), webhookSecret, "bad_request", 400},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := githubtest.Delivery(t, e.http.URL+"/webhook", "push", tc.delivery, []byte(tc.secret), tc.body)
			resp.Body.Close()
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if m["delivery"] == tc.delivery || m["path"] == "/webhook" {
					lines = append(lines, m)
				}
			}
			// Deliveries before this one with the same id logged theirs.
			prior := 0
			for _, p := range tests[:i] {
				if p.delivery == tc.delivery {
					prior++
				}
			}
			if len(lines) != prior+1 {
				t.Fatalf("%d log lines about delivery %s; want %d: %v", len(lines), tc.delivery, prior+1, lines)
			}
			l := lines[len(lines)-1]
			if l["msg"] != "delivery answered" || l["outcome"] != tc.outcome || l["status"] != tc.status || l["event"] != "push" {
				t.Errorf("log line %v; want delivery answered, outcome %s, status %v, event push", l, tc.outcome, tc.status)
			}
			if _, ok := l["duration_ms"]; !ok {
				t.Errorf("log line %v has no duration_ms", l)
			}
		})
	}
	logs := e.logs.String()
	if strings.Contains(logs, webhookSecret) || strings.Contains(logs, "sha256=") {
		t.Errorf("the secret or a signature reached the log:\n%s", logs)
	}
}

func asynqInspector(e *testEnv) *asynq.Inspector {
	i := asynq.NewInspectorFromRedisClient(e.rdb)
	return i
}

// TestQueueDepthMetricFresh: on a fresh Redis, before any task, the
// queue's depth is 0 (it read -1, the gauge's error value).
func TestQueueDepthMetricFresh(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	m := e.get("/metrics") // with the API token: read_access is token
	if !strings.Contains(m, "\nimagegen_queue_depth 0\n") {
		t.Errorf("metrics on a fresh Redis lack imagegen_queue_depth 0:\n%s", m)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := e.getJSON(path, nil); code != 200 {
			t.Errorf("%s: %d; want 200", path, code)
		}
	}
	e.redis.Stop()
	if code := e.getJSON("/readyz", nil); code != 503 {
		t.Errorf("/readyz with Redis down: %d; want 503", code)
	}
	if code := e.getJSON("/healthz", nil); code != 200 {
		t.Errorf("/healthz with Redis down: %d; want 200 (liveness does not depend on Redis)", code)
	}
}

// BenchmarkWebhook runs signed octokit push deliveries through the real
// handler (echo, no network) into a real Redis, one new delivery id each: the
// server's CPU per delivery without net/http and a load generator, for pprof
// (docs/BENCHMARKS.md, section 1, has the whole path).
func BenchmarkWebhook(b *testing.B) {
	rd := servicetest.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	b.Cleanup(func() { rdb.Close() })
	yml := fmt.Sprintf("redis: %s\ngithub: {token: t, webhook_secret: %s}\nclouds:\n  sim: {type: simulated}\n", rd.URL, webhookSecret)
	cfg := configtest.Config(b, yml)
	// Production logs JSON at Info; encoding the line is part of the cost.
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv, _ := newServer(b, cfg, rdb, log, nil)
	h := srv.Handler()
	placeholder := strings.Repeat("f", 40)
	push := githubtest.Push(b, githubtest.PushOptions{Repo: "bench/webhook", Before: strings.Repeat("1", 40), After: placeholder})
	at := bytes.Index(push, []byte(placeholder))
	// Each delivery is another push (its after SHA), signed for it: the
	// webhook answers a push it has seen "already received". They are made
	// in batches, off the clock.
	type signed struct {
		body []byte
		sig  string
	}
	var batch []signed
	b.SetBytes(int64(len(push)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if len(batch) == 0 {
			b.StopTimer()
			for range 1024 {
				body := bytes.Clone(push)
				copy(body[at:], fmt.Sprintf("%040x", i+len(batch)))
				batch = append(batch, signed{body, githubtest.Sign([]byte(webhookSecret), body)})
			}
			b.StartTimer()
		}
		d := batch[0]
		batch = batch[1:]
		i++
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(d.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", "bench-"+strconv.Itoa(i))
		req.Header.Set("X-Hub-Signature-256", d.sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			b.Fatalf("answer %d: %s", rec.Code, rec.Body)
		}
	}
}
