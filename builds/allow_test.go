package builds_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/github/githubtest"
)

// allowConfig: hotel-openstack says who may build on it; sim takes the
// top-level default; open lets every repository in.
const allowConfig = `github: {token: t, webhook_secret: s}
base_url: https://ig.example
build: {timeout: 30s, cleanup_timeout: 5s}
allow: {repos: ["fg/*"]}
clouds:
  hotel-openstack: {type: simulated, allow: {repos: ["fg/images", "fg-lab/*"], branches: [main, "release/*"]}}
  sim: {type: simulated}
  open: {type: simulated, allow: {repos: ["*/*"]}}
`

const allowSpec = `script: echo hi
branches: [main, feature/x, release/1.0]
clouds:
  hotel-openstack: {image: i, ssh_user: u}
  sim: {image: i, ssh_user: u}
  open: {image: i, ssh_user: u}
`

var allowClouds = []string{"hotel-openstack", "open", "sim"}

// Exactly what a user reads on GitHub.
const (
	hotelRefusesAcme   = "cloud hotel-openstack does not allow repository acme/x (allow.repos: fg/images, fg-lab/*)"
	simRefusesAcme     = "cloud sim does not allow repository acme/x (top-level allow.repos: fg/*)"
	hotelRefusesBranch = "cloud hotel-openstack does not allow branch feature/x (allow.branches: main, release/*)"
)

// launches counts the servers each simulated cloud of cfg has created.
func launches(cfg *config.Config) map[string]int {
	n := map[string]int{}
	for name, e := range cfg.Clouds {
		for _, c := range simulated.CloudOf(e.Opener).Calls() {
			if strings.HasPrefix(c, "create server") {
				n[name]++
			}
		}
	}
	return n
}

func checkRunOf(gh *githubtest.Mem, build string) (builds.CheckRun, bool) {
	for _, cr := range gh.Runs() {
		if cr.ExternalID == build {
			return cr, true
		}
	}
	return builds.CheckRun{}, false
}

// TestPlanHonoursAllow: a push whose repository or branch a cloud does not
// allow gets, for that cloud only, a failing status that says why; nothing
// is queued or launched there (a stale task finds the refusal again), the
// record says failed with the reason, the check run shows it, and the
// generator's other clouds build.
func TestPlanHonoursAllow(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte(allowSpec)}}}
	s, cfg, _ := newServiceWith(t, gh, allowConfig)
	ctx := context.Background()
	tests := []struct {
		name, repo, branch string
		refused            map[string]string // cloud → the record's error; the others build
		title              string            // the check run's
	}{
		{"repository refused by its cloud's allow and by the default", "acme/x", "main",
			map[string]string{"hotel-openstack": hotelRefusesAcme, "sim": simRefusesAcme}, "2 of 3 clouds failed"},
		{"branch refused", "fg/images", "feature/x",
			map[string]string{"hotel-openstack": hotelRefusesBranch}, "1 of 3 clouds failed"},
		{"repository in any case, branch by pattern", "FG/Images", "release/1.0", nil, "3 images built"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			delivery := fmt.Sprintf("d%d", i)
			before := launches(cfg)
			push := builds.Push{Delivery: delivery, Repo: tc.repo, Ref: "refs/heads/" + tc.branch, DefaultBranch: "main",
				Before: builds.ZeroSHA, Created: true, After: fmt.Sprintf("%040d", i+1)}
			if err := s.planner.Plan(ctx, push); err != nil {
				t.Fatal(err)
			}
			id := builds.PlanID(delivery, "g")
			for _, name := range allowClouds {
				task, err := s.queue.BuildTask(ctx, id, name)
				if err != nil {
					t.Fatal(err)
				}
				_, refused := tc.refused[name]
				if want := map[bool]builds.TaskState{true: builds.TaskGone, false: builds.TaskPresent}[refused]; task.State != want {
					t.Errorf("%s: task state %v, want %v", name, task.State, want)
				}
				// Run every cloud, the refused ones too, as a task queued
				// before the config changed would.
				if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: name, Attempt: 1}); err != nil {
					t.Fatal(err)
				}
			}
			b, _, err := s.store.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			after := launches(cfg)
			latest := gh.Latest()
			cr, ok := checkRunOf(gh, id)
			if !ok {
				t.Fatal("no check run")
			}
			if cr.Conclusion != map[bool]string{true: "failure", false: "success"}[len(tc.refused) > 0] || cr.Title != tc.title {
				t.Errorf("check run %s %q; want the title %q", cr.Conclusion, cr.Title, tc.title)
			}
			for _, name := range allowClouds {
				rec, st := b.Clouds[name], latest[builds.StatusContext("g", name)]
				n := after[name] - before[name]
				why, refused := tc.refused[name]
				switch {
				case refused:
					if rec.State != builder.StateFailed || rec.Error != why || rec.Attempts != 0 {
						t.Errorf("%s: record %s %q after %d attempts; want failed %q, never run", name, rec.State, rec.Error, rec.Attempts, why)
					}
					if st.State != "failure" || st.Description != "failed: "+why {
						t.Errorf("%s: status %s %q; want failure %q", name, st.State, st.Description, "failed: "+why)
					}
					if n != 0 {
						t.Errorf("%s: %d servers launched; want none", name, n)
					}
					if note := fmt.Sprintf("- **%s**: %s\n", name, why); !strings.Contains(cr.Summary, note) {
						t.Errorf("the check run's summary lacks %q:\n%s", note, cr.Summary)
					}
				default:
					if rec.State != builder.StateSucceeded || st.State != "success" || n != 1 {
						t.Errorf("%s: record %s %q, status %s %q, %d launches; want it built once", name, rec.State, rec.Error, st.State, st.Description, n)
					}
				}
			}
		})
	}
}

