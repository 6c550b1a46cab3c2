package pages_test

import (
	"context"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

// The build page shows a cloud testing its new image (and follows it live),
// each cloud's test result, what retention removed, and why imagegen
// rebuilt a generator by itself.
func TestBuildPageLifecycle(t *testing.T) {
	e := newEnv(t, envOptions{})
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := e.record(rec{id: "b-life", created: start, clouds: map[string]*builds.CloudRecord{
		"sim-a": {State: builder.StateTesting, Phase: builder.PhaseTest, Started: start, Attempts: 1},
		"sim-b": {State: builder.StateFailed, Started: start, Finished: start.Add(time.Minute), Error: "testing: running test: the test exited with code 3",
			Test: &builder.TestResult{Result: "failed", ExitCode: 3}},
	}})
	if err := e.store.UpdateMeta(context.Background(), b.ID, func(m *builds.Build) {
		m.Trigger = "base image changed: deb-1 → deb-2 (sim-a)"
	}); err != nil {
		t.Fatal(err)
	}
	r := e.get("/builds/" + b.ID)
	mustContain(t, "testing", r.body,
		`<span aria-hidden="true">▶</span> testing: running test</span>`,
		`<div class="test">test failed (exit code 3); the image was deleted</div>`,
		`<dt>Rebuilt by imagegen</dt><dd class="trigger">base image changed: deb-1 → deb-2 (sim-a)</dd>`,
		`data-events="/builds/b-life/events"`)
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.State, c.Phase, c.Finished, c.ImageID, c.ImageName = builder.StateSucceeded, "", start.Add(2*time.Minute), "img-new", "dstat-new"
		c.Test = &builder.TestResult{Result: "passed", Duration: 3200 * time.Millisecond, Tagged: true}
		c.Pruned = []builds.PrunedImage{{ID: "img-old", Name: "dstat-old"}}
		c.PruneErrors = []string{"delete img-older: busy"}
	})
	r = e.get("/builds/" + b.ID)
	mustContain(t, "tested", r.body,
		`<div class="test">test passed in 3.2s: tagged imagegen:tested=passed</div>`,
		`<div class="pruned">older images removed (keep): <code>img-old (dstat-old)</code></div>`,
		`<div class="error">not removed (the sweep tries again): delete img-older: busy</div>`)
	mustNotContain(t, "tested", r.body, `data-events=`, `class="removed"`)
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.Removed = &builds.Removal{At: time.Date(2026, 12, 7, 18, 30, 0, 0, time.UTC), By: "retention (keep: 2) when build b-next published"}
	})
	r = e.get("/builds/" + b.ID)
	mustContain(t, "removed", r.body,
		`<code class="image-id">img-new</code><div class="removed">deleted from the cloud 2026-12-07 18:30 UTC by retention (keep: 2) when build b-next published</div>`)
}
