package builds_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
)

// TestRerunButtonsStayInTheirRepository: a check run's "Re-run" names its
// build by external id, which must not reach another repository's build: a
// delivery of repository A naming a build of B (or of another commit)
// re-runs nothing and says so in the log; "Re-run all checks" on A never
// re-runs B's builds of the same commit.
func TestRerunButtonsStayInTheirRepository(t *testing.T) {
	const sha = "c0ffee0000000000000000000000000000c0ffee"
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	// A build of repository b/victim.
	push := builds.Push{Delivery: "d-victim", Repo: "b/victim", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: sha}
	if err := s.planner.Plan(ctx, push); err != nil {
		t.Fatal(err)
	}
	victim := builds.PlanID("d-victim", "g")

	var logs bytes.Buffer
	d := s.deps
	d.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	var ev builds.Event
	deliveries := builds.NewDeliveries(func(string, []byte) (builds.Event, error) { return ev, nil }, builds.NewPlanner(d), builds.NewReruns(d))
	count := func() int {
		bs, err := s.store.List(ctx, builds.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}

	tests := []struct {
		name    string
		ev      builds.Event
		reruns  bool
		wantLog string
	}{
		{"another repository's build", builds.CheckRunRerun{Build: victim, Repo: "a/attacker", SHA: sha}, false,
			`msg="check run re-run refused: the build is not the event's" delivery=x1 build=` + victim + ` repo=a/attacker sha=` + sha + ` reason="build ` + victim + ` belongs to repository b/victim, not a/attacker"`},
		{"another commit's build", builds.CheckRunRerun{Build: victim, Repo: "b/victim", SHA: strings.Repeat("1", 40)}, false,
			`reason="build ` + victim + ` was made for commit c0ffee000000, not 111111111111"`},
		{"check suite of another repository", builds.CheckSuiteRerun{Repo: "a/attacker", SHA: sha}, false, ""},
		{"its own repository", builds.CheckRunRerun{Build: victim, Repo: "b/victim", SHA: sha}, true, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			before := count()
			ev = tc.ev
			if err := deliveries.Handle(ctx, "x"+string(rune('1'+i)), "check_run", nil); err != nil {
				t.Fatal(err)
			}
			if got := count() - before; got != map[bool]int{false: 0, true: 1}[tc.reruns] {
				t.Errorf("%d builds made; re-run wanted: %v", got, tc.reruns)
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log:\n%s\nwant a line with\n%s", logs.String(), tc.wantLog)
			}
		})
	}
}
