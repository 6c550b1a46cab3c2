package queue

import (
	"context"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
)

// TestReportAdoptsOrphanCheckRun: a worker killed after GitHub created the
// check run but before the id was recorded leaves a run the record does not
// know; the retry's report finds it by its external id and updates it instead
// of creating a second run (which would stay in progress forever).
func TestReportAdoptsOrphanCheckRun(t *testing.T) {
	gh := &memGitHub{}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	now := time.Now().UTC()
	b := &Build{ID: "orphan", Repo: "octo/images", Commit: "abc", Generator: "g", Created: now,
		Clouds: map[string]*CloudRecord{"sim": {Cloud: "sim", State: builder.StateRunning, Queued: now}}}
	if _, err := s.store.Create(ctx, b, &spec.Spec{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	// The dead attempt's create: GitHub has the run, the record has no id.
	got, _, _ := s.store.Get(ctx, b.ID)
	if _, err := gh.CreateCheckRun(ctx, b.Repo, RenderCheckRun(got, "", "", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.UpdateCloud(ctx, b.ID, "sim", func(c *CloudRecord) { c.State = builder.StateSucceeded }); err != nil {
		t.Fatal(err)
	}
	if err := s.report(ctx, gh, b.ID, "sim"); err != nil {
		t.Fatal(err)
	}
	runs := gh.runs()
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
