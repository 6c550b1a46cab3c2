package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// TestWorkerReadyzBlackHole: a worker cut off from Redis without a closed
// connection (a partition, found by the chaos suite) answers /readyz 503
// within its 2 s, not after go-redis's 3 s read timeout, which a probe with a
// shorter timeout reports as a timeout instead; and 200 once Redis is back.
func TestWorkerReadyzBlackHole(t *testing.T) {
	rd := servicetest.StartRedis(t)
	p := servicetest.StartProxy(t, rd.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer rdb.Close()
	srv := httptest.NewServer(metricsHTTP(&service{rdb: rdb, store: store.New(rdb, 0, 0), reg: prometheus.NewRegistry()}))
	defer srv.Close()
	get := func() (int, string, time.Duration) {
		start := time.Now()
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), time.Since(start)
	}
	if code, body, _ := get(); code != http.StatusOK {
		t.Fatalf("before: %d %q", code, body)
	}
	heal := p.Partition()
	code, body, took := get()
	if code != http.StatusServiceUnavailable || body != "redis unreachable: no answer within 2s" {
		t.Errorf("during the black hole: %d %q, want 503 \"redis unreachable: no answer within 2s\"", code, body)
	}
	if took > 2500*time.Millisecond {
		t.Errorf("during the black hole /readyz took %s, want about 2s", took)
	}
	heal()
	deadline := time.Now().Add(10 * time.Second)
	for code, body, _ = get(); code != http.StatusOK && time.Now().Before(deadline); code, body, _ = get() {
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Errorf("after the black hole: %d %q, want 200", code, body)
	}
}
