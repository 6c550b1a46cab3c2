// Package servicetest starts real services for tests on 127.0.0.1, killed when
// the test ends: redis-server (alone, as a Cluster, behind Sentinel) and sshd.
package servicetest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server started for one test.
type Redis struct {
	Addr string // 127.0.0.1:port
	URL  string // redis://127.0.0.1:port/0

	bin  string
	dir  string
	port int
	// args are the command line after the program for a port; nil: a
	// stand-alone server (redisArgs). Cluster nodes and sentinels set it.
	args func(port int) []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server on a free port of 127.0.0.1, with AOF on (so
// Restart keeps the data, as a production Redis would) and RDB snapshots off.
// Under -short the test is skipped; otherwise it fails when redis-server is
// not installed (Need).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := Need(t, "Redis (Debian package redis-server)", "redis-server")[0]
	r := &Redis{bin: bin, dir: t.TempDir()}
	r.start(t, 0)
	t.Cleanup(r.Stop)
	return r
}

// start runs redis-server; port 0 picks a free one.
func (r *Redis) start(t testing.TB, port int) {
	t.Helper()
	if port == 0 {
		r.startWith(t, freeRedisPort)
		return
	}
	if err := r.run(port); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
}

// startWith runs the server on a port pick chooses. Picking a port and
// binding it are two steps, so a port taken in between is retried a few times.
func (r *Redis) startWith(t testing.TB, pick func() (int, error)) {
	t.Helper()
	var lastErr error
	for try := 0; try < 5; try++ {
		p, err := pick()
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		if lastErr = r.run(p); lastErr == nil {
			return
		}
	}
	t.Fatalf("start %s: %v", filepath.Base(r.bin), lastErr)
}

func (r *Redis) run(port int) error {
	logFile := filepath.Join(r.dir, "redis.log")
	args := r.redisArgs(port)
	if r.args != nil {
		args = r.args(port)
	}
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited (%w): %s", err, tail(logFile))
		default:
		}
		if ping(addr) == nil {
			r.mu.Lock()
			r.cmd, r.port = cmd, port
			r.Addr = addr
			r.URL = "redis://" + addr + "/0"
			r.mu.Unlock()
			go func() { _ = exitOf(exited) }() // reap it when it exits
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = exitOf(exited) // killed: its exit status says nothing
	return fmt.Errorf("redis-server on %s did not answer PING within 10s: %s", addr, tail(logFile))
}

// redisArgs are a stand-alone server's: AOF on, RDB snapshots off, the log in
// its directory, and a replica that connects synced at once (not after the
// default 5 s a primary waits for more replicas to share the transfer).
func (r *Redis) redisArgs(port int) []string {
	return []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", r.dir,
		"--save", "",
		"--appendonly", "yes",
		"--logfile", filepath.Join(r.dir, "redis.log"),
		"--daemonize", "no",
		"--repl-diskless-sync-delay", "0",
	}
}

// Stop kills the server. Safe to call twice.
func (r *Redis) Stop() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	// Wait for the port to close, so a Restart can bind it again.
	for i := 0; i < 200 && ping(r.Addr) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// Pause stops the server's process (SIGSTOP) without closing its
// connections, as a hung host would: clients and replicas wait on it.
// Resume (SIGCONT) lets it go on.
func (r *Redis) Pause(t testing.TB) { r.signal(t, syscall.SIGSTOP) }

// Resume continues a server Pause stopped.
func (r *Redis) Resume(t testing.TB) { r.signal(t, syscall.SIGCONT) }

func (r *Redis) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	cmd := r.running()
	if cmd == nil {
		t.Fatalf("redis-server on %s is not running", r.Addr)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal redis-server on %s: %v", r.Addr, err)
	}
}

// Restart stops the server and starts it again on the same port and directory;
// data written before survives through the append-only file.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	r.start(t, r.port)
}

// ping speaks just enough RESP to know the server answers.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freeRedisPort() (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// Find reads every key of every type (strings, hashes, lists, sets, sorted
// sets, streams) and returns the keys whose name or content holds needle, and
// how many keys of each type it read. Tests use it to prove a secret never
// reached Redis. A key of a type it cannot read fails the test.
func (r *Redis) Find(t testing.TB, needle string) (hits []string, types map[string]int) {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("redis KEYS: %v", err)
	}
	types = map[string]int{}
	for _, k := range keys {
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			t.Fatalf("redis TYPE %s: %v", k, err)
		}
		types[typ]++
		vals := []string{k}
		switch typ {
		case "string":
			v, err := c.Get(ctx, k).Result()
			if err == nil {
				vals = append(vals, v)
			}
		case "hash":
			m, _ := c.HGetAll(ctx, k).Result()
			for f, v := range m {
				vals = append(vals, f, v)
			}
		case "list":
			l, _ := c.LRange(ctx, k, 0, -1).Result()
			vals = append(vals, l...)
		case "set":
			l, _ := c.SMembers(ctx, k).Result()
			vals = append(vals, l...)
		case "zset":
			l, _ := c.ZRange(ctx, k, 0, -1).Result()
			vals = append(vals, l...)
		case "stream":
			msgs, _ := c.XRange(ctx, k, "-", "+").Result()
			for _, m := range msgs {
				for f, v := range m.Values {
					vals = append(vals, f, fmt.Sprint(v))
				}
			}
		case "none": // expired between KEYS and TYPE
		default:
			t.Errorf("redis key %s has type %s, which Find cannot read", k, typ)
		}
		for _, v := range vals {
			if strings.Contains(v, needle) {
				hits = append(hits, k+" ("+typ+")")
				break
			}
		}
	}
	return hits, types
}

// exitOf waits for a process's exit status from the channel its Wait feeds.
func exitOf(exited <-chan error) error { return <-exited }
