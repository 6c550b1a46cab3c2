package servicetest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRedisRestartKeepsData(t *testing.T) {
	r := StartRedis(t)
	ctx := context.Background()
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DialerRetries, opt.MaxRetries = 1, -1 // fail fast once stopped
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart: get k = %q, %v; want v (AOF keeps data)", got, err)
	}
	r.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("ping after Stop succeeded; want the server gone")
	}
	r.Stop() // twice is fine
}

func TestTwoServersAreSeparate(t *testing.T) {
	a, b := StartRedis(t), StartRedis(t)
	if a.Addr == b.Addr {
		t.Fatalf("both on %s", a.Addr)
	}
	ctx := context.Background()
	ca := redis.NewClient(&redis.Options{Addr: a.Addr})
	cb := redis.NewClient(&redis.Options{Addr: b.Addr})
	defer ca.Close()
	defer cb.Close()
	if err := ca.Set(ctx, "only-a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := cb.Exists(ctx, "only-a").Result(); err != nil || n != 0 {
		t.Fatalf("b sees a's key: %d, %v", n, err)
	}
}

func TestFindReadsEveryType(t *testing.T) {
	r := StartRedis(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	const needle = "needle-in-redis"
	writes := []struct {
		key   string
		write func(key string) error
	}{
		{"s", func(k string) error { return c.Set(ctx, k, "x"+needle, 0).Err() }},
		{"h", func(k string) error { return c.HSet(ctx, k, "f", needle).Err() }},
		{"l", func(k string) error { return c.RPush(ctx, k, "a", needle).Err() }},
		{"st", func(k string) error { return c.SAdd(ctx, k, needle).Err() }},
		{"z", func(k string) error { return c.ZAdd(ctx, k, redis.Z{Score: 1, Member: needle}).Err() }},
		{"x", func(k string) error {
			return c.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: map[string]any{"f": needle}}).Err()
		}},
	}
	for _, w := range writes {
		if err := w.write(w.key); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, "clean", "nothing here", 0).Err(); err != nil {
		t.Fatal(err)
	}
	hits, types := r.Find(t, needle)
	if len(hits) != len(writes) {
		t.Errorf("found the needle in %v; want all %d keys but clean", hits, len(writes))
	}
	for _, typ := range []string{"string", "hash", "list", "set", "zset", "stream"} {
		if types[typ] == 0 {
			t.Errorf("no %s read", typ)
		}
	}
}

// A three-master cluster with replicas serves every slot; a key moves to a
// replica through CLUSTER FAILOVER with its value, and through the death of
// its master too.
func TestRedisCluster(t *testing.T) {
	c := StartRedisCluster(t, 3, 1)
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	for _, n := range c.Nodes {
		_, port, _ := net.SplitHostPort(n.Addr)
		if p, _ := strconv.Atoi(port); p >= 55536 {
			t.Errorf("node on port %d: its cluster bus port would be over 65535", p)
		}
	}
	ctx := context.Background()
	cc := c.Client(t)
	for _, k := range []string{"a", "b", "c", "{x}1", "{x}2"} {
		if err := cc.Set(ctx, k, "v-"+k, 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	// A script on two keys of one hash tag works; on two slots it does not.
	if err := cc.Eval(ctx, "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"{x}1", "{x}2"}).Err(); err != nil {
		t.Errorf("script on one hash tag: %v", err)
	}
	if err := cc.Eval(ctx, "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"a", "b"}).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("script on two slots: %v, want CROSSSLOT", err)
	}
	if s := redisKeySlot("{x}1"); s != redisKeySlot("x") {
		t.Errorf("slot of {x}1 = %d, of x %d", s, redisKeySlot("x"))
	}
	if got, err := cc.ClusterKeySlot(ctx, "imagegen:build:{0123abcd}").Result(); err != nil || uint16(got) != redisKeySlot("imagegen:build:{0123abcd}") {
		t.Errorf("CLUSTER KEYSLOT = %d, %v; redisKeySlot %d", got, err, redisKeySlot("imagegen:build:{0123abcd}"))
	}

	old, promoted := c.Failover(t, "a")
	if m, _ := c.MasterOf(t, "a"); m != promoted || m == old {
		t.Fatalf("after CLUSTER FAILOVER, a is on %s; want %s", m.Addr, promoted.Addr)
	}
	if v, err := cc.Get(ctx, "a").Result(); err != nil || v != "v-a" {
		t.Errorf("after the failover: a = %q, %v", v, err)
	}
	killed, promoted := c.Kill(t, "b")
	if killed.running() != nil || promoted == killed {
		t.Fatalf("killed %s, promoted %s", killed.Addr, promoted.Addr)
	}
	for wait := time.Now(); ; {
		v, err := cc.Get(ctx, "b").Result()
		if err == nil && v == "v-b" {
			break
		}
		if time.Since(wait) > 20*time.Second {
			t.Fatalf("after killing b's master: b = %q, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The sentinels promote the replica when the primary dies; a failover client
// writes to the new primary and reads what it wrote before.
func TestRedisSentinel(t *testing.T) {
	s := StartRedisSentinel(t)
	if a := s.PrimaryAddr(t); a != s.Primary.Addr {
		t.Fatalf("primary %s, want %s", a, s.Primary.Addr)
	}
	ctx := context.Background()
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: s.Addrs()})
	defer fc.Close()
	if err := fc.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := fc.Wait(ctx, 1, time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1: %d, %v", n, err)
	}
	took := s.KillPrimary(t)
	t.Logf("failover took %s", took)
	if a := s.PrimaryAddr(t); a != s.Replica.Addr {
		t.Fatalf("primary after the failover: %s, want %s", a, s.Replica.Addr)
	}
	for wait := time.Now(); ; {
		v, err := fc.Get(ctx, "k").Result()
		if err == nil && v == "before" && fc.Set(ctx, "k2", "after", 0).Err() == nil {
			break
		}
		if time.Since(wait) > 20*time.Second {
			t.Fatalf("after the failover: k = %q, %v", v, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
