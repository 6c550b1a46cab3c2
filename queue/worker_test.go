package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// workerEnv is a worker wired as cmd/imagegen wires it, on a real Redis,
// with an in-memory GitHub.
type workerEnv struct {
	store   *store.Store
	planner *builds.Planner
	worker  *Worker
}

func newWorkerEnv(t *testing.T, gh *githubtest.Mem, yml string) *workerEnv {
	t.Helper()
	r := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	file := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(file, []byte(yml), 0o600)
	cfg, err := config.Load(file, reg)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := NewSealer(cfg.EncryptionKey)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := NewClient(rdb, cfg, sealer)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: st, GitHub: gh, Queue: qc, Logger: slog.New(slog.DiscardHandler)}
	e := &workerEnv{store: st, planner: builds.NewPlanner(d)}
	e.worker, err = NewWorker(WorkerOptions{Config: cfg, Redis: rdb, Sealer: sealer,
		Deliveries: builds.NewDeliveries(github.ParseDelivery, e.planner, builds.NewReruns(d)),
		Runner:     builds.NewRunner(d), Sweeper: builds.NewSweeper(d, qc)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// plan plans a push creating main, and returns the id of the one build it makes.
func (e *workerEnv) plan(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	if err := e.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: strings.Repeat("0", 40), Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	bs, err := e.store.List(ctx, builds.ListOptions{})
	if err != nil || len(bs) != 1 {
		t.Fatalf("planned %d builds (%v); want 1", len(bs), err)
	}
	return bs[0].ID
}

// TestGiveUpIsReported: a build task that exhausted its retries is recorded
// failed and reported, never left pending.
func TestGiveUpIsReported(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n  sim2: {image: i, ssh_user: u}\n")}}}
	e := newWorkerEnv(t, gh, "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  sim: {type: simulated}\n  sim2: {type: simulated}\n")
	ctx := context.Background()
	id := e.plan(t)
	task, _ := NewBuildTask(BuildTask{Build: id, Cloud: "sim"}, time.Minute)
	// No retry information in ctx: asynq's last attempt looks the same.
	e.worker.handleError(ctx, task, errors.New("redis went away"))
	b, _, _ := e.store.Get(ctx, id)
	if c := b.Clouds["sim"]; c.State != builder.StateFailed || !strings.Contains(c.Error, "redis went away") {
		t.Errorf("record %+v", c)
	}
	if st := gh.Latest()["imagegen/a/sim"]; st.State != "failure" {
		t.Errorf("status %+v", st)
	}
	task2, _ := NewBuildTask(BuildTask{Build: id, Cloud: "sim2"}, time.Minute)
	if err := e.worker.Handler().ProcessTask(ctx, task2); err != nil {
		t.Fatal(err)
	}
	if runs := gh.Runs(); len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != "failure" {
		t.Errorf("check run %+v", runs)
	}
}

// TestShutdownGraceLetsBuildsFinish: a worker told to stop with a shutdown
// grace takes no new task but lets its running build finish.
func TestShutdownGraceLetsBuildsFinish(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  slow: {image: i, ssh_user: u}\n")}}}
	e := newWorkerEnv(t, gh, "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s, shutdown_grace: 20s}\nclouds:\n  slow: {type: simulated, launch_delay: 1s, snapshot_delay: 1s}\n")
	ctx := context.Background()
	id := e.plan(t)
	if err := e.worker.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _, err := e.store.Get(ctx, id)
		if err == nil && b.Clouds["slow"].State == builder.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build never started: %+v", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.worker.Shutdown() // the SIGTERM path
	b, _, _ := e.store.Get(ctx, id)
	if c := b.Clouds["slow"]; c.State != builder.StateSucceeded || c.Attempts != 1 || c.ImageID == "" {
		t.Errorf("after a graceful shutdown the build is %+v, want succeeded on its first attempt", c)
	}
}

// TestBuildTaskLookup: the sweep's view of build tasks (builds.Tasks) as
// asynq keeps them: queued, archived (retries spent), gone.
func TestBuildTaskLookup(t *testing.T) {
	r := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := &config.Config{}
	qc, err := NewClient(rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if info, err := qc.BuildTask(ctx, "b", "c"); err != nil || info.State != builds.TaskGone {
		t.Errorf("before any task: %+v %v; want gone (no queue yet)", info, err)
	}
	for _, c := range []string{"c", "d"} {
		if err := qc.EnqueueBuild(ctx, "b", c, secret.New("pw")); err != nil {
			t.Fatal(err)
		}
	}
	if err := qc.EnqueueBuild(ctx, "b", "c", secret.String{}); err != nil {
		t.Errorf("queuing a queued task again: %v; want nothing done", err)
	}
	if n, err := qc.QueueDepth(); err != nil || n != 2 {
		t.Errorf("queue depth %d %v; want 2", n, err)
	}
	if info, err := qc.BuildTask(ctx, "b", "c"); err != nil || info.State != builds.TaskPresent {
		t.Errorf("queued: %+v %v; want present", info, err)
	}
	if err := asynq.NewInspectorFromRedisClient(rdb).ArchiveTask(QueueName, buildTaskID("b", "d")); err != nil {
		t.Fatal(err)
	}
	if info, err := qc.BuildTask(ctx, "b", "d"); err != nil || info.State != builds.TaskArchived {
		t.Errorf("archived: %+v %v; want archived", info, err)
	}
	if err := qc.DeleteBuildTask(ctx, "b", "d"); err != nil {
		t.Fatal(err)
	}
	if info, err := qc.BuildTask(ctx, "b", "d"); err != nil || info.State != builds.TaskGone {
		t.Errorf("deleted: %+v %v; want gone", info, err)
	}
}

// TestAsynqError: the errors package builds marks become asynq's, which
// decide whether a failed task is retried, archived or deleted.
func TestAsynqError(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		err          error
		skip, revoke bool
	}{
		{base, false, false},
		{fmt.Errorf("build x: %w: %w", base, builds.ErrNoRetry), true, false},
		{fmt.Errorf("%w: %w", base, builds.ErrDropTask), false, true},
	}
	for _, tc := range tests {
		got := asynqError(tc.err)
		if !errors.Is(got, tc.err) || errors.Is(got, asynq.SkipRetry) != tc.skip || errors.Is(got, asynq.RevokeTask) != tc.revoke {
			t.Errorf("asynqError(%v) = %v; want skip retry %v, revoke %v", tc.err, got, tc.skip, tc.revoke)
		}
	}
	if asynqError(nil) != nil {
		t.Error("asynqError(nil) is not nil")
	}
}

// TestWorkerHandlesDeliveryTasksOfBothVersions: a worker plans the delivery
// tasks the webhook queues now (the parsed push) and those an older version
// queued (the payload as GitHub sent it, parsed by the worker).
func TestWorkerHandlesDeliveryTasksOfBothVersions(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	e := newWorkerEnv(t, gh, "github: {token: t, webhook_secret: s}\nclouds:\n  sim: {type: simulated}\n")
	ctx := context.Background()
	body := githubtest.Push(t, githubtest.PushOptions{Repo: "o/r", Before: strings.Repeat("0", 40), After: strings.Repeat("1", 40)})
	old := asynq.NewTask(TypeDelivery, []byte(`{"id":"old-1","event":"push","body":`+string(body)+`}`))
	ev, err := github.ParseDelivery("push", body)
	if err != nil {
		t.Fatal(err)
	}
	p := ev.(builds.Push)
	p.After = strings.Repeat("2", 40)
	cur, err := NewDeliveryTask(Delivery{ID: "new-1", Event: "push", Parsed: p})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []*asynq.Task{old, cur} {
		if err := e.worker.Handler().ProcessTask(ctx, task); err != nil {
			t.Fatalf("%s: %v", task.Payload()[:40], err)
		}
	}
	bs, err := e.store.List(ctx, builds.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range bs {
		got[b.Delivery] = b.Commit
	}
	if want := map[string]string{"old-1": strings.Repeat("1", 40), "new-1": strings.Repeat("2", 40)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("builds by delivery %v; want %v", got, want)
	}
}
