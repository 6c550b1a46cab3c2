package bench

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/queue"
)

// The first-call benchmark's shape: pushes posted one at a time, each
// firstCallGens generators on one simulated cloud, to firstCallWorkers
// workers.
const (
	firstCallWorkers = 3
	firstCallGens    = 2
	firstCallWarmup  = 6
	firstCallSamples = 100
	firstCallGoal    = 100 * time.Millisecond
)

// BenchmarkFirstCall: the time from the webhook's 202 to the first launch
// request of the push's builds on the simulated cloud, with three workers
// (issue 17, goal 5).
func BenchmarkFirstCall(b *testing.B) {
	for range b.N {
		benchFirstCall(b)
	}
}

// stamps keeps the first time each step of the path was reached, by key.
type stamps struct {
	mu      sync.Mutex
	at      map[string]time.Time // "step key" → first time
	repoOf  map[string]string    // build id → repository
	buildOf map[string][]string  // repository → build ids
}

func newStamps() *stamps {
	return &stamps{at: map[string]time.Time{}, repoOf: map[string]string{}, buildOf: map[string][]string{}}
}

func (s *stamps) mark(step, key string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.at[step+" "+key]; !ok {
		s.at[step+" "+key] = at
	}
}

func (s *stamps) get(step, key string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.at[step+" "+key]
	return t, ok
}

func (s *stamps) addBuild(repo, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.repoOf[id]; !ok {
		s.repoOf[id] = repo
		s.buildOf[repo] = append(s.buildOf[repo], id)
	}
}

func (s *stamps) builds(repo string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.buildOf[repo]...)
}

// The steps stamped, in path order.
const (
	stepDequeued = "delivery-dequeued" // by repo: the planner's first GitHub call
	stepPlanned  = "planned"           // by build: its record created (specs read)
	stepEnqueued = "enqueued"          // by build: its build task queued
	stepBuildDq  = "build-dequeued"    // by build: the runner's first read of it
	stepLaunch   = "launch"            // by build: the simulated cloud's Launch
)

// The wrappers stamp the steps as the planner and the runner pass them.
type stampGitHub struct {
	builds.GitHub
	s *stamps
}

func (g stampGitHub) Repo(ctx context.Context, inst int64) (builds.RepoClient, error) {
	at := time.Now()
	rc, err := g.GitHub.Repo(ctx, inst)
	if err != nil {
		return nil, err
	}
	return stampRepo{RepoClient: rc, s: g.s, at: at}, nil
}

type stampRepo struct {
	builds.RepoClient
	s  *stamps
	at time.Time // when the client was asked for
}

func (r stampRepo) FS(ctx context.Context, repo, ref string) fs.FS {
	r.s.mark(stepDequeued, repo, r.at)
	return r.RepoClient.FS(ctx, repo, ref)
}

type planStore struct {
	builds.Store
	s *stamps
}

func (p planStore) Create(ctx context.Context, b *builds.Build, sp *spec.Spec) (bool, error) {
	p.s.addBuild(b.Repo, b.ID)
	p.s.mark(stepPlanned, b.ID, time.Now())
	return p.Store.Create(ctx, b, sp)
}

type runStore struct {
	builds.Store
	s *stamps
}

func (r runStore) Get(ctx context.Context, id string) (*builds.Build, *spec.Spec, error) {
	r.s.mark(stepBuildDq, id, time.Now())
	return r.Store.Get(ctx, id)
}

type stampQueue struct {
	builds.Enqueuer
	s *stamps
}

func (q stampQueue) EnqueueBuild(ctx context.Context, build, cloud string, pw secret.String) error {
	err := q.Enqueuer.EnqueueBuild(ctx, build, cloud, pw)
	q.s.mark(stepEnqueued, build, time.Now())
	return err
}

