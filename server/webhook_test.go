package server_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server/githubapp/githubtest"
)

// TestWebhookAnswers sends real octokit payloads (and broken ones) through
// the real handler, with no worker, and checks each answer and what was
// enqueued.
func TestWebhookAnswers(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	push, _ := pushExample(t)
	ping := githubtest.Example(t, "ping", nil)
	rerequested := githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "rerequested" })
	created := githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "created" })
	tagDeleted := githubtest.Example(t, "push", func(m map[string]any) bool { return m["deleted"] == true })
	issues := githubtest.Example(t, "issues", nil)
	huge := bytes.Repeat([]byte(" "), 30<<20)

	type request struct {
		event, delivery string
		body            []byte
		sign            []byte // what the signature covers; nil: body
		noSig           bool
		badSecret       bool
	}
	tests := []struct {
		name     string
		req      request
		code     int
		message  string
		enqueued bool // a delivery task with this id exists afterwards
	}{
		{"ping", request{event: "ping", delivery: "d-ping", body: ping}, 200, "pong", false},
		{"push", request{event: "push", delivery: "d-push", body: push}, 202, "accepted", true},
		{"push redelivered", request{event: "push", delivery: "d-push", body: push}, 200, "already received", true},
		{"check_run rerequested", request{event: "check_run", delivery: "d-rerun", body: rerequested}, 202, "accepted", true},
		{"check_run created", request{event: "check_run", delivery: "d-created", body: created}, 200, "nothing to do", false},
		{"tag deleted", request{event: "push", delivery: "d-tag", body: tagDeleted}, 200, "branch deletion", false},
		{"unknown event", request{event: "issues", delivery: "d-issues", body: issues}, 200, `event \"issues\" is not used`, false},
		{"missing signature", request{event: "push", delivery: "d-nosig", body: push, noSig: true}, 401, "missing X-Hub-Signature-256", false},
		{"bad signature", request{event: "push", delivery: "d-badsig", body: push, badSecret: true}, 401, "bad X-Hub-Signature-256", false},
		{"truncated in transit", request{event: "push", delivery: "d-trunc", body: push[:len(push)/2], sign: push}, 401, "bad X-Hub-Signature-256", false},
		{"truncated and signed", request{event: "push", delivery: "d-trunc2", body: push[:len(push)/2]}, 400, "malformed payload", false},
		{"30 MB body", request{event: "push", delivery: "d-huge", body: huge}, 413, "payload over", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.http.URL+"/webhook", bytes.NewReader(tc.req.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
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
			if !tc.req.noSig {
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
			_, err = asynqInspector(e).GetTaskInfo(queue.QueueName, "delivery:"+tc.req.delivery)
			if got := err == nil; got != tc.enqueued {
				t.Errorf("delivery task enqueued = %v (%v); want %v", got, err, tc.enqueued)
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
		ids = append(ids, ti.ID)
	}
	if fmt.Sprint(ids) != "[delivery:d-push delivery:d-rerun]" {
		t.Errorf("pending tasks %v; want [delivery:d-push delivery:d-rerun]", ids)
	}
	// Deliveries are counted by event and outcome.
	resp, err := http.Get(e.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`imagegen_webhook_deliveries_total{event="push",outcome="accepted"} 1`,
		`imagegen_webhook_deliveries_total{event="push",outcome="duplicate"} 1`,
		`imagegen_webhook_deliveries_total{event="push",outcome="unauthorized"} 3`,
		`imagegen_queue_depth 2`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func asynqInspector(e *testEnv) *asynq.Inspector {
	i := asynq.NewInspectorFromRedisClient(e.rdb)
	return i
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
