package server_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/queue"
)

// TestDeliveryPlansOnce: the worker plans a push inside the delivery's task;
// that task retried — after a plan that failed half-way, or again after it
// succeeded — records no second build, makes no second check run and queues
// no build twice.
func TestDeliveryPlansOnce(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true}) // the test plays the worker
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", helloSpec)
	ev, err := github.ParseDelivery("push", push)
	if err != nil {
		t.Fatal(err)
	}
	d := queue.Delivery{ID: "retried-1", Event: "push", Parsed: ev}
	ctx := context.Background()

	// The first attempt records and queues the build, then GitHub refuses
	// the check run: the task fails and is retried.
	e.gh.FailNext(http.MethodPost, "/repos/"+exampleRepo+"/check-runs", http.StatusUnprocessableEntity, 1, nil)
	if err := e.deliveries.HandleEvent(ctx, d.ID, d.Parsed); err == nil {
		t.Fatal("the first attempt succeeded; want the check run's failure")
	}
	for attempt := 2; attempt <= 3; attempt++ {
		if err := e.deliveries.HandleEvent(ctx, d.ID, d.Parsed); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
		bs, err := e.store.List(ctx, builds.ListOptions{Repo: exampleRepo})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 1 {
			t.Fatalf("attempt %d: %d builds; want 1", attempt, len(bs))
		}
		if runs := e.checkRunsNamed("imagegen: hello"); len(runs) != 1 || runs[0].ExternalID != bs[0].ID {
			t.Errorf("attempt %d: check runs %+v; want one, for build %s", attempt, runs, bs[0].ID)
		}
		if depth, err := e.queue.QueueDepth(); err != nil || depth != 2 {
			t.Errorf("attempt %d: %d tasks queued (%v); want the 2 build tasks", attempt, depth, err)
		}
		st := e.gh.LatestStatuses(exampleRepo, sha)
		for _, c := range []string{"sim-a", "sim-b"} {
			if s := st["imagegen/hello/"+c]; s.State != "pending" || s.Description != "queued" {
				t.Errorf("attempt %d: status of %s %+v; want pending, queued", attempt, c, s)
			}
		}
	}
}
