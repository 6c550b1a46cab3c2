package builds_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/queue"
)

// A base image filter with two matching images builds on the newest; when
// a newer one appears, the periodic check (three workers, each with its
// asynq scheduler) rebuilds the generator at its branch's head exactly
// once, with a check run saying what changed.
func TestBaseCheckRebuildsOnce(t *testing.T) {
	const yml = "github: {token: t, webhook_secret: s}\nbase_check_interval: 1s\nbuild: {timeout: 30s, cleanup_timeout: 5s, sweep_interval: 1h}\nclouds:\n" +
		"  sim:\n    type: simulated\n    base_images:\n" +
		"      - {id: deb-old, name: debian-12-genericcloud-amd64-20250101, created: 2025-01-01T00:00:00Z}\n" +
		"      - {id: deb-1, name: debian-12-genericcloud-amd64-20250201, created: 2025-02-01T00:00:00Z}\n" +
		"      - {id: ubu-9, name: ubuntu-24.04-20250301, created: 2025-03-01T00:00:00Z}\n"
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/web.yaml": {Data: []byte(
		"script: echo web\nrebuild: {on_base_change: true}\nclouds:\n  sim: {image: {name: \"debian-12-genericcloud-amd64-*\", most_recent: true}, ssh_user: debian}\n")}}}
	const head = "4ead4ead4ead4ead4ead4ead4ead4ead4ead4ead"
	gh.SetHead("main", head)
	s, cfg, rdb := newServiceWith(t, gh, yml)
	ctx := context.Background()
	cl := simulated.CloudOf(cfg.Clouds["sim"].Opener)

	// The first build takes the newest of the two Debian images.
	id := pushAndRun(t, s, "o/r", "d1", strings.Repeat("1", 40), "web")["web"]
	b, _, _ := s.store.Get(ctx, id)
	if c := b.Clouds["sim"]; c.State != builder.StateSucceeded || c.BaseImage != "deb-1" {
		t.Fatalf("first build %+v: want succeeded on deb-1", c)
	}
	if ws, _ := s.store.BaseWatches(ctx); len(ws) != 1 || ws[0].Build != id || ws[0].Branch != "main" {
		t.Fatalf("watches %+v", ws)
	}

	// Three workers, each running the periodic check's scheduler.
	for range 3 {
		d := s.deps
		w, err := queue.NewWorker(queue.WorkerOptions{Config: cfg, Redis: rdb, Logger: slog.New(slog.DiscardHandler),
			Deliveries: builds.NewDeliveries(nil, builds.NewPlanner(d), builds.NewReruns(d)), Runner: builds.NewRunner(d),
			BaseChecker: builds.NewBaseChecker(d)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Shutdown)
	}
	rebuilds := func() []*builds.Build {
		bs, err := s.store.List(ctx, builds.ListOptions{Repo: "o/r"})
		if err != nil {
			t.Fatal(err)
		}
		var out []*builds.Build
		for _, b := range bs {
			if b.Trigger != "" {
				out = append(out, b)
			}
		}
		return out
	}
	// Nothing changed: the checks run and rebuild nothing.
	time.Sleep(3500 * time.Millisecond)
	if rb := rebuilds(); len(rb) != 0 {
		t.Fatalf("rebuilt with no new base image: %+v", rb[0])
	}

	if err := cl.AddBaseImage(simulated.BaseImage{ID: "deb-2", Name: "debian-12-genericcloud-amd64-20250301", Created: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var rb []*builds.Build
	for time.Now().Before(deadline) {
		if rb = rebuilds(); len(rb) == 1 && rb[0].State == builder.StateSucceeded {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(rb) != 1 || rb[0].State != builder.StateSucceeded {
		t.Fatalf("rebuilds %d (want 1, succeeded): %+v", len(rb), rb)
	}
	r := rb[0]
	const want = "base image changed: deb-1 → deb-2 (sim)"
	if r.Trigger != want || r.Commit != head || r.Ref != "refs/heads/main" || r.Clouds["sim"].BaseImage != "deb-2" {
		t.Errorf("rebuild %+v (sim %+v)", r, r.Clouds["sim"])
	}
	var found bool
	for _, cr := range gh.Runs() {
		if cr.ExternalID == r.ID {
			found = cr.HeadSHA == head && strings.Contains(cr.Summary, "**Rebuilt by imagegen**: "+want)
			if !found {
				t.Errorf("the rebuild's check run:\n%s", cr.Summary)
			}
		}
	}
	if !found {
		t.Error("no check run for the rebuild")
	}
	// More checks: still one rebuild.
	time.Sleep(3500 * time.Millisecond)
	if rb := rebuilds(); len(rb) != 1 {
		t.Errorf("%d rebuilds after more checks; want 1", len(rb))
	}
	if e, err := builds.Latest(ctx, s.store, builds.LatestQuery{Repo: "o/r", Generator: "web", Cloud: "sim", Branch: "main"}); err != nil || e.BaseImage != "deb-2" || e.Build != r.ID {
		t.Errorf("latest %+v, %v", e, err)
	}
}

// The check itself, without the queue: a spec that no longer asks, or a
// build record gone, ends the watch.
func TestBaseCheckDropsWatches(t *testing.T) {
	const yml = "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n" +
		"  sim: {type: simulated, base_images: [{id: deb-1, name: debian-12-a, created: 2025-02-01T00:00:00Z}]}\n"
	spec := "script: echo web\nrebuild: {on_base_change: true}\nclouds:\n  sim: {image: {name: \"debian-12-*\"}, ssh_user: debian}\n"
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/web.yaml": {Data: []byte(spec)}}}
	s, cfg, _ := newServiceWith(t, gh, yml)
	ctx := context.Background()
	pushAndRun(t, s, "o/r", "d1", strings.Repeat("1", 40), "web")
	chk := builds.NewBaseChecker(s.deps)
	rep, err := chk.Check(ctx)
	if err != nil || rep.Watches != 1 || len(rep.Changed) != 0 {
		t.Fatalf("check %+v, %v", rep, err)
	}
	// A second image matches a filter without most_recent: the check says
	// so (and rebuilds nothing).
	_ = simulated.CloudOf(cfg.Clouds["sim"].Opener).AddBaseImage(simulated.BaseImage{ID: "deb-2", Name: "debian-12-b"})
	rep, _ = chk.Check(ctx)
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0].Error(), "matches 2 images") || len(rep.Rebuilt) != 0 {
		t.Errorf("check %+v", rep)
	}
	// The spec drops rebuild: its next build ends the watch.
	gh.Files[".imagegen/web.yaml"] = &fstest.MapFile{Data: []byte("script: echo web\nclouds:\n  sim: {image: deb-2, ssh_user: debian}\n")}
	pushAndRun(t, s, "o/r", "d2", strings.Repeat("2", 40), "web")
	if ws, _ := s.store.BaseWatches(ctx); len(ws) != 0 {
		t.Errorf("watches %+v", ws)
	}
}
