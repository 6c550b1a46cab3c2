package builds_test

import (
	"context"
	"fmt"
	"io/fs"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/queue"
)

// staleAfterFinal returns the statuses that landed after the first final
// (success, failure, error) one and are not final themselves.
func staleAfterFinal(seq []builds.Status) []builds.Status {
	var stale []builds.Status
	final := false
	for _, s := range seq {
		switch {
		case s.State != "pending":
			final = true
		case final:
			stale = append(stale, s)
		}
	}
	return stale
}

// TestProgressNeverLandsAfterTheEnd: progress statuses are posted from the
// side while the build goes on; however slow GitHub is with them, none lands
// after the build's final status, and the statuses begin pending.
func TestProgressNeverLandsAfterTheEnd(t *testing.T) {
	tests := []struct {
		name   string
		clouds string // the cloud "c" of the config
		slow   time.Duration
		phases bool // a phase ("running: …") is reported
	}{
		// The build is over before the first progress report could land: only
		// the start is reported (held up), then the end.
		{"instant build", "c: {type: simulated}", 300 * time.Millisecond, false},
		// Phases are reported during the launch and the snapshot, each held up
		// past the next phase, the last one past the build's end.
		{"phases in flight at the end", "c: {type: simulated, launch_delay: 200ms, snapshot_delay: 700ms}", 600 * time.Millisecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo hi\nclouds:\n  c: {image: i, ssh_user: u}\n")}}}
			gh.Hook = func(s builds.Status) {
				if strings.HasPrefix(s.Description, "running") {
					time.Sleep(tc.slow) // GitHub slow to accept progress
				}
			}
			s, _, _ := newServiceWith(t, gh, "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  "+tc.clouds+"\n")
			ctx := context.Background()
			if err := s.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}); err != nil {
				t.Fatal(err)
			}
			if err := s.runner.Run(ctx, builds.RunRequest{Build: builds.PlanID("d", "a"), Cloud: "c"}); err != nil {
				t.Fatal(err)
			}
			seq := gh.Sequence(builds.StatusContext("a", "c"))
			var got []string
			running, phases := 0, 0
			for _, st := range seq {
				got = append(got, st.State+" "+st.Description)
				if strings.HasPrefix(st.Description, "running") {
					running++
				}
				if strings.HasPrefix(st.Description, "running: ") {
					phases++
				}
			}
			if tc.phases && phases == 0 {
				t.Errorf("statuses %q; want a phase reported", got)
			}
			if len(seq) == 0 || seq[len(seq)-1].State != "success" {
				t.Fatalf("statuses %q; want the last one success", got)
			}
			if stale := staleAfterFinal(seq); len(stale) > 0 {
				t.Errorf("statuses %q: %d pending after the final one", got, len(stale))
			}
			if seq[0].State != "pending" || running == 0 {
				t.Errorf("statuses %q; want pending first, and the start reported", got)
			}
			if runs := gh.Runs(); len(runs) != 1 || runs[0].Conclusion != "success" {
				t.Errorf("check runs %+v; want one, succeeded", runs)
			}
		})
	}
}

// TestReportsAreSerialized: a report made from an older read of the record
// (a plan's "queued", held up by GitHub) cannot land after a newer one (the
// build's end): reports of one build take turns, each reading the record.
func TestReportsAreSerialized(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noChecks bool
	}{{"app", false}, {"token", true}} {
		t.Run(tc.name, func(t *testing.T) {
			gh := &githubtest.Mem{NoCheckRuns: tc.noChecks, Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
			s, _, _ := newService(t, gh)
			ctx := context.Background()
			if err := s.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}); err != nil {
				t.Fatal(err)
			}
			id := builds.PlanID("d", "a")
			entered, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			gh.SetHook(func(st builds.Status) {
				if st.Description == "queued" {
					once.Do(func() { close(entered); <-release })
				}
			})
			older := make(chan error, 1)
			go func() { older <- s.reporter.Report(ctx, gh, id, "sim") }()
			select { // the older report has read "queued" and is sending it
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the report never sent the queued status")
			}
			if err := builds.RecordResult(ctx, s.deps, &builds.Build{ID: id}, "sim", builder.Result{Cloud: "sim", State: builder.StateSucceeded, Finished: time.Now()}); err != nil {
				t.Fatal(err)
			}
			newer := make(chan error, 1)
			go func() { newer <- s.reporter.Report(ctx, gh, id, "sim") }()
			// Time for a report that does not wait its turn to land first.
			landed := false
			select {
			case err := <-newer:
				landed = true
				t.Errorf("the newer report landed (err %v) while an older one was still being sent", err)
			case <-time.After(200 * time.Millisecond):
			}
			close(release)
			if err := <-older; err != nil {
				t.Fatal(err)
			}
			if !landed {
				if err := <-newer; err != nil {
					t.Fatal(err)
				}
			}
			seq := gh.Sequence(builds.StatusContext("a", "sim"))
			if last := seq[len(seq)-1]; last.State != "success" {
				t.Errorf("last status %+v; want success (statuses %+v)", last, seq)
			}
		})
	}
}