// TestRunnerRechecksAllow: a task planned under one config runs under
// another that refuses it: the runner asks again, launches nothing and
// says why.
func TestRunnerRechecksAllow(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	s, cfg, _ := newService(t, gh) // no allow: planned for anyone
	ctx := context.Background()
	if err := s.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	id := builds.PlanID("d", "a")
	if task, err := s.queue.BuildTask(ctx, id, "sim"); err != nil || task.State != builds.TaskPresent {
		t.Fatalf("task %+v, %v: the plan queued nothing", task, err)
	}
	// The worker restarted with an allow rule since.
	d := s.deps
	d.Config = configtest.Config(t, "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 30s, cleanup_timeout: 5s}\n"+
		"allow: {repos: [\"fg/*\"], branches: [main]}\nclouds:\n  sim: {type: simulated}\n")
	if err := builds.NewRunner(d).Run(ctx, builds.RunRequest{Build: id, Cloud: "sim", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	const why = "cloud sim does not allow repository o/r (top-level allow.repos: fg/*)"
	b, _, _ := s.store.Get(ctx, id)
	if c := b.Clouds["sim"]; c.State != builder.StateFailed || c.Error != why {
		t.Errorf("record %s %q; want failed %q", c.State, c.Error, why)
	}
	if st := gh.Latest()[builds.StatusContext("a", "sim")]; st.State != "failure" || st.Description != "failed: "+why {
		t.Errorf("status %s %q", st.State, st.Description)
	}
	if n := launches(cfg)["sim"] + launches(d.Config)["sim"]; n != 0 {
		t.Errorf("%d servers launched", n)
	}
}

// TestRerunHonoursAllow: re-runs are held to the same rule as pushes,
// against the build's repository and branch: the API's is refused whole
// (DeniedError: 403) when it asks for a cloud that does not allow them;
// the check run's and check suite's buttons re-run what is allowed and
// record the rest failed, with the reason, on the new check run.
func TestRerunHonoursAllow(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte(allowSpec)}}}
	s, cfg, _ := newServiceWith(t, gh, allowConfig)
	ctx := context.Background()
	sha := strings.Repeat("a", 40)
	if err := s.planner.Plan(ctx, builds.Push{Delivery: "d", Repo: "acme/x", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: sha}); err != nil {
		t.Fatal(err)
	}
	id := builds.PlanID("d", "g")
	count := func() int {
		bs, err := s.store.List(ctx, builds.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}

	// The API.
	for _, tc := range []struct {
		name   string
		clouds []string
		want   string // the DeniedError; "": re-run
	}{
		{"every cloud", nil, hotelRefusesAcme + "; " + simRefusesAcme},
		{"a refused cloud", []string{"sim"}, simRefusesAcme},
		{"an allowed and a refused cloud", []string{"open", "hotel-openstack"}, hotelRefusesAcme},
		{"the allowed cloud", []string{"open"}, ""},
	} {
		t.Run("API: "+tc.name, func(t *testing.T) {
			n := count()
			nid, err := s.reruns.Rerun(ctx, id, builds.RerunRequest{Clouds: tc.clouds})
			var derr *builds.DeniedError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
				if nb, _, _ := s.store.Get(ctx, nid); len(nb.Clouds) != 1 || nb.Clouds["open"] == nil {
					t.Errorf("re-run %+v; want the open cloud", nb.Clouds)
				}
			case !errors.As(err, &derr) || derr.Msg != tc.want:
				t.Errorf("error %v; want a DeniedError %q", err, tc.want)
			case count() != n:
				t.Errorf("a refused re-run recorded a build")
			}
		})
	}

	// The buttons.
	var ev builds.Event
	deliveries := builds.NewDeliveries(func(string, []byte) (builds.Event, error) { return ev, nil }, s.planner, s.reruns)
	for _, tc := range []struct {
		name string
		ev   builds.Event
	}{
		{"check run", builds.CheckRunRerun{Build: id, Repo: "acme/x", SHA: sha}},
		{"check suite", builds.CheckSuiteRerun{Repo: "acme/x", SHA: sha}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := launches(cfg)
			bs, _ := s.store.List(ctx, builds.ListOptions{})
			known := map[string]bool{}
			for _, b := range bs {
				known[b.ID] = true
			}
			ev = tc.ev
			if err := deliveries.Handle(ctx, "x-"+tc.name, "check_run", nil); err != nil {
				t.Fatal(err)
			}
			bs, _ = s.store.List(ctx, builds.ListOptions{})
			var nb *builds.Build
			for _, b := range bs {
				if !known[b.ID] {
					nb = b
				}
			}
			if nb == nil {
				t.Fatal("no re-run build")
			}
			if err := s.runner.Run(ctx, builds.RunRequest{Build: nb.ID, Cloud: "open", Attempt: 1}); err != nil {
				t.Fatal(err)
			}
			nb, _, _ = s.store.Get(ctx, nb.ID)
			for name, why := range map[string]string{"hotel-openstack": hotelRefusesAcme, "sim": simRefusesAcme} {
				if c := nb.Clouds[name]; c == nil || c.State != builder.StateFailed || c.Error != why {
					t.Errorf("%s in the re-run: %+v; want failed %q", name, c, why)
				}
				if st := gh.Latest()[builds.StatusContext("g", name)]; st.State != "failure" || st.Description != "failed: "+why {
					t.Errorf("%s: status %s %q", name, st.State, st.Description)
				}
			}
			if c := nb.Clouds["open"]; c.State != builder.StateSucceeded {
				t.Errorf("open in the re-run: %s %q", c.State, c.Error)
			}
			cr, ok := checkRunOf(gh, nb.ID)
			if !ok || cr.Conclusion != "failure" || cr.Title != "2 of 3 clouds failed" || !strings.Contains(cr.Summary, "- **sim**: "+simRefusesAcme+"\n") {
				t.Errorf("the re-run's check run (%v): %s %q\n%s", ok, cr.Conclusion, cr.Title, cr.Summary)
			}
			after := launches(cfg)
			if after["hotel-openstack"] != before["hotel-openstack"] || after["sim"] != before["sim"] || after["open"] != before["open"]+1 {
				t.Errorf("launches before %v, after %v; want one more on open only", before, after)
			}
		})
	}
}

// TestDeliveriesHonourAllowRepos: with github.allow_repos, a delivery of
// another repository that reached the worker (queued before the config
// changed, or by a serve configured otherwise) does nothing.
func TestDeliveriesHonourAllowRepos(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	s, _, _ := newServiceWith(t, gh, "github: {token: t, webhook_secret: s, allow_repos: [\"fg/*\"]}\nallow: {repos: [\"*/*\"]}\nclouds:\n  sim: {type: simulated}\n")
	ctx := context.Background()
	var ev builds.Event
	deliveries := builds.NewDeliveries(func(string, []byte) (builds.Event, error) { return ev, nil }, s.planner, s.reruns)
	for i, repo := range []string{"acme/x", "FG/images"} {
		ev = builds.Push{Repo: repo, Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}
		if err := deliveries.Handle(ctx, fmt.Sprintf("d%d", i), "push", nil); err != nil {
			t.Fatal(err)
		}
	}
	bs, err := s.store.List(ctx, builds.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Repo != "FG/images" {
		t.Errorf("builds %d (first: %+v); want FG/images's only", len(bs), bs)
	}
}
