package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// A config with redis_sentinel reaches the master through a real Sentinel.
func TestRedisSentinelConfig(t *testing.T) {
	master := servicetest.StartRedis(t)
	_, masterPort, _ := net.SplitHostPort(master.Addr)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sentinelAddr := l.Addr().String()
	_, sentinelPort, _ := net.SplitHostPort(sentinelAddr)
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	// Sentinel rewrites its config file, so it must be writable.
	if err := os.WriteFile(conf, fmt.Appendf(nil, "bind 127.0.0.1\nport %s\ndir %s\nlogfile %s\nsentinel monitor mymaster 127.0.0.1 %s 1\n", sentinelPort, dir, filepath.Join(dir, "sentinel.log"), masterPort), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sentinel: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	src := fmt.Sprintf("redis_sentinel: {master_name: mymaster, addrs: [%q]}\ngithub: {webhook_secret: s3cret-hook}\n", sentinelAddr)
	path := filepath.Join(dir, "imagegen.yaml")
	os.WriteFile(path, []byte(src), 0o600)
	cfg, err := config.Load(path, clouds.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	opt, err := redisConnOpt(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rdb := opt.MakeRedisClient().(redis.UniversalClient)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err = rdb.Set(ctx, "imagegen:sentinel-test", "through-sentinel", 0).Err()
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the sentinel is still starting
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
		t.Fatalf("set through the sentinel: %v\nsentinel log:\n%s", err, log)
	}
	// The value is on the master itself: the client found it through Sentinel.
	direct := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer direct.Close()
	if v, err := direct.Get(ctx, "imagegen:sentinel-test").Result(); err != nil || v != "through-sentinel" {
		t.Fatalf("on the master: %q, %v", v, err)
	}
	if a := cfg.RedisAddr(); !strings.Contains(a, "mymaster") || !strings.Contains(a, sentinelAddr) {
		t.Errorf("RedisAddr() = %q", a)
	}
}
