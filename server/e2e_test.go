package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
)

const helloSpec = `name: hello
script: |
  echo "hello from $(hostname)"
clouds:
  sim-a:
    image: debian-12
    ssh_user: debian
  sim-b:
    image: ubuntu-24.04
    ssh_user: ubuntu
`

// TestPushEndToEnd is the "done when": a signed octokit push through
// the real handler, planned and built by a worker on simulated clouds, ends
// with success statuses per cloud and a completed check run naming the images.
func TestPushEndToEnd(t *testing.T) {
	e := newEnv(t, envOptions{})
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", helloSpec)

	if code, body := e.deliver("push", "e2e-1", push); code != http.StatusAccepted {
		t.Fatalf("push: %d %s; want 202", code, body)
	}
	e.waitFor("a completed check run", func() bool {
		cr, ok := e.checkRun("imagegen: hello")
		return ok && cr.Status == "completed"
	})
	cr, _ := e.checkRun("imagegen: hello")
	if cr.Conclusion != "success" || cr.HeadSHA != sha || cr.ExternalID == "" {
		t.Errorf("check run %+v; want success on %s with the build id", cr, sha)
	}
	if !strings.HasPrefix(cr.DetailsURL, "https://imagegen.example.org/api/v1/builds/") {
		t.Errorf("details_url %q", cr.DetailsURL)
	}
	build := cr.ExternalID

	var b builds.Build
	if code := e.getJSON("/api/v1/builds/"+build, &b); code != 200 {
		t.Fatalf("GET build: %d", code)
	}
	if b.Repo != exampleRepo || b.Commit != sha || b.Generator != "hello" || b.State != "succeeded" || len(b.Clouds) != 2 {
		t.Fatalf("build record %+v", b)
	}
	e.waitFor("final statuses", func() bool {
		st := e.gh.LatestStatuses(exampleRepo, sha)
		return st["imagegen/hello/sim-a"].State == "success" && st["imagegen/hello/sim-b"].State == "success"
	})
	statuses := e.gh.LatestStatuses(exampleRepo, sha)
	for _, cloud := range []string{"sim-a", "sim-b"} {
		c := b.Clouds[cloud]
		if c.State != "succeeded" || c.ImageID == "" || !strings.HasPrefix(c.ImageName, "hello-") || c.Started.IsZero() || c.Finished.IsZero() {
			t.Errorf("%s record %+v", cloud, c)
		}
		for _, s := range []string{c.ImageName, c.ImageID} {
			if !strings.Contains(cr.Text, s) || !strings.Contains(cr.Summary, s) {
				t.Errorf("check run does not name %s of %s:\nsummary:\n%s\ntext:\n%s", s, cloud, cr.Summary, cr.Text)
			}
		}
		st := statuses["imagegen/hello/"+cloud]
		if st.State != "success" || !strings.Contains(st.Description, c.ImageName) || st.TargetURL != "https://imagegen.example.org/api/v1/builds/"+build || len(st.Description) > 140 {
			t.Errorf("status of %s: %+v", cloud, st)
		}
		// Every status went pending first: queued, then running.
		var seq []string
		for _, s := range e.gh.Statuses(exampleRepo, sha) {
			if s.Context == "imagegen/hello/"+cloud {
				seq = append(seq, s.State)
			}
		}
		if len(seq) < 2 || seq[0] != "pending" || seq[len(seq)-1] != "success" {
			t.Errorf("status sequence of %s: %v", cloud, seq)
		}
	}
	if b.Clouds["sim-a"].BaseImage != "debian-12" {
		t.Errorf("base image %q", b.Clouds["sim-a"].BaseImage)
	}

	// The log, the list and the lineage.
	resp := e.authGet("/api/v1/builds/"+build+"/log?cloud=sim-a", apiToken)
	logText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(strings.TrimSpace(string(logText))) == 0 {
		t.Errorf("log: %d %q", resp.StatusCode, logText)
	}
	if code := e.getJSON("/api/v1/builds/"+build+"/log", nil); code != 400 {
		t.Errorf("log without ?cloud= on a two-cloud build: %d; want 400", code)
	}
	var list struct{ Builds []builds.Build }
	e.getJSON("/api/v1/builds?repo="+exampleRepo, &list)
	if len(list.Builds) != 1 || list.Builds[0].ID != build {
		t.Errorf("list: %+v", list)
	}
	var imgs struct{ Images []builds.LineageEntry }
	e.getJSON("/api/v1/images?repo="+exampleRepo+"&generator=hello", &imgs)
	if len(imgs.Images) != 2 {
		t.Fatalf("lineage: %+v", imgs)
	}
	for _, im := range imgs.Images {
		if im.Commit != sha || im.Digest == "" || im.Digest != b.Digest || im.Build != build {
			t.Errorf("lineage entry %+v", im)
		}
	}
	if code := e.getJSON("/api/v1/builds/nope", nil); code != 404 {
		t.Errorf("unknown build: %d; want 404", code)
	}

	// A redelivery of the same push builds nothing again.
	if code, body := e.deliver("push", "e2e-1", push); code != 200 || !strings.Contains(body, "already received") {
		t.Errorf("redelivery: %d %s", code, body)
	}

	// The check run's "Re-run" button: a check_run rerequested delivery for
	// this build's check run re-runs it as a new build.
	rerun := editJSON(t, exampleCheckRunRerequested(t), func(m map[string]any) {
		m["check_run"].(map[string]any)["external_id"] = build
		m["check_run"].(map[string]any)["head_sha"] = sha
		m["repository"].(map[string]any)["full_name"] = exampleRepo // a re-run stays in its repository
	})
	if code, body := e.deliver("check_run", "e2e-rerun", rerun); code != http.StatusAccepted {
		t.Fatalf("check_run rerequested: %d %s", code, body)
	}
	e.waitFor("a second completed check run", func() bool {
		runs := e.checkRunsNamed("imagegen: hello")
		return len(runs) == 2 && runs[1].Status == "completed"
	})
	second := e.checkRunsNamed("imagegen: hello")[1]
	var nb builds.Build
	e.getJSON("/api/v1/builds/"+second.ExternalID, &nb)
	if nb.RerunOf != build || nb.State != "succeeded" || second.Conclusion != "success" {
		t.Errorf("re-run build %+v, check run %s", nb, second.Conclusion)
	}
	e.getJSON("/api/v1/images?repo="+exampleRepo+"&generator=hello", &imgs)
	if len(imgs.Images) != 4 {
		t.Errorf("lineage after re-run has %d images; want 4", len(imgs.Images))
	}
	// A retried delivery task of that re-run makes no second build.
	if err := e.deliveries.Handle(context.Background(), "e2e-rerun", "check_run", rerun); err != nil {
		t.Fatal(err)
	}

	// "Re-run all checks": a check_suite rerequested delivery for the commit
	// re-runs the newest build of each generator on it (the re-run above),
	// once however often its task runs.
	suite := editJSON(t, githubtest.Example(t, "check_suite", func(m map[string]any) bool { return m["action"] == "rerequested" }), func(m map[string]any) {
		m["check_suite"].(map[string]any)["head_sha"] = sha
		m["repository"].(map[string]any)["full_name"] = exampleRepo
	})
	if code, body := e.deliver("check_suite", "e2e-suite", suite); code != http.StatusAccepted {
		t.Fatalf("check_suite rerequested: %d %s", code, body)
	}
	e.waitFor("a third completed check run", func() bool {
		runs := e.checkRunsNamed("imagegen: hello")
		return len(runs) == 3 && runs[2].Status == "completed"
	})
	if err := e.deliveries.Handle(context.Background(), "e2e-suite", "check_suite", suite); err != nil {
		t.Fatal(err)
	}
	third := e.checkRunsNamed("imagegen: hello")[2]
	var sb builds.Build
	e.getJSON("/api/v1/builds/"+third.ExternalID, &sb)
	if sb.RerunOf != second.ExternalID || sb.Commit != sha || third.Conclusion != "success" {
		t.Errorf("check suite re-run: build %+v, check run %s; want a re-run of %s", sb, third.Conclusion, second.ExternalID)
	}
	var all struct{ Builds []builds.Build }
	e.getJSON("/api/v1/builds?repo="+exampleRepo, &all)
	if len(all.Builds) != 3 {
		t.Errorf("%d builds after a push, a re-run and a suite re-run (each delivered, then retried); want 3", len(all.Builds))
	}

	metrics := e.get("/metrics")
	for _, want := range []string{`imagegen_builds_total{cloud="sim-a",state="succeeded"} 3`, `imagegen_build_duration_seconds_count{cloud="sim-b",state="succeeded"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func exampleCheckRunRerequested(t *testing.T) []byte {
	return githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "rerequested" })
}

// get reads path with the API token.
func (e *testEnv) get(path string) string {
	e.t.Helper()
	resp := e.authGet(path, apiToken)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSpecErrorFailsCheckRun: an invalid spec is a failed check run whose
// summary gives file:line:col, and nothing is built.
func TestSpecErrorFailsCheckRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", helloSpec)
	e.spec(sha, ".imagegen/broken.yaml", "name: broken\nscript: echo hi\nclouds:\n  sim-a:\n    image: debian-12\n    ssh_user: debian\n    colour: blue\n")
	if code, body := e.deliver("push", "spec-err", push); code != http.StatusAccepted {
		t.Fatalf("push: %d %s", code, body)
	}
	e.waitFor("the broken spec's check run", func() bool { _, ok := e.checkRun("imagegen: broken"); return ok })
	e.waitFor("the valid generator's completed check run", func() bool {
		cr, ok := e.checkRun("imagegen: hello")
		return ok && cr.Status == "completed"
	})
	cr, _ := e.checkRun("imagegen: broken")
	if cr.Status != "completed" || cr.Conclusion != "failure" {
		t.Errorf("check run %s/%s; want completed/failure", cr.Status, cr.Conclusion)
	}
	if !strings.Contains(cr.Summary, ".imagegen/broken.yaml:7:5:") || !strings.Contains(cr.Summary, "colour") {
		t.Errorf("summary does not give the error's position:\n%s", cr.Summary)
	}
	for ctx := range e.gh.LatestStatuses(exampleRepo, sha) {
		if strings.HasPrefix(ctx, "imagegen/broken/") {
			t.Errorf("status %s for an invalid spec", ctx)
		}
	}
	var list struct{ Builds []builds.Build }
	e.getJSON("/api/v1/builds", &list)
	if len(list.Builds) != 1 || list.Builds[0].Generator != "hello" {
		t.Errorf("builds %+v; want only hello", list.Builds)
	}
}

// TestTokenModeSetsStatusesOnly: with a token instead of an App, builds are
// reported with commit statuses alone (check runs need an App).
func TestTokenModeSetsStatusesOnly(t *testing.T) {
	e := newEnv(t, envOptions{token: true})
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", helloSpec)
	if code, body := e.deliver("push", "tok-1", push); code != http.StatusAccepted {
		t.Fatalf("push: %d %s", code, body)
	}
	e.waitFor("success statuses", func() bool {
		st := e.gh.LatestStatuses(exampleRepo, sha)
		return st["imagegen/hello/sim-a"].State == "success" && st["imagegen/hello/sim-b"].State == "success"
	})
	if runs := e.gh.CheckRuns(exampleRepo); len(runs) != 0 {
		t.Errorf("check runs in token mode: %+v", runs)
	}
	for _, c := range e.gh.Calls() {
		if strings.Contains(c.Path, "check-runs") || strings.Contains(c.Path, "access_tokens") {
			t.Errorf("token mode called %s %s", c.Method, c.Path)
		}
	}
}
