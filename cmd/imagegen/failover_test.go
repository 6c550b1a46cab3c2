package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// failoverRun is `imagegen serve` (with its worker) in this process on the
// Redis its config names, the simulated cloud (its state in a file, so the
// test sees what the service launched) and the fake GitHub, and the pushes
// sent to it.
type failoverRun struct {
	t      *testing.T
	base   string
	gh     *githubtest.Server
	state  string // the simulated cloud's state file
	dir    string
	config func(sweep time.Duration) string
	logs   *servicetest.Buffer
	stop   func()
	shas   []string
	bodies [][]byte

	accepted []atomic.Bool // answered 202 (or 200: a redelivery of an accepted one)
	retried  atomic.Int64  // answers that were not 2xx (Redis away), sent again
}

const (
	failoverRepo   = "failover/images"
	failoverSecret = "whsec-failover-5d2e8c1a7b"
	failoverCloud  = "sim"
)

// startFailoverRun prepares n pushes, each changing one generator, and the
// config of a service on redisYAML (the config's Redis lines); serve starts it.
func startFailoverRun(t *testing.T, redisYAML string, n int) *failoverRun {
	t.Helper()
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	r := &failoverRun{t: t, base: "http://" + addr, gh: gh, state: filepath.Join(dir, "sim.json"), logs: &servicetest.Buffer{},
		accepted: make([]atomic.Bool, n), stop: func() {}}
	r.config = func(sweep time.Duration) string {
		return fmt.Sprintf(`listen: %s
%s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
encryption_key: %s
build: {timeout: 1m, cleanup_timeout: 10s, concurrency: 16, sweep_interval: %s}
clouds:
  %s: {type: simulated, launch_delay: 10ms, stop_delay: 5ms, snapshot_delay: 20ms, state_file: %q}
`, addr, redisYAML, app.AppID, app.PrivateKeyFile, failoverSecret, gh.URL(), strings.Repeat("f0", 32), sweep, failoverCloud, r.state)
	}
	r.dir = dir
	for i := range n {
		sha := fmt.Sprintf("%040x", 0xfa110000+i)
		gh.SetFile(failoverRepo, sha, ".imagegen/g.yaml", []byte(fmt.Sprintf("script: echo failover %d\nclouds:\n  %s: {image: debian-12, ssh_user: debian}\n", i, failoverCloud)))
		r.shas = append(r.shas, sha)
		r.bodies = append(r.bodies, githubtest.Push(t, githubtest.PushOptions{Repo: failoverRepo, Before: strings.Repeat("0", 40), After: sha}))
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("serve's log (tail):\n%s", tailLines(r.logs.String(), 60))
		}
	})
	return r
}

// serve starts `imagegen serve` (and its worker) in this process, sweeping
// every sweep, and waits until it is ready; r.stop stops it. The sweep's
// grace for a build whose task is missing is its interval: the runs keep it
// long (1 min), as a short one fails the builds whose task a delivery could
// not queue while Redis was away before the delivery's retry queues it.
func (r *failoverRun) serve(sweep time.Duration) {
	t := r.t
	t.Helper()
	file := filepath.Join(r.dir, "imagegen.yaml")
	if err := os.WriteFile(file, []byte(r.config(sweep)), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	e := &env{stdin: strings.NewReader(""), stdout: r.logs, stderr: r.logs, lookup: func(string) (string, bool) { return "", false }}
	go func() { done <- serveCmd(ctx, e, []string{"--config", file}, reg) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Error("serve did not stop within 60 s")
			}
		})
	}
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get(r.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// githubClient gives up on an answer after 10 s, as GitHub does.
var githubClient = &http.Client{Timeout: 10 * time.Second}

// deliver posts push i until it is answered 202 or 200 (as GitHub's
// redeliver would after a 5xx), for at most a minute.
func (r *failoverRun) deliver(i int) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && !r.t.Failed(); {
		req, _ := http.NewRequest(http.MethodPost, r.base+"/webhook", bytes.NewReader(r.bodies[i]))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("failover-%05d", i))
		req.Header.Set("X-Hub-Signature-256", githubtest.Sign([]byte(failoverSecret), r.bodies[i]))
		resp, err := githubClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
				r.accepted[i].Store(true)
				return
			}
		}
		r.retried.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
}

