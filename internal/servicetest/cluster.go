package servicetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of real redis-servers on 127.0.0.1 for one
// test: masters joined by `redis-cli --cluster create`, each with its
// replicas, all killed when the test ends.
type RedisCluster struct {
	Nodes []*Redis // every node, masters and replicas, in the order created
}

// StartRedisCluster starts masters × (1 + replicas) `redis-server
// --cluster-enabled yes` on 127.0.0.1 (AOF on, cluster-node-timeout 1 s, so a
// replica takes over a dead master within a few seconds) and joins them with
// `redis-cli --cluster create … --cluster-yes`. It returns once every slot
// is served and every replica is in sync. Ports are below 55536: the
// cluster bus listens on port + 10000. Skipped under -short (Need).
func StartRedisCluster(t testing.TB, masters, replicas int) *RedisCluster {
	t.Helper()
	bins := Need(t, "a Redis Cluster (Debian package redis-server, with redis-cli)", "redis-server", "redis-cli")
	if masters < 3 {
		t.Fatalf("a Redis Cluster needs 3 masters at least, not %d", masters)
	}
	c := &RedisCluster{}
	var addrs []string
	for i := range masters * (1 + replicas) {
		r := &Redis{bin: bins[0], dir: filepath.Join(t.TempDir(), fmt.Sprintf("node-%d", i))}
		if err := os.MkdirAll(r.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		r.args = func(port int) []string {
			return append(r.redisArgs(port), "--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(r.dir, "nodes.conf"),
				"--cluster-node-timeout", "1000")
		}
		r.startWith(t, freeClusterPort)
		t.Cleanup(r.Stop)
		c.Nodes = append(c.Nodes, r)
		addrs = append(addrs, r.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	cmd := exec.Command(bins[1], args...)
	cmd.Stdin = nil // --cluster-yes: it asks nothing
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(t)
	return c
}

// Addrs are the nodes' addresses, the seeds a cluster client needs.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Client returns a cluster client on the nodes, closed when the test ends.
// It reloads the slot map every second: go-redis learns of a failover from
// a MOVED answer, which a dead master never gives, or from this reload
// (every 60 s by default).
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { cc.Close() })
	return cc
}

// node returns the running node at addr.
func (c *RedisCluster) node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// nodeInfo is one line of CLUSTER NODES.
type nodeInfo struct {
	id, addr, masterID string
	master, failed     bool
	slots              []string
}

// clusterNodes asks a running node for CLUSTER NODES.
func (c *RedisCluster) clusterNodes(ctx context.Context) ([]nodeInfo, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if n.running() == nil {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		raw, err := rc.ClusterNodes(ctx).Result()
		rc.Close()
		if err != nil {
			lastErr = err
			continue
		}
		var out []nodeInfo
		for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			out = append(out, nodeInfo{id: f[0], addr: addr, masterID: f[3],
				master: strings.Contains(f[2], "master"), failed: strings.Contains(f[2], "fail"), slots: f[8:]})
		}
		return out, nil
	}
	return nil, fmt.Errorf("no node answers CLUSTER NODES: %w", lastErr)
}

// MasterOf returns the node serving key's hash slot now, and its replicas.
func (c *RedisCluster) MasterOf(t testing.TB, key string) (master *Redis, replicas []*Redis) {
	t.Helper()
	nodes, err := c.clusterNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slot := int(redisKeySlot(key))
	var id string
	for _, n := range nodes {
		if n.master && !n.failed && servesSlot(n.slots, slot) {
			master, id = c.node(n.addr), n.id
		}
	}
	if master == nil {
		t.Fatalf("no master serves slot %d (key %s): %+v", slot, key, nodes)
	}
	for _, n := range nodes {
		if n.masterID == id && !n.failed {
			replicas = append(replicas, c.node(n.addr))
		}
	}
	return master, replicas
}