// addWorker starts a worker as `imagegen worker` would, with its own Redis
// client, GitHub client and asynq server, its planner and runner stamping
// the steps into st.
func addWorker(tb testing.TB, s *service, st *stamps) *queue.Worker {
	tb.Helper()
	cfg := s.cfg
	rdb := redisClient(tb, cfg.Redis)
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sealer, err := queue.NewSealer(cfg.EncryptionKey)
	if err != nil {
		tb.Fatal(err)
	}
	q, err := queue.NewClient(rdb, cfg, sealer)
	if err != nil {
		tb.Fatal(err)
	}
	gh, err := github.New(cfg.GitHub, github.Options{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	store := s.store
	d := builds.Deps{Config: cfg, Store: store, Queue: q, GitHub: gh, Logger: log, Metrics: builds.NewMetrics(prometheus.NewRegistry())}
	pd := d
	pd.GitHub, pd.Store, pd.Queue = stampGitHub{GitHub: gh, s: st}, planStore{Store: store, s: st}, stampQueue{Enqueuer: q, s: st}
	rd := d
	rd.Store = runStore{Store: store, s: st}
	w, err := queue.NewWorker(queue.WorkerOptions{Config: cfg, Redis: rdb, Logger: log, Sealer: sealer,
		Deliveries: builds.NewDeliveries(github.ParseDelivery, builds.NewPlanner(pd), builds.NewReruns(d)),
		Runner:     builds.NewRunner(rd), Sweeper: builds.NewSweeper(d, q)})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Shutdown)
	return w
}

// firstCallSample is one push's way to its first launch, from its 202.
type firstCallSample struct {
	total                                      time.Duration // 202 → first launch request
	dequeue, plan, enqueue, buildDq, preLaunch time.Duration
}

func benchFirstCall(b *testing.B) {
	res := &Result{ID: "8-firstcall", Title: "Delivery to first cloud call", Started: time.Now()}
	// Builds that end quickly, so the pushes never pile up: the figure is the
	// path of one push through idle workers.
	clouds := "\n  sim: {type: simulated, launch_delay: 100ms, ssh_delay: 0s, snapshot_delay: 100ms}\n"
	s := startService(b, serviceOptions{clouds: clouds, concurrency: 10})
	st := newStamps()
	simulated.CloudOf(s.cfg.Clouds["sim"].Opener).OnLaunch(func(build string, at time.Time) { st.mark(stepLaunch, build, at) })
	ctx := context.Background()

	// The idle cost of the workers' polling, before any work: Redis commands
	// and CPU, and this process's CPU (the three workers, the server, the fakes).
	idleFor := 5 * time.Second
	for range firstCallWorkers {
		addWorker(b, s, st)
	}
	time.Sleep(time.Second) // past the workers' start-up
	before, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := CPUTime()
	time.Sleep(idleFor)
	idleCPU := CPUTime() - cpu0
	after, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	idle := after.Sub(before)

	plans := preparePushes(b, s, firstCallWarmup+firstCallSamples, firstCallGens, []string{"sim"})
	snd := newSender(s.url, 1)
	accepted := make([]time.Time, len(plans))
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 17))
	for i, p := range plans {
		code, err := snd.deliver(ctx, "push", fmt.Sprintf("firstcall-%d-%s", i, p.sha[:8]), p.sig, p.body)
		accepted[i] = time.Now()
		if err != nil {
			b.Fatal(err)
		}
		if code != http.StatusAccepted {
			b.Fatalf("push %d: status %d", i, code)
		}
		// One push at a time, at random phases of the workers' polls.
		time.Sleep(300*time.Millisecond + time.Duration(rng.Int64N(int64(400*time.Millisecond))))
	}
	// Every push's builds launched (a second at most after the last).
	var samples []firstCallSample
	err = waitUntil(30*time.Second, 20*time.Millisecond, func() bool {
		samples = samples[:0]
		for i, p := range plans[firstCallWarmup:] {
			sm, ok := firstCallOf(st, p.repo, accepted[firstCallWarmup+i])
			if !ok {
				return false
			}
			samples = append(samples, sm)
		}
		return true
	})
	if err != nil {
		b.Fatalf("%d of %d pushes reached their first launch", len(samples), firstCallSamples)
	}

	pick := func(f func(firstCallSample) time.Duration) []time.Duration {
		out := make([]time.Duration, len(samples))
		for i, sm := range samples {
			out[i] = f(sm)
		}
		return out
	}
	pcts := func(f func(firstCallSample) time.Duration) string {
		ds := pick(f)
		return Ms(Percentile(ds, 50)) + " / " + Ms(Percentile(ds, 90)) + " / " + Ms(Percentile(ds, 99))
	}
	total := pick(func(s firstCallSample) time.Duration { return s.total })
	p50, p99 := Percentile(total, 50), Percentile(total, 99)
	res.Method = fmt.Sprintf("%d pushes (after %d for warm-up), each of %d generators on one simulated cloud, posted one at a time to the real "+
		"`POST /webhook` every 300–700 ms (uniformly random, so at random phases of the workers' polls); %d workers as %d `imagegen worker` "+
		"processes would run them — each its own queue.Worker, asynq server, Redis client and GitHub App client — on one Redis, with the fake "+
		"GitHub and one simulated cloud (shared: it is in memory). The time runs from the moment the sender has the 202 to the simulated cloud's "+
		"first Launch request among the push's builds. Steps, stamped in the planner's and runner's dependencies (wrappers, no change to the "+
		"code path): delivery task dequeued = the planner asks GitHub for its client; plan done = the build's record created, the specs read on "+
		"the fake GitHub; build task enqueued; build task dequeued = the runner's first read of the record; then the runner's work before "+
		"Launch (record running, start report queued, cloud opened, leftovers listed). Breakdown figures are of the build that launched first. "+
		"The p99 of %d samples is their largest but one (nearest rank). The idle cost is taken over %s with the workers idle, before the pushes: what their polling costs (queue/worker.go taskCheckInterval).",
		firstCallSamples, firstCallWarmup, firstCallGens, firstCallWorkers, firstCallWorkers, firstCallSamples, idleFor)
	res.Figures = []Figure{
		Goal("202 → first launch request: p50", Ms(p50), "≤ "+Ms(firstCallGoal), p50 <= firstCallGoal),
		Fig("202 → first launch request: p90 / p99 / max", Ms(Percentile(total, 90))+" / "+Ms(p99)+" / "+Ms(Percentile(total, 100))),
		Fig("202 → delivery task dequeued: p50 / p90 / p99", pcts(func(s firstCallSample) time.Duration { return s.dequeue })),
		Fig("dequeued → plan done (GitHub reads, record): p50 / p90 / p99", pcts(func(s firstCallSample) time.Duration { return s.plan })),
		Fig("plan done → build task enqueued: p50 / p90 / p99", pcts(func(s firstCallSample) time.Duration { return s.enqueue })),
		Fig("enqueued → build task dequeued: p50 / p90 / p99", pcts(func(s firstCallSample) time.Duration { return s.buildDq })),
		Fig("build dequeued → launch request: p50 / p90 / p99", pcts(func(s firstCallSample) time.Duration { return s.preLaunch })),
		Fig(fmt.Sprintf("idle: Redis commands per second (%d workers)", firstCallWorkers), fmt.Sprintf("%.0f", float64(idle.Total())/idleFor.Seconds())),
		Fig(fmt.Sprintf("idle: Redis CPU / this process's CPU (%d workers)", firstCallWorkers), fmt.Sprintf("%.2f %% / %.2f %% of a core",
			100*idle.CPU.Seconds()/idleFor.Seconds(), 100*idleCPU.Seconds()/idleFor.Seconds())),
	}
	res.Notes = append(res.Notes, "idle Redis commands: "+strings.Join(idle.Top(4), ", "))
	res.Elapsed = time.Since(res.Started).Seconds()
	b.ReportMetric(float64(p50)/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(p99)/float64(time.Millisecond), "p99-ms")
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}

