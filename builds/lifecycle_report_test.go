package builds_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

// What a user sees of the lifecycle: the commit statuses of a cloud
// testing, passed and failed, and the check run's Test and Retention
// sections and the reason of a rebuild.
func TestLifecycleReport(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	b := &builds.Build{ID: "0123456789abcdef", Repo: "octo/images", Commit: strings.Repeat("a", 40), Generator: "web",
		Trigger: "base image changed: ami-0aaa → ami-0bbb (ec2)",
		Clouds: map[string]*builds.CloudRecord{
			"ec2": {Cloud: "ec2", State: builder.StateSucceeded, ImageID: "ami-0ccc", ImageName: "web-20261123-2000-aaaaaaa", Started: t0, Finished: t0.Add(time.Minute),
				Test:   &builder.TestResult{Result: "passed", Duration: 3200 * time.Millisecond, Tagged: true},
				Pruned: []builds.PrunedImage{{ID: "ami-0old", Name: "web-20261001-1200-bbbbbbb"}}, PruneErrors: []string{"delete ami-0older (web-x): InvalidAMIID.Unavailable"}},
			"hotel": {Cloud: "hotel", State: builder.StateFailed, Started: t0, Finished: t0.Add(time.Minute),
				Error: "testing: running test: the test exited with code 3; its last 1 lines:\ncurl: (7) Failed to connect",
				Test:  &builder.TestResult{Result: "failed", ExitCode: 3}},
			"local": {Cloud: "local", State: builder.StateFailed, Started: t0, Finished: t0.Add(time.Minute), ImageID: "web-1", ImageName: "web-1",
				Error: "testing: running test: the test exited with code 4", Test: &builder.TestResult{Result: "failed", ExitCode: 4, Kept: true, Tagged: true}},
			"sim": {Cloud: "sim", State: builder.StateTesting, Phase: builder.PhaseTest, Started: t0},
		}}
	link := builds.BuildURL("https://ig.example", b.ID)
	for cloud, want := range map[string]builds.Status{
		"sim":   {State: "pending", Description: "testing: running test"},
		"ec2":   {State: "success", Description: "built web-20261123-2000-aaaaaaa (ami-0ccc); test passed"},
		"hotel": {State: "failure", Description: "failed: testing: running test: the test exited with code 3; its last 1 lines:"},
	} {
		st := builds.CloudStatus(b, b.Clouds[cloud], "https://ig.example", link)
		if st.State != want.State || st.Description != want.Description {
			t.Errorf("%s: %s %q, want %s %q", cloud, st.State, st.Description, want.State, want.Description)
		}
	}
	cr := builds.RenderCheckRun(b, "https://ig.example", link, t0.Add(time.Hour))
	if cr.Status != "in_progress" || cr.Title != "3 of 4 clouds done" {
		t.Errorf("check run %s %q: a cloud testing is not done", cr.Status, cr.Title)
	}
	for _, want := range []string{
		"**Rebuilt by imagegen**: base image changed: ami-0aaa → ami-0bbb (ec2).\n\nGenerator **web**",
		"| sim | 🧪 testing |",
		"### Test\n\nThe spec's test, on a fresh VM booted from each new image:\n\n",
		"- **ec2**: ✅ passed in 3.2s, tagged `imagegen:tested=passed`\n",
		"- **hotel**: ❌ failed (exit code 3); the image was deleted\n",
		"- **local**: ❌ failed (exit code 4); the image is kept (`keep_failed: true`), tagged `imagegen:tested=failed`\n",
		"### Retention\n\nOlder images of this generator beyond the spec's `keep:`, on this branch:\n\n",
		"- **ec2**: removed 1 older image: `ami-0old` (`web-20261001-1200-bbbbbbb`)\n",
		"- **ec2**: could not remove an older image (the sweep tries again; the build stands): delete ami-0older (web-x): InvalidAMIID.Unavailable\n",
	} {
		if !strings.Contains(cr.Summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, cr.Summary)
		}
	}
	// A build without any of it reads as it always did.
	plain := &builds.Build{ID: "x", Generator: "g", Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: builder.StateSucceeded}}}
	if s := builds.RenderCheckRun(plain, "", "", t0).Summary; strings.Contains(s, "###") || strings.Contains(s, "Rebuilt") {
		t.Errorf("summary of a build without lifecycle:\n%s", s)
	}
}
