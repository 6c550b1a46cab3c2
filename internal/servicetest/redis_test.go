package servicetest

import (
	"context"
	"testing"

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
