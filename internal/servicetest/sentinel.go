package servicetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the sentinels of StartRedisSentinel monitor.
const SentinelMaster = "imagegen"

// RedisSentinel is a primary, its replica and three redis-sentinels on
// 127.0.0.1 for one test, all killed when the test ends.
type RedisSentinel struct {
	Primary, Replica *Redis   // as started; after a failover Replica is the primary
	Sentinels        []*Redis // quorum 2 of 3
}

// StartRedisSentinel starts a primary and a replica (AOF on, appendfsync
// everysec) and three `redis-sentinel`s monitoring them as SentinelMaster
// with quorum 2, down-after-milliseconds 1000 and failover-timeout 10 s, so
// a dead primary is replaced within a few seconds. It returns once the
// replica is in sync and every sentinel knows the replica and the other
// sentinels. Skipped under -short (Need).
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	bins := Need(t, "Redis Sentinel (Debian packages redis-server and redis-sentinel)", "redis-server", "redis-sentinel")
	s := &RedisSentinel{Primary: &Redis{bin: bins[0], dir: t.TempDir()}}
	s.Primary.start(t, 0)
	t.Cleanup(s.Primary.Stop)
	s.Replica = StartRedisReplica(t, s.Primary)
	_, primaryPort, _ := net.SplitHostPort(s.Primary.Addr)
	for range 3 {
		sn := &Redis{bin: bins[1], dir: t.TempDir()}
		conf := filepath.Join(sn.dir, "sentinel.conf")
		sn.args = func(port int) []string {
			// A sentinel rewrites its config file: it must be its own and writable.
			src := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nlogfile %s\n"+
				"sentinel monitor %s 127.0.0.1 %s 2\n"+
				"sentinel down-after-milliseconds %[4]s 1000\n"+
				"sentinel failover-timeout %[4]s 10000\n"+
				"sentinel parallel-syncs %[4]s 1\n",
				port, sn.dir, filepath.Join(sn.dir, "redis.log"), SentinelMaster, primaryPort)
			if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
				t.Errorf("write %s: %v", conf, err)
			}
			return []string{conf}
		}
		sn.start(t, 0)
		t.Cleanup(sn.Stop)
		s.Sentinels = append(s.Sentinels, sn)
	}
	s.waitReady(t)
	return s
}

// StartRedisReplica starts a redis-server replicating primary (REPLICAOF)
// and returns once it is in sync. Skipped under -short (Need).
func StartRedisReplica(t testing.TB, primary *Redis) *Redis {
	t.Helper()
	bin := Need(t, "Redis (Debian package redis-server)", "redis-server")[0]
	r := &Redis{bin: bin, dir: t.TempDir()}
	host, port, _ := net.SplitHostPort(primary.Addr)
	r.args = func(p int) []string { return append(r.redisArgs(p), "--replicaof", host, port) }
	r.start(t, 0)
	t.Cleanup(r.Stop)
	waitReplica(t, r, primary)
	return r
}

// Addrs are the sentinels' addresses.
func (s *RedisSentinel) Addrs() []string {
	out := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		out[i] = sn.Addr
	}
	return out
}

// waitReady waits for the replica to be in sync and each sentinel to know
// one replica and two other sentinels: before that, a failover could not
// reach a quorum or would find no replica to promote.
func (s *RedisSentinel) waitReady(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	why := ""
	for time.Now().Before(deadline) {
		why = ""
		rc := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
		repl, err := rc.Info(ctx, "replication").Result()
		rc.Close()
		if err != nil || !containsLine(repl, "master_link_status:up") {
			why = fmt.Sprintf("replica %s not in sync (%v)", s.Replica.Addr, err)
		}
		for _, sn := range s.Sentinels {
			if why != "" {
				break
			}
			sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
			m, err := sc.Master(ctx, SentinelMaster).Result()
			sc.Close()
			if err != nil {
				why = fmt.Sprintf("sentinel %s: %v", sn.Addr, err)
			} else if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				why = fmt.Sprintf("sentinel %s knows %s replicas and %s other sentinels", sn.Addr, m["num-slaves"], m["num-other-sentinels"])
			}
		}
		if why == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sentinels not ready after 30 s: %s", why)
}

// PrimaryAddr asks the sentinels which address is the primary now.
func (s *RedisSentinel) PrimaryAddr(t testing.TB) string {
	t.Helper()
	var lastErr error
	for _, sn := range s.Sentinels {
		if sn.running() == nil {
			continue
		}
		sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
		a, err := sc.GetMasterAddrByName(context.Background(), SentinelMaster).Result()
		sc.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1])
		}
		lastErr = err
	}
	t.Fatalf("no sentinel names the primary: %v", lastErr)
	return ""
}

// KillPrimary SIGKILLs the primary, as a crashed host would go, and waits
// until the sentinels have promoted the replica (about down-after-milliseconds
// plus an election: a few seconds). Writes the primary acknowledged but had
// not sent to the replica yet are lost.
func (s *RedisSentinel) KillPrimary(t testing.TB) time.Duration {
	t.Helper()
	if a := s.PrimaryAddr(t); a != s.Primary.Addr {
		t.Fatalf("the primary is %s, not %s", a, s.Primary.Addr)
	}
	start := time.Now()
	s.Primary.Stop()
	deadline := start.Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if s.PrimaryAddr(t) == s.Replica.Addr {
			rc := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
			role, err := rc.Do(context.Background(), "ROLE").Slice()
			rc.Close()
			if err == nil && len(role) > 0 && role[0] == "master" {
				return time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the sentinels did not promote %s within 60 s of killing %s", s.Replica.Addr, s.Primary.Addr)
	return 0
}

// Rejoin starts the primary KillPrimary killed again, on its port and in its
// directory, as a replica of the replica that took over (as a restarted pod
// asks the sentinels for the primary), and returns once the new primary
// counts it online, so WAIT 1 on the new primary is answered again.
func (s *RedisSentinel) Rejoin(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	host, port, _ := net.SplitHostPort(s.Replica.Addr)
	s.Primary.args = func(p int) []string { return append(s.Primary.redisArgs(p), "--replicaof", host, port) }
	s.Primary.start(t, s.Primary.port)
	waitReplica(t, s.Primary, s.Replica)
	return time.Since(start)
}

// waitReplica waits until replica is in sync with primary and primary counts
// it online (it counts a replica in WAIT only from its first acknowledgement).
func waitReplica(t testing.TB, replica, primary *Redis) {
	t.Helper()
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rc.Close()
	pc := redis.NewClient(&redis.Options{Addr: primary.Addr})
	defer pc.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		repl, err := rc.Info(ctx, "replication").Result()
		prim, err2 := pc.Info(ctx, "replication").Result()
		if err == nil && err2 == nil && containsLine(repl, "master_link_status:up") && strings.Contains(prim, "port="+strconv.Itoa(replica.port)+",state=online") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not in sync with %s after 30 s: %v %v", replica.Addr, primary.Addr, err, err2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSuffix(l, "\r") == line {
			return true
		}
	}
	return false
}