func servesSlot(ranges []string, slot int) bool {
	for _, r := range ranges {
		if strings.HasPrefix(r, "[") { // a slot being migrated
			continue
		}
		lo, hi, ok := strings.Cut(r, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && a <= slot && slot <= b {
			return true
		}
	}
	return false
}

// Failover makes a replica of key's master take over with CLUSTER FAILOVER
// (the coordinated, manual failover: the replica first catches up with its
// master, so nothing acknowledged is lost), and returns once the cluster is
// healthy again with the replica serving key's slot.
func (c *RedisCluster) Failover(t testing.TB, key string) (old, promoted *Redis) {
	t.Helper()
	old, replicas := c.MasterOf(t, key)
	if len(replicas) == 0 {
		t.Fatalf("the master of %s (%s) has no replica to fail over to", key, old.Addr)
	}
	promoted = replicas[0]
	rc := redis.NewClient(&redis.Options{Addr: promoted.Addr})
	defer rc.Close()
	if err := rc.ClusterFailover(context.Background()).Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", promoted.Addr, err)
	}
	c.waitMaster(t, key, promoted)
	c.WaitHealthy(t)
	return old, promoted
}

// Kill SIGKILLs key's master and waits for one of its replicas to take over
// (cluster-node-timeout, then an election). Writes the master acknowledged
// but had not sent to the replica yet are lost, as on a crashed host.
func (c *RedisCluster) Kill(t testing.TB, key string) (killed, promoted *Redis) {
	t.Helper()
	killed, replicas := c.MasterOf(t, key)
	if len(replicas) == 0 {
		t.Fatalf("the master of %s (%s) has no replica to fail over to", key, killed.Addr)
	}
	killed.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := c.masterOrNil(key); m != nil && m != killed {
			return killed, m
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no replica took over %s's slot within 30 s of killing %s", key, killed.Addr)
	return nil, nil
}

// masterOrNil is MasterOf without failing: nil while no healthy master serves
// key's slot.
func (c *RedisCluster) masterOrNil(key string) (*Redis, error) {
	ctx := context.Background()
	slot := int(redisKeySlot(key))
	nodes, err := c.clusterNodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.master && !n.failed && servesSlot(n.slots, slot) {
			if r := c.node(n.addr); r != nil && r.running() != nil {
				return r, nil
			}
		}
	}
	return nil, nil
}

func (c *RedisCluster) waitMaster(t testing.TB, key string, want *Redis) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := c.masterOrNil(key); m == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not take over %s's slot within 30 s", want.Addr, key)
}

// WaitHealthy waits until every running node says cluster_state:ok and every
// running replica's link to its master is up.
func (c *RedisCluster) WaitHealthy(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	var why string
	for time.Now().Before(deadline) {
		why = ""
		for _, n := range c.Nodes {
			if n.running() == nil {
				continue
			}
			rc := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
			info, err := rc.ClusterInfo(ctx).Result()
			repl, err2 := rc.Info(ctx, "replication").Result()
			rc.Close()
			switch {
			case err != nil || err2 != nil:
				why = fmt.Sprintf("%s: %v %v", n.Addr, err, err2)
			case !strings.Contains(info, "cluster_state:ok"):
				why = n.Addr + ": cluster_state is not ok"
			case strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up"):
				why = n.Addr + ": the replica's link to its master is not up"
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the cluster is not healthy after 30 s: %s", why)
}

// running returns the node's process, nil once stopped.
func (r *Redis) running() *exec.Cmd {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd
}

// freeClusterPort picks a port below 55536 whose port + 10000 (the cluster
// bus) is free too.
func freeClusterPort() (int, error) {
	for range 100 {
		p := 20000 + rand.IntN(55536-20000)
		if portFree(p) && portFree(p+10000) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port pair (p, p+10000) below 55536")
}

func portFree(p int) bool {
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// redisKeySlot is Redis Cluster's hash slot of key: CRC16 of the key, or of
// its hash tag (the part between the first { and the next }, if not empty).
func redisKeySlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}
