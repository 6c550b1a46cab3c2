package builds_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
)

// These tests plan pushes against the fake GitHub through the real client,
// so what a user sees on the commit is what GitHub was sent.

const fakeRepo = "octo/images"

// fakeGitHub is the fake GitHub and a client of it: an App (check runs), or
// a token (commit statuses only).
func fakeGitHub(t *testing.T, app bool) (*githubtest.Server, builds.GitHub) {
	t.Helper()
	s := githubtest.NewServer(t)
	cfg := s.TokenConfig()
	if app {
		cfg = s.AppConfig(t)
	}
	f, err := github.New(cfg, github.Options{Retry: github.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Factor: 2, Attempts: 3}})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

// specReads returns the spec and script files the contents API was asked for.
func specReads(s *githubtest.Server) []string {
	var out []string
	for _, c := range s.Calls() {
		p, ok := strings.CutPrefix(c.Path, "/repos/"+fakeRepo+"/contents/")
		if ok && c.Method == http.MethodGet && strings.Contains(p, ".") && p != ".imagegen" {
			out = append(out, p)
		}
	}
	return out
}

// checkGolden compares a check run as GitHub got it with a golden file.
func checkGolden(t *testing.T, cr githubtest.CheckRun, golden string) {
	t.Helper()
	got := "# " + cr.Title + "\n\n" + cr.Summary
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./builds -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("check run differs from %s:\n%s", golden, got)
	}
}

const limitConfig = "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 30s, cleanup_timeout: 5s, max_generators_per_push: 3}\nclouds:\n  sim: {type: simulated}\n"

// TestPushOverTheLimit: a push that changes more generators than
// build.max_generators_per_push builds none of them and fails one check run
// (a status, with a token) naming the limit, the count and the config key.
// Past the limit in spec files, no spec is even read.
func TestPushOverTheLimit(t *testing.T) {
	const sha = "5001000000000000000000000000000000005001"
	spec := func(script string) string { return script + "\nclouds:\n  sim: {image: i, ssh_user: u}\n" }
	tests := []struct {
		name     string
		specs    int // spec files a..., each with its own script
		shared   int // spec files s..., all naming scripts/common.sh
		push     builds.Push
		built    int    // builds made; -1: refused
		title    string // the check run's (App)
		golden   string
		desc     string // the status's (token)
		readNone bool   // refused before reading any spec
	}{
		{
			name: "first push of 5 specs", specs: 5,
			push:  builds.Push{Before: builds.ZeroSHA, Created: true},
			built: -1, readNone: true,
			title:  "too many generators in one push: 5, the limit is 3",
			golden: "testdata/checkrun-too-many-specs.md",
			desc:   "5 generator specs changed, over the limit of 3 per push (build.max_generators_per_push): none built",
		},
		{
			name: "4 of 6 specs changed", specs: 6,
			push:  builds.Push{Before: "b", Changed: []string{".imagegen/g0.yaml", ".imagegen/g1.yaml", ".imagegen/g2.yaml", ".imagegen/g3.yaml", "README.md"}},
			built: -1, readNone: true,
			title: "too many generators in one push: 4, the limit is 3",
			desc:  "4 generator specs changed, over the limit of 3 per push (build.max_generators_per_push): none built",
		},
		{
			name: "one script of 4 specs changed", specs: 1, shared: 4,
			push:   builds.Push{Before: "b", Changed: []string{"scripts/common.sh"}},
			built:  -1,
			title:  "too many generators in one push: 4, the limit is 3",
			golden: "testdata/checkrun-too-many-generators.md",
			desc:   "4 generators changed, over the limit of 3 per push (build.max_generators_per_push): none built",
		},
		{
			name: "3 specs changed: at the limit", specs: 6,
			push:  builds.Push{Before: "b", Changed: []string{".imagegen/g0.yaml", ".imagegen/g1.yaml", ".imagegen/g5.yaml"}},
			built: 3,
		},
	}
	for _, tc := range tests {
		for _, app := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, app %v", tc.name, app), func(t *testing.T) {
				s, gh := fakeGitHub(t, app)
				files := map[string]string{"README.md": "x", "scripts/common.sh": "echo common\n"}
				for i := range tc.specs {
					files[fmt.Sprintf(".imagegen/g%d.yaml", i)] = spec(fmt.Sprintf("script: echo %d", i))
				}
				for i := range tc.shared {
					files[fmt.Sprintf(".imagegen/s%d.yaml", i)] = spec("script_file: scripts/common.sh")
				}
				s.SetFiles(fakeRepo, sha, files)
				svc, _, _ := newServiceWith(t, gh, limitConfig)
				ctx := context.Background()
				p := tc.push
				p.Delivery, p.Repo, p.Ref, p.DefaultBranch, p.After, p.Installation = "d", fakeRepo, "refs/heads/main", "main", sha, 42
				if err := svc.planner.Plan(ctx, p); err != nil {
					t.Fatal(err)
				}
				bs, err := svc.store.List(ctx, builds.ListOptions{})
				if err != nil {
					t.Fatal(err)
				}
				depth, _ := svc.queue.QueueDepth()
				if tc.built >= 0 {
					if len(bs) != tc.built || depth != tc.built {
						t.Errorf("%d builds, %d tasks; want %d", len(bs), depth, tc.built)
					}
					return
				}
				if len(bs) != 0 || depth != 0 {
					t.Errorf("%d builds, %d tasks queued; want none past the limit", len(bs), depth)
				}
				if reads := specReads(s); tc.readNone && len(reads) > 0 {
					t.Errorf("read %q; want no spec read past the limit", reads)
				}
				if !app {
					sts := s.LatestStatuses(fakeRepo, sha)
					st := sts["imagegen"]
					if len(sts) != 1 || st.State != "failure" || st.Description != tc.desc {
						t.Errorf("statuses %+v\nwant one, imagegen: failure %q", sts, tc.desc)
					}
					return
				}
				runs := s.CheckRuns(fakeRepo)
				if len(runs) != 1 {
					t.Fatalf("%d check runs; want 1: %+v", len(runs), runs)
				}
				cr := runs[0]
				if cr.Name != "imagegen" || cr.Status != "completed" || cr.Conclusion != "failure" || cr.Title != tc.title || cr.HeadSHA != sha {
					t.Errorf("check run %s %s/%s %q on %s\nwant imagegen completed/failure %q", cr.Name, cr.Status, cr.Conclusion, cr.Title, cr.HeadSHA, tc.title)
				}
				if tc.golden != "" {
					checkGolden(t, cr, tc.golden)
				}
				// The same delivery planned again (a retried task) reports nothing twice.
				if err := svc.planner.Plan(ctx, p); err != nil {
					t.Fatal(err)
				}
				if n := len(s.CheckRuns(fakeRepo)); n != 1 {
					t.Errorf("%d check runs after the plan ran again; want 1", n)
				}
			})
		}
	}
}

