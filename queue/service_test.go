package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/testenv"
)

// memGitHub is an in-memory GitHub for the queue's own tests (the server's
// tests use the real client against githubtest).
type memGitHub struct {
	mu        sync.Mutex
	files     fstest.MapFS
	compare   []string
	statuses  []Status
	checkRuns map[int64]CheckRun
	nextID    int64
	noChecks  bool
	fsys      fs.FS          // the repository, when not files
	hook      func(s Status) // called as a status is sent, before it lands
}

func (m *memGitHub) Repo(context.Context, int64) (RepoClient, error) { return m, nil }
func (m *memGitHub) FS(context.Context, string, string) fs.FS {
	if m.fsys != nil {
		return m.fsys
	}
	return m.files
}
func (m *memGitHub) ChangedFiles(context.Context, string, string, string) ([]string, error) {
	return m.compare, nil
}
func (m *memGitHub) SetStatus(_ context.Context, _, _ string, s Status) error {
	if m.hook != nil {
		m.hook(s)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.statuses = append(m.statuses, s)
	return nil
}
func (m *memGitHub) CheckRuns() bool { return !m.noChecks }
func (m *memGitHub) CreateCheckRun(_ context.Context, _ string, c CheckRun) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	if m.checkRuns == nil {
		m.checkRuns = map[int64]CheckRun{}
	}
	m.checkRuns[m.nextID] = c
	return m.nextID, nil
}
func (m *memGitHub) UpdateCheckRun(_ context.Context, _ string, id int64, c CheckRun) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.checkRuns[id]; !ok {
		return errors.New("no such check run")
	}
	m.checkRuns[id] = c
	return nil
}

func (m *memGitHub) latest() map[string]Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Status{}
	for _, s := range m.statuses {
		out[s.Context] = s
	}
	return out
}

func (m *memGitHub) runs() []CheckRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []CheckRun
	for i := int64(1); i <= m.nextID; i++ {
		out = append(out, m.checkRuns[i])
	}
	return out
}

func newService(t *testing.T, gh *memGitHub) (*Service, *config.Config, *redis.Client) {
	t.Helper()
	return newServiceWith(t, gh, "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  sim: {type: simulated}\n  sim2: {type: simulated}\n  locked: {type: simulated, password: ask}\n")
}

// newServiceWith is newService on a config of the test's own.
func newServiceWith(t *testing.T, gh *memGitHub, yml string) (*Service, *config.Config, *redis.Client) {
	t.Helper()
	r := testenv.StartRedis(t)
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
	s, err := New(Options{Config: cfg, Redis: rdb, GitHub: gh, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg, rdb
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
		push    Push
		compare []string
		want    string // generators built, sorted
	}{
		{"first push builds every generator of the branch", Push{Ref: "refs/heads/main", Before: zeroSHA, Created: true}, nil, "[a c]"},
		{"spec changed", Push{Ref: "refs/heads/main", Before: "b", Changed: []string{".imagegen/c.yml"}}, nil, "[c]"},
		{"script changed", Push{Ref: "refs/heads/main", Before: "b", Changed: []string{"scripts/a.sh"}}, nil, "[a]"},
		{"unrelated change", Push{Ref: "refs/heads/main", Before: "b", Changed: []string{"docs/unrelated.txt"}}, nil, "[]"},
		{"branch listed by the spec", Push{Ref: "refs/heads/release", Before: "b", Changed: []string{".imagegen/b.yaml", ".imagegen/a.yaml"}}, nil, "[b]"},
		{"many commits: the compare API decides", Push{Ref: "refs/heads/main", Before: "b", Incomplete: true, Changed: []string{"docs/unrelated.txt"}}, []string{"scripts/a.sh"}, "[a]"},
		{"branch deleted", Push{Ref: "refs/heads/main", Before: "b", After: zeroSHA, Deleted: true, Changed: []string{".imagegen/c.yml"}}, nil, "[]"},
		{"tag", Push{Ref: "refs/tags/v1", Before: zeroSHA, Created: true}, nil, "[]"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gh := &memGitHub{files: repo, compare: tc.compare}
			s, _, _ := newService(t, gh)
			p := tc.push
			p.Delivery, p.Repo, p.DefaultBranch = fmt.Sprintf("d%d", i), "o/r", "main"
			if p.After == "" {
				p.After = sha
			}
			if err := s.Plan(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			bs, err := s.Store().List(context.Background(), ListOptions{})
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
			if err := s.Plan(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			again, _ := s.Store().List(context.Background(), ListOptions{})
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
				if st := gh.latest()["imagegen/c/locked"]; st.State != "pending" || !strings.HasPrefix(st.Description, "needs password") {
					t.Errorf("locked status %+v", st)
				}
			}
		})
	}
}

// TestPlanCloudListChanged: a spec untouched by the push is built again when
// its cloud list differs from the one it was last built with.
func TestPlanCloudListChanged(t *testing.T) {
	gh := &memGitHub{files: fstest.MapFS{
		".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n  sim2: {image: i, ssh_user: u}\n")},
	}}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	if err := s.Store().SetLastClouds(ctx, "o/r", "a", []string{"sim"}); err != nil {
		t.Fatal(err)
	}
	p := Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: "b", After: "c", Changed: []string{"README"}}
	if err := s.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	bs, _ := s.Store().List(ctx, ListOptions{})
	if len(bs) != 1 {
		t.Fatalf("%d builds; want 1 (the cloud list changed)", len(bs))
	}
	p.Delivery = "d2"
	if err := s.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	if bs, _ := s.Store().List(ctx, ListOptions{}); len(bs) != 1 {
		t.Errorf("%d builds after an unchanged push; want still 1", len(bs))
	}
}

