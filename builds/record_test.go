package builds_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
)

// lossyStore loses the writes of final results while down > 0 (each one
// counts it down; negative: for good), as a Redis that is away for a moment.
type lossyStore struct {
	builds.Store
	down atomic.Int32
}

func (s *lossyStore) UpdateCloud(ctx context.Context, id, cloud string, fn func(*builds.CloudRecord)) (*builds.CloudRecord, error) {
	var probe builds.CloudRecord
	fn(&probe)
	if probe.State.Final() {
		if n := s.down.Load(); n < 0 || n > 0 && s.down.CompareAndSwap(n, n-1) {
			return nil, errors.New("redis: i/o timeout")
		}
	}
	return s.Store.UpdateCloud(ctx, id, cloud, fn)
}

// TestResultNotRecorded: a build's result that Redis does not take is
// written again until it holds; one that never holds fails the task (the
// queue runs it again) and is not reported as if recorded. Before, the
// result was dropped with a log line and the task ended: the cloud stayed
// "running" until the sweep called its task lost and reported a successful
// build failed (found by the chaos suite's Redis black hole).
func TestResultNotRecorded(t *testing.T) {
	defer builds.SetRecordRetry(2 * time.Second)()
	for _, tc := range []struct {
		name    string
		down    int32
		wantErr bool
		want    string // the commit status's state
	}{
		{"Redis away for two writes", 2, false, "success"},
		{"Redis away for good", -1, true, "pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
			s, _, _ := newService(t, gh)
			ctx := context.Background()
			p := builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}
			if err := s.planner.Plan(ctx, p); err != nil {
				t.Fatal(err)
			}
			id := builds.PlanID("d", "a")
			lossy := &lossyStore{Store: s.store}
			lossy.down.Store(tc.down)
			d := s.deps
			d.Store = lossy
			err := builds.NewRunner(d).Run(ctx, builds.RunRequest{Build: id, Cloud: "sim", Attempt: 1, WillRetry: true})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Run: %v; want an error: %v", err, tc.wantErr)
			}
			b, _, _ := s.store.Get(ctx, id)
			want := builder.StateSucceeded
			if tc.wantErr {
				want = builder.StateRunning
			}
			if b.Clouds["sim"].State != want {
				t.Errorf("record %s, want %s", b.Clouds["sim"].State, want)
			}
			if st := gh.Latest()["imagegen/a/sim"]; st.State != tc.want {
				t.Errorf("status %+v, want %s", st, tc.want)
			}
		})
	}
}