// gateFS holds each spec read until another read is in flight (or a while
// has passed), and counts the reads in flight at once.
type gateFS struct {
	fstest.MapFS
	mu       sync.Mutex
	inFlight int
	max      int
	wake     chan struct{}
}

func (g *gateFS) ReadFile(name string) ([]byte, error) {
	if !strings.HasPrefix(name, ".imagegen/") {
		return g.MapFS.ReadFile(name)
	}
	g.mu.Lock()
	g.inFlight++
	g.max = max(g.max, g.inFlight)
	if g.inFlight >= 2 {
		close(g.wake) // the others waiting may go on
		g.wake = make(chan struct{})
	}
	wake := g.wake
	g.mu.Unlock()
	select {
	case <-wake:
	case <-time.After(300 * time.Millisecond): // the last one, alone
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return g.MapFS.ReadFile(name)
}

func (g *gateFS) Open(name string) (fs.File, error) { return g.MapFS.Open(name) }

// TestPlanIsConcurrentAndEnqueuesFirst: the generators of a push are planned
// at once (within builds.PlanConcurrency), and a generator's build tasks are queued
// before its statuses and check run are reported.
func TestPlanIsConcurrentAndEnqueuesFirst(t *testing.T) {
	const gens = 12
	files := fstest.MapFS{}
	for i := range gens {
		files[fmt.Sprintf(".imagegen/g%02d.yaml", i)] = &fstest.MapFile{Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n  sim2: {image: i, ssh_user: u}\n")}
	}
	g := &gateFS{MapFS: files, wake: make(chan struct{})}
	gh := &githubtest.Mem{RepoFS: g}
	s, _, _ := newService(t, gh)
	var mu sync.Mutex
	var notQueued []string
	gh.Hook = func(st builds.Status) {
		// The status's build task must be in the queue by now.
		gen, cloud, _ := strings.Cut(strings.TrimPrefix(st.Context, "imagegen/"), "/")
		if _, err := s.inspector.GetTaskInfo(queue.QueueName, "build:"+builds.PlanID("d", gen)+":"+cloud); err != nil {
			mu.Lock()
			notQueued = append(notQueued, st.Context+": "+err.Error())
			mu.Unlock()
		}
	}
	if err := s.planner.Plan(context.Background(), builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	if len(notQueued) > 0 {
		t.Errorf("statuses reported before their build was queued: %q", notQueued)
	}
	if g.max < 2 || g.max > builds.PlanConcurrency {
		t.Errorf("at most %d specs read at once; want 2 to %d", g.max, builds.PlanConcurrency)
	}
	if n := len(gh.Latest()); n != 2*gens {
		t.Errorf("%d statuses; want %d", n, 2*gens)
	}
	if depth, err := s.queue.QueueDepth(); err != nil || depth != 2*gens {
		t.Errorf("queue depth %d (%v); want %d build tasks", depth, err, 2*gens)
	}
	if runs := gh.Runs(); len(runs) != gens {
		t.Errorf("%d check runs; want %d", len(runs), gens)
	}
}

// TestProgressHoldsNoGoroutineWhileWaiting: a build waiting on its cloud
// holds no progress goroutine once its news is reported (10 000 builds in
// flight held 10 000 idle ones); the next phase still gets reported.
func TestProgressHoldsNoGoroutineWhileWaiting(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo hi\nclouds:\n  c: {image: i, ssh_user: u}\n")}}}
	s, _, _ := newServiceWith(t, gh, "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  c: {type: simulated, launch_delay: 4s}\n")
	ctx := context.Background()
	if err := s.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.runner.Run(ctx, builds.RunRequest{Build: builds.PlanID("d", "a"), Cloud: "c"}) }()
	loops := func() int {
		var buf strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
		return strings.Count(buf.String(), "builds.(*progress).loop")
	}
	reported := func(prefix string) bool {
		for _, st := range gh.Sequence(builds.StatusContext("a", "c")) {
			if strings.HasPrefix(st.Description, prefix) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(3 * time.Second)
	for !reported("running") || loops() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("3 s into a 4 s launch: running reported %v, %d progress goroutines; want it reported and none left", reported("running"), loops())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !reported("running: ") {
		t.Errorf("no phase reported after the wait: %v", gh.Sequence(builds.StatusContext("a", "c")))
	}
}