// deliverAll sends pushes [from, to) from 8 senders at once, each pausing
// 100 ms between its pushes (about 80 pushes a second), so a run spans the
// failover.
func (r *failoverRun) deliverAll(from, to int) {
	next := atomic.Int64{}
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				r.deliver(i)
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
}

const failoverContext = "imagegen/g/" + failoverCloud

// settle waits until every accepted push has a final status, at most d.
func (r *failoverRun) settle(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && r.count().Pending > 0 {
		time.Sleep(200 * time.Millisecond)
	}
}

// failoverTable is what a failover run promises: every push answered 202 is
// built (not lost), none is left pending, none is built twice.
type failoverTable struct {
	Pushes, Accepted, Succeeded int
	Lost, Pending, Duplicates   int
}

func (tb failoverTable) String() string {
	return fmt.Sprintf("pushes %d, accepted %d, succeeded %d, lost %d, pending %d, duplicates %d",
		tb.Pushes, tb.Accepted, tb.Succeeded, tb.Lost, tb.Pending, tb.Duplicates)
}

func (r *failoverRun) count() failoverTable {
	tb := failoverTable{Pushes: len(r.shas)}
	for i, sha := range r.shas {
		if !r.accepted[i].Load() {
			continue
		}
		tb.Accepted++
		switch r.gh.LatestStatuses(failoverRepo, sha)[failoverContext].State {
		case "success":
			tb.Succeeded++
		case "failure", "error":
			tb.Lost++ // the simulated cloud never fails: a failure is a lost task
		default:
			tb.Pending++ // no status, or pending: not built (yet)
		}
	}
	runs := map[string]int{}
	for _, cr := range r.gh.CheckRuns(failoverRepo) {
		runs[cr.HeadSHA]++
	}
	for _, n := range runs {
		tb.Duplicates += n - 1
	}
	return tb
}

// check asserts the table's promises once every build has settled; a
// build still pending then is lost.
func (r *failoverRun) check(label string) failoverTable {
	r.t.Helper()
	tb := r.count()
	tb.Lost += tb.Pending
	r.t.Logf("%s: %s; %d webhook answers were not 2xx and were sent again", label, tb, r.retried.Load())
	if tb.Accepted != tb.Pushes || tb.Succeeded != tb.Accepted || tb.Duplicates != 0 {
		r.t.Errorf("%s broke a promise: %s", label, tb)
	}
	return tb
}

