package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/queue"
)

// TestAllowThroughTheService: a push from a repository that sim-a does not
// allow fails sim-a's status with the reason and builds on sim-b; a re-run
// through the API with a token that may re-run is still refused for sim-a
// (403, the reason), and the check run's button re-runs sim-b alone,
// showing sim-a's refusal on the new check run.
func TestAllowThroughTheService(t *testing.T) {
	e := newEnv(t, envOptions{clouds: `
  sim-a: {type: simulated, launch_delay: 20ms, allow: {repos: ["fg/*"]}}
  sim-b: {type: simulated, launch_delay: 10ms}
`})
	const why = "cloud sim-a does not allow repository Codertocat/Hello-World (allow.repos: fg/*)"
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", helloSpec)
	if code, body := e.deliver("push", "allow-1", push); code != http.StatusAccepted {
		t.Fatalf("push: %d %s", code, body)
	}
	e.waitFor("a completed check run", func() bool {
		cr, ok := e.checkRun("imagegen: hello")
		return ok && cr.Status == "completed"
	})
	cr, _ := e.checkRun("imagegen: hello")
	if cr.Conclusion != "failure" || cr.Title != "1 of 2 clouds failed" || !strings.Contains(cr.Summary, "- **sim-a**: "+why+"\n") {
		t.Errorf("check run %s %q:\n%s", cr.Conclusion, cr.Title, cr.Summary)
	}
	st := e.gh.LatestStatuses(exampleRepo, sha)
	if a := st["imagegen/hello/sim-a"]; a.State != "failure" || a.Description != "failed: "+why {
		t.Errorf("sim-a's status %s %q; want failure %q", a.State, a.Description, "failed: "+why)
	}
	if b := st["imagegen/hello/sim-b"]; b.State != "success" {
		t.Errorf("sim-b's status %s %q; want success", b.State, b.Description)
	}
	build := cr.ExternalID

	for _, tc := range []struct {
		name string
		body map[string]any
		code int
		msg  string
	}{
		{"every cloud", map[string]any{}, 403, why},
		{"the refused cloud", map[string]any{"clouds": []string{"sim-a"}}, 403, why},
		{"the allowed cloud", map[string]any{"clouds": []string{"sim-b"}}, 202, ""},
	} {
		code, out := e.post("/api/v1/builds/"+build+"/rerun", apiToken, tc.body)
		if code != tc.code || out["error"] != tc.msg {
			t.Errorf("API re-run of %s: %d %v; want %d %q", tc.name, code, out, tc.code, tc.msg)
		}
	}
	e.waitFor("the API's re-run", func() bool {
		runs := e.checkRunsNamed("imagegen: hello")
		return len(runs) == 2 && runs[1].Status == "completed"
	})

	rerun := editJSON(t, exampleCheckRunRerequested(t), func(m map[string]any) {
		m["check_run"].(map[string]any)["external_id"] = build
		m["check_run"].(map[string]any)["head_sha"] = sha
		m["repository"].(map[string]any)["full_name"] = exampleRepo
	})
	if code, body := e.deliver("check_run", "allow-rerun", rerun); code != http.StatusAccepted {
		t.Fatalf("check_run rerequested: %d %s", code, body)
	}
	e.waitFor("the button's re-run", func() bool {
		runs := e.checkRunsNamed("imagegen: hello")
		return len(runs) == 3 && runs[2].Status == "completed"
	})
	third := e.checkRunsNamed("imagegen: hello")[2]
	var nb builds.Build
	e.getJSON("/api/v1/builds/"+third.ExternalID, &nb)
	if nb.RerunOf != build || nb.Clouds["sim-a"].State != "failed" || nb.Clouds["sim-a"].Error != why || nb.Clouds["sim-b"].State != "succeeded" {
		t.Errorf("the button's re-run: %+v", nb)
	}
	if third.Conclusion != "failure" || !strings.Contains(third.Summary, "- **sim-a**: "+why+"\n") {
		t.Errorf("its check run %s:\n%s", third.Conclusion, third.Summary)
	}
	if n := strings.Count(e.logs.String(), `"msg":"cloud refused by its allow rule: nothing launched"`); n != 1 {
		t.Errorf("%d log lines of the plan's refusal; want 1", n)
	}
}

// TestWebhookAllowRepos: with github.allow_repos, a delivery about another
// repository is answered 200 "ignored: repository not allowed" and queues
// nothing; one about an allowed repository (in any case) is queued.
func TestWebhookAllowRepos(t *testing.T) {
	for _, tc := range []struct {
		name, allow string
		code        int
		msg         string
	}{
		{"another repository", `["fg/*", "fg-lab/images"]`, 200, `{"message":"ignored: repository not allowed"}`},
		{"allowed repositories", `["codertocat/*", "GitHub/Hello-World"]`, 202, `{"message":"accepted"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{noWorker: true, github: "  allow_repos: " + tc.allow + "\n"})
			push, _ := pushExample(t)
			rerequested := editJSON(t, exampleCheckRunRerequested(t), func(m map[string]any) {
				m["check_run"].(map[string]any)["external_id"] = "0123456789abcdef" // a run imagegen made
			})
			suite := githubtest.Example(t, "check_suite", func(m map[string]any) bool { return m["action"] == "rerequested" })
			for _, d := range []struct {
				event, id string
				body      []byte
			}{{"push", "d-push", push}, {"check_run", "d-run", rerequested}, {"check_suite", "d-suite", suite}} {
				before := queuedTasks(t, e)
				code, body := e.deliver(d.event, d.id, d.body)
				if code != tc.code || strings.TrimSpace(body) != tc.msg {
					t.Errorf("%s: %d %s; want %d %s", d.event, code, body, tc.code, tc.msg)
				}
				if queued := queuedTasks(t, e) > before; queued != (tc.code == 202) {
					t.Errorf("%s: delivery task queued = %v", d.event, queued)
				}
			}
			if code, body := e.deliver("ping", "d-ping", githubtest.Example(t, "ping", nil)); code != 200 || !strings.Contains(body, "pong") {
				t.Errorf("ping: %d %s", code, body)
			}
			if tc.code == 200 && !strings.Contains(e.get("/metrics"), `imagegen_webhook_deliveries_total{event="push",outcome="not_allowed"} 1`) {
				t.Error("the metrics do not count the push as not_allowed")
			}
		})
	}
}

// queuedTasks counts the tasks waiting in imagegen's queue (none before the
// first is queued).
func queuedTasks(t *testing.T, e *testEnv) int {
	t.Helper()
	tasks, err := asynqInspector(e).ListPendingTasks(queue.QueueName)
	if err != nil {
		return 0
	}
	return len(tasks)
}