// firstCallOf returns the way of repo's push, accepted at t202, to the
// first launch request of its builds; false until every step is stamped.
func firstCallOf(st *stamps, repo string, t202 time.Time) (firstCallSample, bool) {
	dq, ok := st.get(stepDequeued, repo)
	if !ok {
		return firstCallSample{}, false
	}
	ids := st.builds(repo)
	if len(ids) < firstCallGens {
		return firstCallSample{}, false
	}
	var first string
	var launch time.Time
	for _, id := range ids {
		t, ok := st.get(stepLaunch, id)
		if !ok {
			return firstCallSample{}, false
		}
		if first == "" || t.Before(launch) {
			first, launch = id, t
		}
	}
	planned, ok1 := st.get(stepPlanned, first)
	enq, ok2 := st.get(stepEnqueued, first)
	bdq, ok3 := st.get(stepBuildDq, first)
	if !ok1 || !ok2 || !ok3 {
		return firstCallSample{}, false
	}
	return firstCallSample{total: launch.Sub(t202), dequeue: dq.Sub(t202), plan: planned.Sub(dq), enqueue: enq.Sub(planned),
		buildDq: bdq.Sub(enq), preLaunch: launch.Sub(bdq)}, true
}

// firstCallOf takes the steps of the push's build that launched first, and
// waits until every build of the push has launched.
func TestFirstCallOf(t *testing.T) {
	st := newStamps()
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	st.mark(stepDequeued, "o/r", ms(10))
	for i, id := range []string{"b1", "b2"} {
		st.addBuild("o/r", id)
		st.mark(stepPlanned, id, ms(12+i))
		st.mark(stepEnqueued, id, ms(14+i))
	}
	st.mark(stepBuildDq, "b1", ms(40))
	st.mark(stepBuildDq, "b2", ms(20))
	st.mark(stepLaunch, "b2", ms(21))
	if _, ok := firstCallOf(st, "o/r", t0); ok {
		t.Fatal("a sample before the push's second build launched")
	}
	st.mark(stepLaunch, "b1", ms(41))
	st.mark(stepLaunch, "b2", ms(99)) // only the first stamp counts
	got, ok := firstCallOf(st, "o/r", t0)
	want := firstCallSample{total: 21 * time.Millisecond, dequeue: 10 * time.Millisecond, plan: 3 * time.Millisecond,
		enqueue: 2 * time.Millisecond, buildDq: 5 * time.Millisecond, preLaunch: time.Millisecond}
	if !ok || got != want {
		t.Errorf("firstCallOf = %+v, %v; want %+v", got, ok, want)
	}
}