// TestServiceOnRedisCluster runs imagegen on a real Redis Cluster of three
// masters with a replica each (redis_cluster, redis_durability: replica):
// pushes are built while the master holding the queue hands its slots to
// its replica (CLUSTER FAILOVER), and then the sweep, restarted with a
// short interval, fails a build whose task was lost and removes what a
// finished build left in the cloud. Before the hash tags the first push
// failed with "create build …: CROSSSLOT Keys in request don't hash to the
// same slot".
func TestServiceOnRedisCluster(t *testing.T) {
	rc := servicetest.StartRedisCluster(t, 3, 1)
	const n = 60
	r := startFailoverRun(t, fmt.Sprintf("redis_cluster: {addrs: [%s]}\nredis_durability: replica", strings.Join(rc.Addrs(), ", ")), n)
	r.serve(time.Minute)

	sent := make(chan struct{})
	go func() { defer close(sent); r.deliverAll(0, n) }()
	waitFor(t, "a third of the pushes to be accepted", func() bool { return r.count().Accepted >= n/3 })
	old, promoted := rc.Failover(t, queueKey)
	t.Logf("CLUSTER FAILOVER: %s took the queue's slots over from %s with %d of %d pushes accepted", promoted.Addr, old.Addr, r.count().Accepted, n)
	<-sent
	r.settle(2 * time.Minute)
	r.check("cluster, CLUSTER FAILOVER of the queue's master")

	// The sweep, on the cluster: a build whose task is gone is failed, and
	// what a finished build left in the cloud is removed.
	r.stop()
	ctx := context.Background()
	st := store.New(rc.Client(t), time.Hour, 0)
	lost := &builds.Build{ID: "lostbuild0001", Repo: failoverRepo, Commit: r.shas[0], Generator: "g", Created: time.Now(), Installation: 1,
		Clouds: map[string]*builds.CloudRecord{failoverCloud: {Cloud: failoverCloud, State: builder.StateQueued, Queued: time.Now().Add(-time.Minute)}}}
	if _, err := st.Create(ctx, lost, &spec.Spec{Name: "g", Script: "echo lost"}); err != nil {
		t.Fatal(err)
	}
	bs, err := st.List(ctx, builds.ListOptions{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var finished string
	for _, b := range bs {
		if b.ID != lost.ID && b.State.Final() {
			finished = b.ID
		}
	}
	if finished == "" {
		t.Fatalf("no finished build among %d", len(bs))
	}
	sim := simulated.New(simulated.Options{StateFile: r.state})
	var inst clouds.Instance
	if err := sim.Launch(ctx, clouds.LaunchRequest{Build: finished, Image: "debian-12", User: "debian"}, &inst); err != nil {
		t.Fatal(err)
	}
	r.serve(time.Second)
	waitFor(t, "the sweep to fail the lost build and remove the leftover", func() bool {
		b, _, err := st.Get(ctx, lost.ID)
		return err == nil && b.Clouds[failoverCloud].State == builder.StateFailed && len(sim.Live()) == 0
	})
	b, _, _ := st.Get(ctx, lost.ID)
	if e := b.Clouds[failoverCloud].Error; !strings.Contains(e, "its task was lost") {
		t.Errorf("the lost build's error: %q", e)
	}
	if st := r.gh.LatestStatuses(failoverRepo, r.shas[0])[failoverContext]; st.State != "failure" || !strings.Contains(st.Description, "lost") {
		t.Errorf("the lost build's status: %+v", st)
	}
	r.stop()
	if strings.Contains(r.logs.String(), "CROSSSLOT") {
		t.Errorf("serve logged CROSSSLOT:\n%s", tailLines(r.logs.String(), 20))
	}
}

// queueKey is a key of asynq's queue: its hash tag is the queue's name.
const queueKey = "asynq:{imagegen}:pending"

// TestSentinelFailoverLosesNoBuild runs 200 pushes through imagegen on a
// primary and its replica behind three redis-sentinels (redis_sentinel,
// redis_durability: replica) and SIGKILLs the primary a third of the way
// through: the sentinels promote the replica, and every push answered 202
// is built once; none is lost, none left pending. asynq retries the tasks
// whose state change failed while Redis was away only once their lease has
// expired (30 s) and its recoverer (every minute) has run: the run takes
// about a minute and a half.
func TestSentinelFailoverLosesNoBuild(t *testing.T) {
	s := servicetest.StartRedisSentinel(t)
	n := 200
	if v, err := strconv.Atoi(os.Getenv("FAILOVER_BUILDS")); err == nil && v > 0 {
		n = v
	}
	r := startFailoverRun(t, fmt.Sprintf("redis_sentinel: {master_name: %s, addrs: [%s]}\nredis_durability: replica", servicetest.SentinelMaster, strings.Join(s.Addrs(), ", ")), n)
	r.serve(time.Minute)

	start := time.Now()
	sent := make(chan struct{})
	go func() { defer close(sent); r.deliverAll(0, n) }()
	waitFor(t, "a third of the pushes to be accepted", func() bool { return r.count().Accepted >= n/3 })
	accepted := r.count().Accepted
	took := s.KillPrimary(t)
	t.Logf("SIGKILL of the primary %s with %d of %d pushes accepted: the sentinels promoted %s after %s", s.Primary.Addr, accepted, n, s.Replica.Addr, took.Round(time.Millisecond))
	// The new primary has no replica: every delivery waits for one and is
	// answered 503 (and sent again) until the old primary, restarted,
	// replicates the new one.
	rejoined := s.Rejoin(t)
	t.Logf("the old primary restarted as the new one's replica after %s more", rejoined.Round(time.Millisecond))
	<-sent
	r.settle(3 * time.Minute)
	r.check(fmt.Sprintf("sentinel, %d pushes, primary SIGKILLed (%s)", n, time.Since(start).Round(time.Second)))

	// What Redis holds afterwards: a build per push, on the new primary.
	rdb := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
	defer rdb.Close()
	bs, err := store.New(rdb, 0, 0).List(context.Background(), builds.ListOptions{Limit: 500})
	if err != nil || len(bs) != n {
		t.Errorf("%d builds recorded on the new primary (%v), want %d", len(bs), err, n)
	}
}
