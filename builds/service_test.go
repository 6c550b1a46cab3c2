package builds_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/store"
)

// service is the core as the worker wires it, on a real Redis (records
// and tasks), with an in-memory GitHub.
type service struct {
	cfg       *config.Config
	deps      builds.Deps
	store     *store.Store
	queue     *queue.Client
	inspector *asynq.Inspector
	planner   *builds.Planner
	runner    *builds.Runner
	reruns    *builds.Reruns
	reporter  *builds.Reporter
	sweeper   *builds.Sweeper
}

func newService(t *testing.T, gh *githubtest.Mem) (*service, *config.Config, *redis.Client) {
	t.Helper()
	return newServiceWith(t, gh, "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  sim: {type: simulated}\n  sim2: {type: simulated}\n  locked: {type: simulated, password: ask}\n")
}

// newServiceWith is newService on a config of the test's own.
func newServiceWith(t *testing.T, gh builds.GitHub, yml string) (*service, *config.Config, *redis.Client) {
	t.Helper()
	r := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	file := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(file, []byte(yml), 0o600)
	cfg, err := config.Load(file, reg)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := queue.NewClient(rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: st, GitHub: gh, Queue: qc, Logger: slog.New(slog.DiscardHandler)}
	return &service{
		cfg: cfg, deps: d, store: st, queue: qc, inspector: asynq.NewInspectorFromRedisClient(rdb),
		planner: builds.NewPlanner(d), runner: builds.NewRunner(d), reruns: builds.NewReruns(d),
		reporter: builds.NewReporter(d), sweeper: builds.NewSweeper(d, qc),
	}, cfg, rdb
}

// TestPlanChooses: which generators a push builds.
func TestPlanChooses(t *testing.T) {
	repo := fstest.MapFS{
		".imagegen/a.yaml":    {Data: []byte("script_file: scripts/a.sh\nclouds:\n  sim: {image: i, ssh_user: u}\n")},
		".imagegen/b.yaml":    {Data: []byte("script: echo b\nbranches: [release]\nclouds:\n  sim: {image: i, ssh_user: u}\n")},
		".imagegen/c.yml":     {Data: []byte("script: echo c\nclouds:\n  sim: {image: i, ssh_user: u}\n  locked: {image: i, ssh_user: u}\n")},
		".imagegen/README.md": {Data: []byte("not a spec")},
		"scripts/a.sh":        {Data: []byte("echo a")},
		"docs/unrelated.txt":  {Data: []byte("x")},
	}
	const sha = "1111111111111111111111111111111111111111"
	tests := []struct {
		name    string
		push    builds.Push
		compare []string
		want    string // generators built, sorted
	}{
		{"first push builds every generator of the branch", builds.Push{Ref: "refs/heads/main", Before: builds.ZeroSHA, Created: true}, nil, "[a c]"},
		{"spec changed", builds.Push{Ref: "refs/heads/main", Before: "b", Changed: []string{".imagegen/c.yml"}}, nil, "[c]"},
		{"script changed", builds.Push{Ref: "refs/heads/main", Before: "b", Changed: []string{"scripts/a.sh"}}, nil, "[a]"},
		{"unrelated change", builds.Push{Ref: "refs/heads/main", Before: "b", Changed: []string{"docs/unrelated.txt"}}, nil, "[]"},
		{"branch listed by the spec", builds.Push{Ref: "refs/heads/release", Before: "b", Changed: []string{".imagegen/b.yaml", ".imagegen/a.yaml"}}, nil, "[b]"},
		{"many commits: the compare API decides", builds.Push{Ref: "refs/heads/main", Before: "b", Incomplete: true, Changed: []string{"docs/unrelated.txt"}}, []string{"scripts/a.sh"}, "[a]"},
		{"branch deleted", builds.Push{Ref: "refs/heads/main", Before: "b", After: builds.ZeroSHA, Deleted: true, Changed: []string{".imagegen/c.yml"}}, nil, "[]"},
		{"tag", builds.Push{Ref: "refs/tags/v1", Before: builds.ZeroSHA, Created: true}, nil, "[]"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gh := &githubtest.Mem{Files: repo, Compare: tc.compare}
			s, _, _ := newService(t, gh)
			p := tc.push
			p.Delivery, p.Repo, p.DefaultBranch = fmt.Sprintf("d%d", i), "o/r", "main"
			if p.After == "" {
				p.After = sha
			}
			if err := s.planner.Plan(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			bs, err := s.store.List(context.Background(), builds.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var gens []string
			for _, b := range bs {
				gens = append(gens, b.Generator)
			}
			slices.Sort(gens)
			if got := fmt.Sprint(gens); got != tc.want {
				t.Errorf("built %s; want %s", got, tc.want)
			}
			// Planning twice (a retried task) records nothing new.
			if err := s.planner.Plan(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			again, _ := s.store.List(context.Background(), builds.ListOptions{})
			if len(again) != len(bs) {
				t.Errorf("a second plan of the same delivery made %d builds; want %d", len(again), len(bs))
			}
			for _, b := range bs {
				if b.Generator != "c" {
					continue
				}
				// c's password: ask cloud waits; the other is queued.
				if b.Clouds["locked"].State != builder.StateWaiting || b.Clouds["sim"].State != builder.StateQueued {
					t.Errorf("c's clouds: locked %s, sim %s", b.Clouds["locked"].State, b.Clouds["sim"].State)
				}
				if st := gh.Latest()["imagegen/c/locked"]; st.State != "pending" || !strings.HasPrefix(st.Description, "needs password") {
					t.Errorf("locked status %+v", st)
				}
			}
		})
	}
}

// TestPlanCompareCut: a push whose changed files GitHub's comparison lists
// only in part (past its 300) builds every generator of the branch, saying
// why, rather than failing its plan on every retry.
func TestPlanCompareCut(t *testing.T) {
	repo := fstest.MapFS{
		".imagegen/a.yaml": {Data: []byte("script_file: scripts/a.sh\nclouds:\n  sim: {image: i, ssh_user: u}\n")},
		".imagegen/c.yml":  {Data: []byte("script: echo c\nclouds:\n  sim: {image: i, ssh_user: u}\n")},
		"scripts/a.sh":     {Data: []byte("echo a")},
	}
	gh := &githubtest.Mem{Files: repo, Compare: []string{"docs/unrelated.txt"}, CompareErr: fmt.Errorf("compare: %w", builds.ErrChangesCut)}
	s, _, _ := newService(t, gh)
	p := builds.Push{Delivery: "cut-1", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40), Incomplete: true}
	if err := s.planner.Plan(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	bs, err := s.store.List(context.Background(), builds.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, b := range bs {
		gens = append(gens, b.Generator)
	}
	slices.Sort(gens)
	if fmt.Sprint(gens) != "[a c]" {
		t.Errorf("built %v; want [a c]", gens)
	}
}

// TestPlanCloudListChanged: a spec untouched by the push is built again when
// its cloud list differs from the one it was last built with.
func TestPlanCloudListChanged(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{
		".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n  sim2: {image: i, ssh_user: u}\n")},
	}}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	if err := s.store.SetLastClouds(ctx, "o/r", "a", []string{"sim"}); err != nil {
		t.Fatal(err)
	}
	p := builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: "b", After: "c", Changed: []string{"README"}}
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	bs, _ := s.store.List(ctx, builds.ListOptions{})
	if len(bs) != 1 {
		t.Fatalf("%d builds; want 1 (the cloud list changed)", len(bs))
	}
	p.Delivery = "d2"
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	if bs, _ := s.store.List(ctx, builds.ListOptions{}); len(bs) != 1 {
		t.Errorf("%d builds after an unchanged push; want still 1", len(bs))
	}
}

