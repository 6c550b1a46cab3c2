package builds_test

import (
	"context"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
)

// TestReportAdoptsOrphanCheckRun: a worker killed after GitHub created the
// check run but before the id was recorded leaves a run the record does not
// know; the retry's report finds it by its external id and updates it instead
// of creating a second run (which would stay in progress forever).
func TestReportAdoptsOrphanCheckRun(t *testing.T) {
	gh := &githubtest.Mem{}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	now := time.Now().UTC()
	b := &builds.Build{ID: "orphan", Repo: "octo/images", Commit: "abc", Generator: "g", Created: now,
		Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: builder.StateRunning, Queued: now}}}
	if _, err := s.store.Create(ctx, b, &spec.Spec{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	// The dead attempt's create: GitHub has the run, the record has no id.
	got, _, _ := s.store.Get(ctx, b.ID)
	if _, err := gh.CreateCheckRun(ctx, b.Repo, builds.RenderCheckRun(got, "", "", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.UpdateCloud(ctx, b.ID, "sim", func(c *builds.CloudRecord) { c.State = builder.StateSucceeded }); err != nil {
		t.Fatal(err)
	}
	if err := s.reporter.Report(ctx, gh, b.ID, "sim"); err != nil {
		t.Fatal(err)
	}
	runs := gh.Runs()
	if len(runs) != 1 {
		t.Fatalf("%d check runs after the retry's report, want the one adopted", len(runs))
	}
	if runs[0].Conclusion != "success" {
		t.Errorf("the adopted run was not brought up to date: %+v", runs[0])
	}
	if after, _, _ := s.store.Get(ctx, b.ID); after.CheckRunID != 1 {
		t.Errorf("recorded check run id %d, want 1", after.CheckRunID)
	}
}

// TestSpecErrorCheckRunOnce: a plan retried after it failed an invalid
// spec's check run (its worker killed before the plan ended, so the delivery
// task runs again) finds the run it made and makes no second one.
func TestSpecErrorCheckRunOnce(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{
		".imagegen/broken.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u, colour: blue}\n")},
	}}
	s, _, _ := newService(t, gh)
	push := builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c"}
	for range 2 {
		if err := s.planner.Plan(context.Background(), push); err != nil {
			t.Fatal(err)
		}
	}
	runs := gh.Runs()
	if len(runs) != 1 || runs[0].Conclusion != "failure" || !strings.Contains(runs[0].Summary, ".imagegen/broken.yaml:3:") {
		t.Fatalf("check runs after the plan ran twice: %+v; want the one failed run", runs)
	}
	// Another push of the same commit (a new delivery) is reported again.
	push.Delivery = "d2"
	if err := s.planner.Plan(context.Background(), push); err != nil {
		t.Fatal(err)
	}
	if n := len(gh.Runs()); n != 2 {
		t.Errorf("%d check runs after a second delivery, want 2", n)
	}
}
