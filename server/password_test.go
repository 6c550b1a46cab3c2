package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/queue"
)

const lockedSpec = `name: hello
script: echo hello
clouds:
  sim-a: {image: debian-12, ssh_user: debian}
  locked: {image: rocky-9, ssh_user: rocky}
`

// TestPasswordCloud: a password: ask cloud waits, is re-run with its password
// through the API, succeeds, and the password is nowhere in Redis or the logs.
func TestPasswordCloud(t *testing.T) {
	const password = "correct-horse-battery-staple-42"
	e := newEnv(t, envOptions{})
	push, sha := pushExample(t)
	e.spec(sha, ".imagegen/hello.yaml", lockedSpec)
	if code, body := e.deliver("push", "pw-1", push); code != http.StatusAccepted {
		t.Fatalf("push: %d %s", code, body)
	}
	e.waitFor("the check run to ask for action", func() bool {
		cr, ok := e.checkRun("imagegen: hello")
		return ok && cr.Status == "completed"
	})
	cr, _ := e.checkRun("imagegen: hello")
	build := cr.ExternalID
	if cr.Conclusion != "action_required" || !strings.Contains(cr.Summary, "imagegen rerun --server https://imagegen.example.org --cloud locked "+build) {
		t.Errorf("check run %s:\n%s", cr.Conclusion, cr.Summary)
	}
	st := e.gh.LatestStatuses(exampleRepo, sha)["imagegen/hello/locked"]
	if st.State != "pending" || st.Description != "needs password: imagegen rerun --server https://imagegen.example.org --cloud locked "+build {
		t.Errorf("locked status %+v", st)
	}
	var b builds.Build
	e.getJSON("/api/v1/builds/"+build, &b)
	if c := b.Clouds["locked"]; c == nil || c.State != "waiting" || !c.AsksPassword {
		t.Fatalf("locked cloud record %+v", c)
	}

	tests := []struct {
		name  string
		token string
		body  map[string]any
		code  int
	}{
		{"no token", "", map[string]any{"clouds": []string{"locked"}, "passwords": map[string]string{"locked": password}}, 401},
		{"wrong token", "not-" + apiToken, map[string]any{"clouds": []string{"locked"}, "passwords": map[string]string{"locked": password}}, 401},
		{"no password", apiToken, map[string]any{"clouds": []string{"locked"}}, 400},
		{"unknown cloud", apiToken, map[string]any{"clouds": []string{"nope"}}, 400},
		{"password for a cloud that asks none", apiToken, map[string]any{"clouds": []string{"sim-a"}, "passwords": map[string]string{"sim-a": password}}, 400},
	}
	for _, tc := range tests {
		code, out := e.post("/api/v1/builds/"+build+"/rerun", tc.token, tc.body)
		if code != tc.code {
			t.Errorf("%s: %d %v; want %d", tc.name, code, out, tc.code)
		}
		if strings.Contains(out["error"], password) {
			t.Errorf("%s: the answer repeats the password", tc.name)
		}
	}
	code, out := e.post("/api/v1/builds/"+build+"/rerun", apiToken, map[string]any{"clouds": []string{"locked"}, "passwords": map[string]string{"locked": password}})
	if code != http.StatusAccepted || out["build"] == "" {
		t.Fatalf("rerun: %d %v", code, out)
	}
	nb := out["build"]
	e.waitFor("the locked cloud to succeed", func() bool {
		return e.gh.LatestStatuses(exampleRepo, sha)["imagegen/hello/locked"].State == "success"
	})
	e.waitFor("the re-run's check run to complete", func() bool {
		runs := e.checkRunsNamed("imagegen: hello")
		return len(runs) == 2 && runs[1].Status == "completed"
	})
	var rb builds.Build
	e.getJSON("/api/v1/builds/"+nb, &rb)
	if rb.State != "succeeded" || rb.Clouds["locked"].ImageID == "" || rb.RerunOf != build {
		t.Errorf("re-run build %+v", rb)
	}
	e.getJSON("/api/v1/builds/"+build, &b)
	if c := b.Clouds["locked"]; c.State != "canceled" || !strings.Contains(c.Error, nb) {
		t.Errorf("the original waiting cloud %+v; want canceled, pointing at %s", c, nb)
	}
	// The password's task is gone (no retention).
	if _, err := asynqInspector(e).GetTaskInfo(queue.QueueName, "build:"+nb+":locked"); err == nil {
		t.Error("the password-carrying task is still in Redis")
	}

	hits, types := e.redis.Find(t, password)
	if len(hits) > 0 {
		t.Errorf("the password is in Redis: %v", hits)
	}
	if types["hash"] == 0 || types["list"] == 0 || types["zset"] == 0 {
		t.Errorf("scanned %v: fewer kinds of keys than the service writes", types)
	}
	if strings.Contains(e.logs.String(), password) {
		t.Error("the password is in the service's logs")
	}
	for _, cloud := range []string{"locked"} {
		if strings.Contains(e.get("/api/v1/builds/"+nb+"/log?cloud="+cloud), password) {
			t.Error("the password is in the build log")
		}
	}
}