// TestRunBuildRemovesLeftovers: what an earlier, dead attempt left tagged
// with the build is removed, and the build then succeeds and is reported.
func TestRunBuildRemovesLeftovers(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	s, cfg, _ := newService(t, gh)
	ctx := context.Background()
	p := builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	id := builds.PlanID("d", "a")
	cl := simulated.CloudOf(cfg.Clouds["sim"].Opener)
	// The dead attempt: a launched instance nobody terminated.
	var inst clouds.Instance
	inst.Build = id
	if err := cl.Launch(ctx, clouds.LaunchRequest{Build: id, Name: "dead", Image: "i", User: "u", Tags: map[string]string{clouds.TagBuild: id}, Log: slog.New(slog.DiscardHandler)}, &inst); err != nil {
		t.Fatal(err)
	}
	if len(cl.Live()) == 0 {
		t.Fatal("the fake shows no leftover to clean")
	}
	if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: "sim"}); err != nil {
		t.Fatal(err)
	}
	if live := cl.Live(); len(live) != 0 {
		t.Errorf("left behind: %+v", live)
	}
	b, _, _ := s.store.Get(ctx, id)
	if b.Clouds["sim"].State != builder.StateSucceeded || b.Clouds["sim"].Attempts != 1 {
		t.Errorf("record %+v", b.Clouds["sim"])
	}
	runs := gh.Runs()
	if len(runs) != 1 || runs[0].Conclusion != "success" || gh.Latest()["imagegen/a/sim"].State != "success" {
		t.Errorf("reported %+v, %+v", runs, gh.Latest())
	}
	// Run again (a duplicate task): nothing is rebuilt.
	if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: "sim"}); err != nil {
		t.Fatal(err)
	}
	if b2, _, _ := s.store.Get(ctx, id); b2.Clouds["sim"].Attempts != 1 {
		t.Error("a finished build ran again")
	}
}

// TestSpecErrorWithToken: without check runs (token auth) an invalid spec is
// a failed commit status naming the position.
func TestSpecErrorWithToken(t *testing.T) {
	gh := &githubtest.Mem{NoCheckRuns: true, Files: fstest.MapFS{
		".imagegen/broken.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u, colour: blue}\n")},
	}}
	s, _, _ := newService(t, gh)
	if err := s.planner.Plan(context.Background(), builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c"}); err != nil {
		t.Fatal(err)
	}
	st := gh.Latest()["imagegen/broken"]
	if st.State != "failure" || !strings.Contains(st.Description, ".imagegen/broken.yaml:3:") || len(gh.Runs()) != 0 {
		t.Errorf("status %+v, check runs %v", st, gh.Runs())
	}
}
