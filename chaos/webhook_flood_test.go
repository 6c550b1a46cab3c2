package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/queue"
)

// TestWebhookFloodMemory posts, to a real `imagegen serve` (with its
// worker, on a real Redis), 20 parallel 24 MiB deliveries at once, twice:
// unsigned (no X-Hub-Signature-256), each refused 401 before its body is
// read, and with a well-formed but wrong signature, which the webhook's
// read limit (64 MiB at once by default) lets in two at a time (401 once
// read) and refuses the rest (503, Retry-After). serve's peak RSS (VmHWM)
// grows by under 100 MB for the unsigned flood and under 128 MB (twice the
// limit: the garbage collector's slack) for the other, and a signed push
// right after each is accepted (202). Then five signed 24 MiB pushes, one
// after the other, are accepted and stored as tasks of under 4 KiB each.
func TestWebhookFloodMemory(t *testing.T) {
	const whSecret = "whsec-flood-0123456789"
	dir := t.TempDir()
	bin := buildImagegen(t, dir)
	rd := startRedis(t, dir)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr := freeAddr(t)
	cfgFile := filepath.Join(dir, "imagegen.yaml")
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
build: {timeout: 1m, cleanup_timeout: 5s}
clouds:
  sim: {type: simulated}
`, addr, rd.url(), app.AppID, app.PrivateKeyFile, whSecret, gh.URL())
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := &processes{t: t, bin: bin, dir: dir}
	srv := procs.start("serve", "serve", "--config", cfgFile)
	waitReady(t, "http://"+addr, 30*time.Second)

	push := func(n int) int {
		sha := fmt.Sprintf("c0ffee%034x", n)
		body := githubtest.Push(t, githubtest.PushOptions{Repo: "flood/repo", Before: strings.Repeat("1", 40), After: sha})
		resp := githubtest.Delivery(t, "http://"+addr+"/webhook", "push", fmt.Sprintf("flood-push-%d", n), []byte(whSecret), body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Warm up: the paths a delivery takes are set up before the baseline.
	for i := range 3 {
		if code := push(i); code != http.StatusAccepted {
			t.Fatalf("warm-up push answered %d", code)
		}
	}
	time.Sleep(time.Second)

	body := make([]byte, 24<<20)
	for i := range body {
		body[i] = ' '
	}
	wrongSig := "sha256=" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name  string
		sig   string
		codes map[int]string // allowed answers, with the message each says
		bound int64
	}{
		{"unsigned", "", map[int]string{401: "missing X-Hub-Signature-256"}, 100 << 20},
		{"wrongly signed", wrongSig, map[int]string{401: "bad X-Hub-Signature-256", 503: "too many deliveries being read at once; retry later"}, 128 << 20},
	} {
		before := peakRSS(t, srv.cmd.Process.Pid)
		answers := make([]rawAnswer, 20)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i] = rawPost(addr, "push", fmt.Sprintf("flood-%s-%d", tc.name[:1], i), tc.sig, body) })
		}
		wg.Wait()
		after := peakRSS(t, srv.cmd.Process.Pid)
		count := map[int]int{}
		for i, a := range answers {
			count[a.code]++
			want, ok := tc.codes[a.code]
			switch {
			case a.err != nil:
				t.Errorf("%s %d: %v", tc.name, i, a.err)
			case !ok || !strings.Contains(a.msg, want):
				t.Errorf("%s %d: answer %d %q; want one of %v", tc.name, i, a.code, a.msg, tc.codes)
			case a.code == 503 && a.retryAfter == "":
				t.Errorf("%s %d: 503 without Retry-After", tc.name, i)
			}
		}
		grew := after - before
		t.Logf("%s: 20 parallel 24 MiB posts answered %v; serve's peak RSS %d MiB → %d MiB (+%d MiB)", tc.name, count, before>>20, after>>20, grew>>20)
		if grew >= tc.bound {
			t.Errorf("%s: serve's peak RSS grew by %d MiB; want under %d MiB", tc.name, grew>>20, tc.bound>>20)
		}
		if tc.sig != "" && count[503] == 0 {
			t.Errorf("%s: no post was refused by the read limit", tc.name)
		}
		if code := push(100 + len(tc.name)); code != http.StatusAccepted {
			t.Errorf("a signed push after the %s flood answered %d; want 202", tc.name, code)
		}
	}
	// Five signed 24 MiB pushes (the bulk: a commit message, which the
	// push lists twice, as head_commit too): accepted, and kept small.
	before := peakRSS(t, srv.cmd.Process.Pid)
	rdb := redis.NewClient(&redis.Options{Addr: rd.addr})
	defer rdb.Close()
	var sizes []int64
	for i := range 5 {
		sha := fmt.Sprintf("b16b%036x", i)
		body := githubtest.Push(t, githubtest.PushOptions{Repo: "flood/big", Before: strings.Repeat("1", 40), After: sha,
			Commits: []githubtest.PushCommit{{Message: strings.Repeat("m", 12<<20), Modified: []string{"README.md"}}}})
		id := fmt.Sprintf("flood-big-%d", i)
		resp := githubtest.Delivery(t, "http://"+addr+"/webhook", "push", id, []byte(whSecret), body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("signed %d-byte push answered %d; want 202", len(body), resp.StatusCode)
		}
		ev, err := github.ParseDelivery("push", body)
		if err != nil {
			t.Fatal(err)
		}
		key := "asynq:{" + queue.QueueName + "}:t:" + queue.DeliveryTaskID(queue.Delivery{ID: id, Event: "push", Parsed: ev})
		n, err := rdb.MemoryUsage(context.Background(), key).Result()
		if err != nil {
			t.Fatalf("MEMORY USAGE %s: %v", key, err)
		}
		sizes = append(sizes, n)
		if n > 4096 {
			t.Errorf("the task of a signed %d-byte push takes %d bytes in Redis; want under 4 KiB", len(body), n)
		}
	}
	time.Sleep(2 * time.Second) // the worker plans them
	t.Logf("five signed 24 MiB pushes: tasks of %v bytes in Redis; serve's peak RSS %d MiB → %d MiB, resident now %d MiB",
		sizes, before>>20, peakRSS(t, srv.cmd.Process.Pid)>>20, residentRSS(t, srv.cmd.Process.Pid)>>20)
	srv.stop("serve")
}

// residentRSS reads a process's resident set now (VmRSS) from /proc.
func residentRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// rawAnswer is what rawPost got.
type rawAnswer struct {
	code       int
	msg        string
	retryAfter string
	err        error
}

// rawPost posts body to /webhook over its own connection, writing the body
// while it waits for the answer, which a server refusing a request by its
// headers gives before it has read the body (and then closes the
// connection, so the rest of the write fails: ignored).
func rawPost(addr, event, delivery, sig string, body []byte) rawAnswer {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer c.Close()
	var h strings.Builder
	fmt.Fprintf(&h, "POST /webhook HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-GitHub-Event: %s\r\nX-GitHub-Delivery: %s\r\n", addr, event, delivery)
	if sig != "" {
		fmt.Fprintf(&h, "X-Hub-Signature-256: %s\r\n", sig)
	}
	h.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n")
	go func() {
		if _, err := io.WriteString(c, h.String()); err == nil {
			_, _ = c.Write(body)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer resp.Body.Close()
	var m struct{ Message string }
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return rawAnswer{code: resp.StatusCode, err: fmt.Errorf("answer %d is not JSON: %w", resp.StatusCode, err)}
	}
	return rawAnswer{code: resp.StatusCode, msg: m.Message, retryAfter: resp.Header.Get("Retry-After")}
}