// TestRunBuildRemovesLeftovers: what an earlier, dead attempt left tagged
// with the build is removed, and the build then succeeds and is reported.
func TestRunBuildRemovesLeftovers(t *testing.T) {
	gh := &memGitHub{files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n")}}}
	s, cfg, _ := newService(t, gh)
	ctx := context.Background()
	p := Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: zeroSHA, Created: true, After: "c0ffee"}
	if err := s.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	id := planID("d", "a")
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
	if err := s.RunBuild(ctx, BuildTask{Build: id, Cloud: "sim"}); err != nil {
		t.Fatal(err)
	}
	if live := cl.Live(); len(live) != 0 {
		t.Errorf("left behind: %+v", live)
	}
	b, _, _ := s.Store().Get(ctx, id)
	if b.Clouds["sim"].State != builder.StateSucceeded || b.Clouds["sim"].Attempts != 1 {
		t.Errorf("record %+v", b.Clouds["sim"])
	}
	runs := gh.runs()
	if len(runs) != 1 || runs[0].Conclusion != "success" || gh.latest()["imagegen/a/sim"].State != "success" {
		t.Errorf("reported %+v, %+v", runs, gh.latest())
	}
	// Run again (a duplicate task): nothing is rebuilt.
	if err := s.RunBuild(ctx, BuildTask{Build: id, Cloud: "sim"}); err != nil {
		t.Fatal(err)
	}
	if b2, _, _ := s.Store().Get(ctx, id); b2.Clouds["sim"].Attempts != 1 {
		t.Error("a finished build ran again")
	}
}

// TestGiveUpIsReported: a build task that exhausted its retries is recorded
// failed and reported, never left pending.
func TestGiveUpIsReported(t *testing.T) {
	gh := &memGitHub{files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u}\n  sim2: {image: i, ssh_user: u}\n")}}}
	s, _, _ := newService(t, gh)
	ctx := context.Background()
	if err := s.Plan(ctx, Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: zeroSHA, Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	id := planID("d", "a")
	task, _ := NewBuildTask(BuildTask{Build: id, Cloud: "sim"}, time.Minute)
	// No retry information in ctx: asynq's last attempt looks the same.
	s.handleError(ctx, task, errors.New("redis went away"))
	b, _, _ := s.Store().Get(ctx, id)
	if c := b.Clouds["sim"]; c.State != builder.StateFailed || !strings.Contains(c.Error, "redis went away") {
		t.Errorf("record %+v", c)
	}
	if st := gh.latest()["imagegen/a/sim"]; st.State != "failure" {
		t.Errorf("status %+v", st)
	}
	if err := s.RunBuild(ctx, BuildTask{Build: id, Cloud: "sim2"}); err != nil {
		t.Fatal(err)
	}
	if runs := gh.runs(); len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != "failure" {
		t.Errorf("check run %+v", runs)
	}
}

// TestSpecErrorWithToken: without check runs (token auth) an invalid spec is
// a failed commit status naming the position.
func TestSpecErrorWithToken(t *testing.T) {
	gh := &memGitHub{noChecks: true, files: fstest.MapFS{
		".imagegen/broken.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: i, ssh_user: u, colour: blue}\n")},
	}}
	s, _, _ := newService(t, gh)
	if err := s.Plan(context.Background(), Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: zeroSHA, Created: true, After: "c"}); err != nil {
		t.Fatal(err)
	}
	st := gh.latest()["imagegen/broken"]
	if st.State != "failure" || !strings.Contains(st.Description, ".imagegen/broken.yaml:3:") || len(gh.runs()) != 0 {
		t.Errorf("status %+v, check runs %v", st, gh.runs())
	}
}

// FindCheckRun makes memGitHub a CheckRunFinder.
func (m *memGitHub) FindCheckRun(_ context.Context, _, sha, name, externalID string) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := int64(1); i <= m.nextID; i++ {
		if c := m.checkRuns[i]; c.HeadSHA == sha && c.Name == name && c.ExternalID == externalID {
			return i, true, nil
		}
	}
	return 0, false, nil
}

// TestShutdownGraceLetsBuildsFinish: a worker told to stop with a shutdown
// grace takes no new task but lets its running build finish.
func TestShutdownGraceLetsBuildsFinish(t *testing.T) {
	gh := &memGitHub{files: fstest.MapFS{".imagegen/a.yaml": {Data: []byte("script: echo\nclouds:\n  slow: {image: i, ssh_user: u}\n")}}}
	s, _, _ := newServiceWith(t, gh, "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s, shutdown_grace: 20s}\nclouds:\n  slow: {type: simulated, launch_delay: 1s, snapshot_delay: 1s}\n")
	ctx := context.Background()
	if err := s.Plan(ctx, Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: zeroSHA, Created: true, After: "c0ffee"}); err != nil {
		t.Fatal(err)
	}
	id := planID("d", "a")
	w := s.NewWorker()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _, err := s.Store().Get(ctx, id)
		if err == nil && b.Clouds["slow"].State == builder.StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build never started: %+v", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.Shutdown() // the SIGTERM path
	b, _, _ := s.Store().Get(ctx, id)
	if c := b.Clouds["slow"]; c.State != builder.StateSucceeded || c.Attempts != 1 || c.ImageID == "" {
		t.Errorf("after a graceful shutdown the build is %+v, want succeeded on its first attempt", c)
	}
}