// TestDuplicateGeneratorNames: two spec files defining one generator name
// build neither, and fail that generator on the commit naming both files;
// the other generators build. A push that touches neither is not told again.
func TestDuplicateGeneratorNames(t *testing.T) {
	const sha = "d0b1e00000000000000000000000000000000d0b"
	files := map[string]string{
		".imagegen/a.yaml":   "name: web\nscript: echo a\nclouds:\n  sim: {image: i, ssh_user: u}\n",
		".imagegen/web.yaml": "script: echo web\nbranches: [release]\nclouds:\n  sim: {image: i, ssh_user: u}\n",
		".imagegen/c.yaml":   "script: echo c\nclouds:\n  sim: {image: i, ssh_user: u}\n",
		"README.md":          "x",
	}
	const msg = `.imagegen/a.yaml and .imagegen/web.yaml both define generator "web"`
	for _, app := range []bool{true, false} {
		t.Run(fmt.Sprintf("app %v", app), func(t *testing.T) {
			s, gh := fakeGitHub(t, app)
			s.SetFiles(fakeRepo, sha, files)
			svc, _, _ := newServiceWith(t, gh, limitConfig)
			ctx := context.Background()
			p := builds.Push{Delivery: "d", Repo: fakeRepo, Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: sha, Installation: 42}
			if err := svc.planner.Plan(ctx, p); err != nil {
				t.Fatal(err)
			}
			bs, _ := svc.store.List(ctx, builds.ListOptions{})
			var gens []string
			for _, b := range bs {
				gens = append(gens, b.Generator)
			}
			if !slices.Equal(gens, []string{"c"}) {
				t.Errorf("built %q; want only c", gens)
			}
			if app {
				var web []githubtest.CheckRun
				for _, cr := range s.CheckRuns(fakeRepo) {
					if cr.Name == "imagegen: web" {
						web = append(web, cr)
					}
				}
				if len(web) != 1 || web[0].Conclusion != "failure" || web[0].Title != `2 spec files define generator "web"` || !strings.HasPrefix(web[0].Summary, msg) {
					t.Fatalf("check runs of web: %+v\nwant one failed, its summary beginning %s", web, msg)
				}
				checkGolden(t, web[0], "testdata/checkrun-duplicate-name.md")
			} else {
				st := s.LatestStatuses(fakeRepo, sha)["imagegen/web"]
				if st.State != "failure" || st.Description != msg {
					t.Errorf("status imagegen/web %+v; want failure %q", st, msg)
				}
			}
			// A later push changing only README reports nothing more, builds nothing.
			before := len(s.Calls())
			p2 := builds.Push{Delivery: "d2", Repo: fakeRepo, Ref: "refs/heads/main", DefaultBranch: "main", Before: sha, After: sha, Changed: []string{"README.md"}, Installation: 42}
			if err := svc.planner.Plan(ctx, p2); err != nil {
				t.Fatal(err)
			}
			for _, c := range s.Calls()[before:] {
				if c.Method != http.MethodGet {
					t.Errorf("an unrelated push: %s %s", c.Method, c.Path)
				}
			}
			// Changing the spec that was fine reports the duplicate again.
			p3 := p2
			p3.Delivery, p3.Changed = "d3", []string{".imagegen/web.yaml"}
			if err := svc.planner.Plan(ctx, p3); err != nil {
				t.Fatal(err)
			}
			if bs, _ := svc.store.List(ctx, builds.ListOptions{}); len(bs) != 1 {
				t.Errorf("%d builds after changing web.yaml; want still 1", len(bs))
			}
			if app {
				if n := len(s.CheckRuns(fakeRepo)); n != 3 {
					t.Errorf("%d check runs; want 3 (c, web, web again)", n)
				}
			}
		})
	}
}

