package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
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

// FuzzWebhook feeds the real webhook handler (on a real Redis) arbitrary
// events and bodies, signed with the secret when sign is set so the fuzzer
// gets past the signature into the parsers, and form-encoded (the JSON in
// the payload parameter) when form is set. Whatever comes in, the answer is
// one of the documented codes with a JSON message, never a 5xx (Redis is up),
// only push and check_run deliveries are ever accepted, and an accepted
// delivery's task holds what the worker's parser (go-github) makes of the
// body sent.
func FuzzWebhook(f *testing.F) {
	rd := servicetest.StartRedis(f)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	f.Cleanup(func() { rdb.Close() })
	yml := fmt.Sprintf("redis: %s\ngithub: {token: t, webhook_secret: %s}\nclouds:\n  sim: {type: simulated}\n", rd.URL, webhookSecret)
	cfg := configtest.Config(f, yml)
	srv, _ := newServer(f, cfg, rdb, nil, nil)
	h := srv.Handler()

	push := githubtest.Push(f, githubtest.PushOptions{Before: strings.Repeat("0", 40), After: strings.Repeat("a", 40)})
	f.Add("push", push, true, false)
	f.Add("push", push, true, true)
	f.Add("push", push[:len(push)/3], true, false)
	f.Add("ping", []byte(`{"zen":"hi","hook_id":1}`), true, false)
	f.Add("check_run", []byte(`{"action":"rerequested","check_run":{"id":1,"external_id":"x"},"repository":{"full_name":"a/b"}}`), true, false)
	f.Add("check_suite", []byte(`{"action":"rerequested","check_suite":{"head_sha":"abc"},"repository":{"full_name":"a/b"}}`), true, false)
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"x","repository":{}}`), true, false)
	f.Add("push", []byte(" {\"ref\":\"refs/heads/main\",\"after\":\"x\",\"repository\":{\"full_name\":\"a/b\"}}\n"), true, true)
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"x","repository":{"full_name":"a/b"},"n":01}`), true, false)
	f.Add("push", []byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`), true, false)
	f.Add("issues", []byte(`{}`), false, false)
	f.Add("", []byte(`null`), true, false)

	inspector := asynq.NewInspectorFromRedisClient(rdb)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, event string, body []byte, sign, form bool) {
		sent, ct := body, "application/json"
		if form {
			sent, ct = []byte("payload="+url.QueryEscape(string(body))), "application/x-www-form-urlencoded"
		}
		id := fmt.Sprintf("fuzz-%d", n.Add(1))
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(sent))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", id)
		if sign {
			req.Header.Set("X-Hub-Signature-256", githubtest.Sign([]byte(webhookSecret), sent))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 401, 413:
		case 202:
			if event != "push" && event != "check_run" && event != "check_suite" {
				t.Errorf("event %q accepted", event)
			}
			if !sign {
				t.Errorf("an unsigned delivery was accepted")
			}
			// The task holds what go-github makes of the body; or, when a
			// field imagegen does not read has a type go-github refuses,
			// what the webhook read.
			want, err := github.ParseDelivery(event, body)
			if err != nil {
				p, perr := github.PeekDelivery(event, body)
				if perr != nil {
					t.Fatalf("accepted body %q that the webhook's parser refuses: %v", body, perr)
				}
				want = p.Event
			}
			if p, ok := want.(builds.Push); ok {
				p.Delivery = id
				want = p
			}
			ti, err := inspector.GetTaskInfo(queue.QueueName, queue.DeliveryTaskID(queue.Delivery{ID: id, Event: event, Parsed: want}))
			if err != nil {
				t.Fatalf("accepted, but no task: %v", err)
			}
			d, raw, err := queue.DecodeDelivery(ti.Payload)
			if err != nil || raw != nil {
				t.Fatalf("accepted body %q: the task does not decode: %v", body, err)
			}
			if d.ID != id || !reflect.DeepEqual(d.Parsed, want) {
				t.Errorf("task %s holds %#v; the worker's parser makes %#v of %q", d.ID, d.Parsed, want, body)
			}
		default:
			t.Fatalf("answer %d for event %q body %q: %s", rec.Code, event, body, rec.Body)
		}
		if !sign && rec.Code != 401 {
			t.Errorf("an unsigned delivery answered %d, want 401", rec.Code)
		}
		var msg struct{ Message string }
		if err := json.Unmarshal(rec.Body.Bytes(), &msg); err != nil || msg.Message == "" {
			t.Errorf("answer %d is not a JSON message: %q", rec.Code, rec.Body)
		}
	})
}
