package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/fake"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/testenv"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/server/githubapp/githubtest"
)

// FuzzWebhook feeds the real webhook handler (on a real Redis) arbitrary
// events and bodies, signed with the secret when sign is set so the fuzzer
// gets past the signature into the parsers. Whatever comes in, the answer is
// one of the documented codes with a JSON message, never a 5xx (Redis is up),
// and only push and check_run deliveries are ever accepted.
func FuzzWebhook(f *testing.F) {
	rd := testenv.StartRedis(f)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	f.Cleanup(func() { rdb.Close() })
	reg := clouds.NewRegistry()
	reg.Register(fake.Type, fake.Configure)
	yml := fmt.Sprintf("redis: %s\ngithub: {token: t, webhook_secret: %s}\nclouds:\n  sim: {type: simulated}\n", rd.URL, webhookSecret)
	cfg, err := config.Parse([]byte(yml), "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		f.Fatal(err)
	}
	q, err := queue.New(queue.Options{Config: cfg, Redis: rdb, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { q.Close() })
	srv, err := server.New(server.Options{Config: cfg, Queue: q})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()

	push := githubtest.Push(f, githubtest.PushOptions{Before: strings.Repeat("0", 40), After: strings.Repeat("a", 40)})
	f.Add("push", push, true)
	f.Add("push", push[:len(push)/3], true)
	f.Add("ping", []byte(`{"zen":"hi","hook_id":1}`), true)
	f.Add("check_run", []byte(`{"action":"rerequested","check_run":{"id":1,"external_id":"x"},"repository":{"full_name":"a/b"}}`), true)
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"x","repository":{}}`), true)
	f.Add("push", []byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`), true)
	f.Add("issues", []byte(`{}`), false)
	f.Add("", []byte(`null`), true)

	var n atomic.Int64
	f.Fuzz(func(t *testing.T, event string, body []byte, sign bool) {
		req := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("fuzz-%d", n.Add(1)))
		if sign {
			req.Header.Set("X-Hub-Signature-256", githubtest.Sign([]byte(webhookSecret), body))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 401, 413:
		case 202:
			if event != "push" && event != "check_run" {
				t.Errorf("event %q accepted", event)
			}
			if !sign {
				t.Errorf("an unsigned delivery was accepted")
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
