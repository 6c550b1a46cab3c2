package builds_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/queue"
)

// sweepSeenKey is the store's record of the sweep's first sightings.
const sweepSeenKey = "imagegen:sweep:seen"

// TestSweep: one sweep over builds in every situation a crash leaves behind.
// It removes the resources of builds that are over (final, or lost and now
// reported failed), keeps those of running builds and of unknown builds
// until they have been orphaned for longer than a build lasts, and reports
// failed the clouds whose task was archived or is gone.
func TestSweep(t *testing.T) {
	gh := &githubtest.Mem{}
	s, cfg, rdb := newService(t, gh)
	ctx := context.Background()
	sim := simulated.CloudOf(cfg.Clouds["sim"].Opener)
	old := time.Now().UTC().Add(-time.Hour)

	tests := []struct {
		build     string
		state     builder.State // the sim cloud's record; "" = no record
		queued    time.Time
		task      string // "", "pending", "archived"
		plan      bool   // its push's delivery task is still queued (it will queue the build's tasks)
		wantGone  bool   // its resources removed by the sweep
		wantFinal builder.State
	}{
		{build: "finished", state: builder.StateFailed, queued: old, wantGone: true, wantFinal: builder.StateFailed},
		{build: "succeeded", state: builder.StateSucceeded, queued: old, wantGone: true, wantFinal: builder.StateSucceeded},
		{build: "running", state: builder.StateRunning, queued: time.Now().UTC(), task: "pending", wantFinal: builder.StateRunning},
		{build: "young-no-task", state: builder.StateQueued, queued: time.Now().UTC(), wantFinal: builder.StateQueued},
		{build: "archived", state: builder.StateRunning, queued: old, task: "archived", wantGone: true, wantFinal: builder.StateFailed},
		{build: "task-gone", state: builder.StateRunning, queued: old, wantGone: true, wantFinal: builder.StateFailed},
		{build: "plan-retrying", state: builder.StateQueued, queued: old, plan: true, wantFinal: builder.StateQueued},
		{build: "unknown"},
	}
	for _, tc := range tests {
		if tc.state != "" {
			b := &builds.Build{ID: tc.build, Repo: "octo/images", Commit: "abc", Generator: tc.build, Created: tc.queued,
				Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: tc.state, Queued: tc.queued}}}
			if tc.plan {
				b.Delivery, b.Ref, b.Commit = "d-"+tc.build, "refs/heads/main", "c0ffee"
				push := builds.Push{Repo: b.Repo, Ref: b.Ref, After: b.Commit, Before: builds.ZeroSHA}
				if _, err := s.queue.EnqueueDelivery(ctx, queue.Delivery{ID: b.Delivery, Event: "push", Parsed: push}); err != nil {
					t.Fatal(err)
				}
			}
			sp := &spec.Spec{Name: tc.build, Script: "true", Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian"}}}
			if _, err := s.store.Create(ctx, b, sp); err != nil {
				t.Fatal(err)
			}
		}
		if tc.task != "" {
			if err := s.queue.EnqueueBuild(ctx, tc.build, "sim", secret.String{}); err != nil {
				t.Fatal(err)
			}
			if tc.task == "archived" {
				if err := s.inspector.ArchiveTask(queue.QueueName, "build:"+tc.build+":sim"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := sim.Launch(ctx, clouds.LaunchRequest{Build: tc.build, Image: "debian"}, &clouds.Instance{}); err != nil {
			t.Fatal(err)
		}
	}

	rep, err := s.sweeper.Sweep(ctx)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("sweep: %v %v", err, rep.Errors)
	}
	left := map[string]int{}
	for _, r := range sim.Live() {
		left[r.Build]++
	}
	for _, tc := range tests {
		if gone := left[tc.build] == 0; gone != tc.wantGone {
			t.Errorf("%s: resources gone = %v, want %v", tc.build, gone, tc.wantGone)
		}
		if tc.state == "" {
			continue
		}
		b, _, err := s.store.Get(ctx, tc.build)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Clouds["sim"].State; got != tc.wantFinal {
			t.Errorf("%s: state %s after the sweep, want %s", tc.build, got, tc.wantFinal)
		}
	}
	slices.Sort(rep.Lost)
	if want := []string{"archived/sim", "task-gone/sim"}; !slices.Equal(rep.Lost, want) {
		t.Errorf("lost %v, want %v", rep.Lost, want)
	}
	st := gh.Latest()
	for _, ctxName := range []string{"imagegen/archived/sim", "imagegen/task-gone/sim"} {
		if st[ctxName].State != "failure" {
			t.Errorf("status %s = %+v, want failure", ctxName, st[ctxName])
		}
	}
	if d := st["imagegen/archived/sim"].Description; !strings.Contains(d, "gave up after") {
		t.Errorf("the archived build's status says %q; want the reason", d)
	}
	if _, err := s.inspector.GetTaskInfo(queue.QueueName, "build:archived:sim"); err == nil {
		t.Errorf("the archived task was kept after it was reported")
	}

	// The unknown build's resources go once seen for longer than a build can
	// last: age its first sighting instead of waiting.
	fields, err := rdb.HKeys(ctx, sweepSeenKey).Result()
	if err != nil || len(fields) != 2 {
		t.Fatalf("first sightings recorded: %v %v; want the unknown build's 2 resources", fields, err)
	}
	for _, f := range fields {
		rdb.HSet(ctx, sweepSeenKey, f, strconv.FormatInt(time.Now().Add(-builds.TaskTimeout(s.cfg)-time.Minute).Unix(), 10))
	}
	rep, err = s.sweeper.Sweep(ctx)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("second sweep: %v %v", err, rep.Errors)
	}
	for _, r := range sim.Live() {
		if r.Build != "running" && r.Build != "young-no-task" && r.Build != "plan-retrying" {
			t.Errorf("after the second sweep %s %s of build %s is left", r.Kind, r.ID, r.Build)
		}
	}
	if n, _ := rdb.HLen(ctx, sweepSeenKey).Result(); n != 0 {
		t.Errorf("%d first sightings left after their resources were removed", n)
	}
}