func TestDuplicateMessage(t *testing.T) {
	for _, tc := range []struct {
		at   []string
		want string
	}{
		{[]string{".imagegen/a.yaml:1:7", ".imagegen/b.yaml:1:1"}, `.imagegen/a.yaml and .imagegen/b.yaml both define generator "web"`},
		{[]string{"a.yaml:1:7", "b.yml:2:7", "c.yaml:1:1"}, `a.yaml, b.yml and c.yaml all define generator "web"`},
	} {
		if got := builds.DuplicateMessage("web", tc.at); got != tc.want {
			t.Errorf("DuplicateMessage(%q) = %q; want %q", tc.at, got, tc.want)
		}
	}
}

// TestBigScriptFileRefusedUnread: a generator whose script_file is 50 MB
// fails its check run naming the limit, and the file is never downloaded:
// its size comes from its directory's listing.
func TestBigScriptFileRefusedUnread(t *testing.T) {
	const sha = "b1600000000000000000000000000000000000b1"
	s, gh := fakeGitHub(t, true)
	s.SetFiles(fakeRepo, sha, map[string]string{
		".imagegen/big.yaml": "script_file: scripts/big.sh\nclouds:\n  sim: {image: i, ssh_user: u}\n",
		"scripts/big.sh":     strings.Repeat("#", 50<<20),
	})
	svc, _, _ := newServiceWith(t, gh, limitConfig)
	p := builds.Push{Delivery: "d", Repo: fakeRepo, Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: sha, Installation: 42}
	if err := svc.planner.Plan(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	runs := s.CheckRuns(fakeRepo)
	const want = `.imagegen/big.yaml:1:14: script_file "scripts/big.sh" is 52428800 bytes, over the limit of 1048576 bytes (1 MiB): have the script download large content instead`
	if len(runs) != 1 || runs[0].Name != "imagegen: big" || runs[0].Conclusion != "failure" || !strings.Contains(runs[0].Summary, want) {
		t.Fatalf("check runs %+v\nwant imagegen: big failed with %s", runs, want)
	}
	if reads := specReads(s); slices.Contains(reads, "scripts/big.sh") {
		t.Errorf("the contents API was asked for %q; want scripts/big.sh never downloaded", reads)
	}
}
