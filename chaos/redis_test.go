package chaos

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/internal/servicetest"
)

// redisProc is a redis-server configured as `make run` configures it (AOF,
// appendfsync everysec), which the suite restarts the way an operator or
// Kubernetes does: SIGTERM (Redis flushes its AOF), then start again.
// Redis writes the AOF before it answers, so even a killed redis-server keeps
// what it acknowledged; everysec only risks the last second on a machine crash.
type redisProc struct {
	bin, dir, addr string
	port           int
	fsync          string
	cmd            *exec.Cmd
	done           chan error
}

func startRedis(t *testing.T, dir string) *redisProc {
	return startRedisFsync(t, dir, "everysec")
}

func startRedisFsync(t *testing.T, dir, fsync string) *redisProc {
	t.Helper()
	bin := servicetest.Need(t, "Redis (Debian package redis-server)", "redis-server")[0]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := &redisProc{bin: bin, dir: rdir, port: port, fsync: fsync, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	r.start(t)
	t.Cleanup(func() { r.stop(syscall.SIGKILL) })
	return r
}

func (r *redisProc) url() string { return "redis://" + r.addr + "/0" }

func (r *redisProc) start(t *testing.T) {
	cmd := exec.Command(r.bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", r.fsync,
		"--logfile", filepath.Join(r.dir, "redis.log"), "--daemonize", "no")
	if err := cmd.Start(); err != nil {
		t.Errorf("start redis-server: %v", err)
		return
	}
	r.cmd, r.done = cmd, make(chan error, 1)
	go func() { r.done <- cmd.Wait() }()
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("redis-server on %s did not answer within 10s", r.addr)
}

func (r *redisProc) stop(sig syscall.Signal) {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}