// TestSweepLoop: the periodic sweep removes what a finished build left, and
// stops when the worker stops.
func TestSweepLoop(t *testing.T) {
	gh := &githubtest.Mem{}
	s, cfg, _ := newService(t, gh)
	sim := simulated.CloudOf(cfg.Clouds["sim"].Opener)
	bg := context.Background()
	b := &builds.Build{ID: "over", Repo: "octo/images", Commit: "abc", Generator: "g", Created: time.Now().UTC(),
		Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: builder.StateSucceeded}}}
	if _, err := s.store.Create(bg, b, &spec.Spec{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if err := sim.Launch(bg, clouds.LaunchRequest{Build: "over", Image: "debian"}, &clouds.Instance{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() { s.sweeper.Loop(ctx, 100*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(sim.Live()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if live := sim.Live(); len(live) > 0 {
		t.Errorf("the sweep loop left %v", live)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the sweep loop did not stop with its context")
	}
}

// TestSweepOrphanImages: an image whose build record names another image (or
// none, the cloud having failed) was left by an attempt killed after its
// snapshot; the sweep deletes it. The recorded image, the images of builds
// still running and those of builds no record knows (expired: products) stay.
func TestSweepOrphanImages(t *testing.T) {
	gh := &githubtest.Mem{}
	s, cfg, _ := newService(t, gh)
	ctx := context.Background()
	sim := simulated.CloudOf(cfg.Clouds["sim"].Opener)

	snapshot := func(build string) string {
		inst := &clouds.Instance{Build: build}
		if err := sim.Launch(ctx, clouds.LaunchRequest{Build: build, Image: "debian"}, inst); err != nil {
			t.Fatal(err)
		}
		if err := sim.Stop(ctx, inst); err != nil {
			t.Fatal(err)
		}
		img := &clouds.Image{}
		if err := sim.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: build + "-img", Tags: map[string]string{clouds.TagBuild: build}}, img); err != nil {
			t.Fatal(err)
		}
		if err := sim.Terminate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		return img.ID
	}
	record := func(build string, state builder.State, image string) {
		b := &builds.Build{ID: build, Repo: "octo/images", Commit: "abc", Generator: build, Created: time.Now().UTC(),
			Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: state, ImageID: image}}}
		sp := &spec.Spec{Name: build, Script: "true", Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian"}}}
		if _, err := s.store.Create(ctx, b, sp); err != nil {
			t.Fatal(err)
		}
	}
	orphan, kept := snapshot("retried"), snapshot("retried")
	record("retried", builder.StateSucceeded, kept)
	failedOrphan := snapshot("failed")
	record("failed", builder.StateFailed, "")
	running := snapshot("running")
	record("running", builder.StateRunning, "")
	if err := s.queue.EnqueueBuild(ctx, "running", "sim", secret.String{}); err != nil { // its task lives
		t.Fatal(err)
	}
	expired := snapshot("expired") // no record

	rep, err := s.sweeper.Sweep(ctx)
	if err != nil || len(rep.Errors) > 0 {
		t.Fatalf("sweep: %v %v", err, rep.Errors)
	}
	have := map[string]bool{}
	for _, im := range sim.Images() {
		have[im.ID] = true
	}
	for id, want := range map[string]bool{orphan: false, failedOrphan: false, kept: true, running: true, expired: true} {
		if have[id] != want {
			t.Errorf("image %s: exists = %v, want %v", id, have[id], want)
		}
	}
}
