package builds_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// push plans a push of sha to main under delivery and runs every queued
// cloud of its builds; it returns the builds' ids by generator.
func pushAndRun(t *testing.T, s *service, repo, delivery, sha string, gens ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	p := builds.Push{Delivery: delivery, Repo: repo, Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: sha}
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, g := range gens {
		id := builds.PlanID(delivery, g)
		b, _, err := s.store.Get(ctx, id)
		if err != nil {
			t.Fatalf("build of %s: %v", g, err)
		}
		for _, cloud := range b.CloudNames() {
			if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: cloud, Attempt: 1}); err != nil {
				t.Fatal(err)
			}
		}
		ids[g] = id
	}
	return ids
}

// The test stage end to end on the simulated cloud playing its VMs on a
// real sshd: the script writes a marker, the test checks it. A passing test
// publishes (status, check run, lineage, the image's tag, latest); a failing
// one deletes the image and fails the status with the exit code; the test
// VM is gone either way.
func TestLifecycleTestStage(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	host, port, _ := strings.Cut(sshd.Addr, ":")
	yml := "github: {token: t, webhook_secret: s}\nbase_url: https://ig.example\nbuild: {timeout: 1m, cleanup_timeout: 10s}\nclouds:\n" +
		"  sim: {type: simulated, ssh: {host: " + host + ", port: " + port + ", user: " + sshd.User +
		", private_key_file: " + sshd.WriteClientKey(t) + ", host_key: '" + sshd.HostKey + "'}}\n"
	marker := filepath.Join(t.TempDir(), "marker")
	spec := func(test string) []byte {
		return []byte("script: echo built-by-imagegen > " + marker + "\ntest: |\n  " + test + "\nclouds:\n  sim: {image: debian-12, ssh_user: debian}\n")
	}
	// The test takes a while, so its state is reported before it ends.
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/web.yaml": {Data: spec("sleep 1.5; grep -q built-by-imagegen " + marker)}}}
	s, cfg, _ := newServiceWith(t, gh, yml)
	cl := simulated.CloudOf(cfg.Clouds["sim"].Opener)
	ctx := context.Background()
	q := builds.LatestQuery{Repo: "o/r", Generator: "web", Cloud: "sim"}

	// Passing: published.
	id := pushAndRun(t, s, "o/r", "d-pass", strings.Repeat("a", 40), "web")["web"]
	b, _, _ := s.store.Get(ctx, id)
	rec := b.Clouds["sim"]
	if rec.State != builder.StateSucceeded || rec.Test == nil || rec.Test.Result != clouds.TestedPassed {
		t.Fatalf("record %+v test %+v", rec, rec.Test)
	}
	if st := gh.Latest()["imagegen/web/sim"]; st.State != "success" || !strings.HasSuffix(st.Description, "; test passed") {
		t.Errorf("status %+v", st)
	}
	var testing []string
	for _, st := range gh.Sequence("imagegen/web/sim") {
		if strings.HasPrefix(st.Description, "testing: ") {
			testing = append(testing, st.State+" "+st.Description)
		}
	}
	if len(testing) == 0 || testing[len(testing)-1] != "pending testing: running test" {
		t.Errorf("statuses while testing %q; want the last one pending \"testing: running test\" (all: %+v)", testing, gh.Sequence("imagegen/web/sim"))
	}
	runs := gh.Runs()
	if sum := runs[len(runs)-1].Summary; !strings.Contains(sum, "### Test") || !strings.Contains(sum, "- **sim**: ✅ passed in ") || !strings.Contains(sum, "tagged `imagegen:tested=passed`") {
		t.Errorf("check run summary:\n%s", sum)
	}
	imgs := cl.Images()
	if len(imgs) != 1 || imgs[0].ID != rec.ImageID || imgs[0].Tags[clouds.TagTested] != clouds.TestedPassed || imgs[0].Tags[clouds.TagBranch] != "main" {
		t.Errorf("images %+v", imgs)
	}
	if e, err := builds.Latest(ctx, s.store, q); err != nil || e.ImageID != rec.ImageID || e.Tested != "passed" || e.Branch != "main" {
		t.Errorf("latest %+v, %v", e, err)
	}
	if live := cl.Live(); len(live) != 0 {
		t.Errorf("left in the cloud: %v", live)
	}
	passed := rec.ImageID

	// Failing: the image is deleted, the status fails with the exit code,
	// latest still names the passing image.
	gh.Files[".imagegen/web.yaml"] = &fstest.MapFile{Data: spec("echo checking the image; test -f /nonexistent || exit 3")}
	id = pushAndRun(t, s, "o/r", "d-fail", strings.Repeat("b", 40), "web")["web"]
	b, _, _ = s.store.Get(ctx, id)
	rec = b.Clouds["sim"]
	if rec.State != builder.StateFailed || rec.ImageID != "" || rec.Test == nil || rec.Test.ExitCode != 3 {
		t.Fatalf("record %+v test %+v", rec, rec.Test)
	}
	if st := gh.Latest()["imagegen/web/sim"]; st.State != "failure" || !strings.HasPrefix(st.Description, "failed: testing: running test: the test exited with code 3; its last 1 lines:") {
		t.Errorf("status %+v", st)
	}
	runs = gh.Runs()
	if sum := runs[len(runs)-1].Summary; !strings.Contains(sum, "- **sim**: ❌ failed (exit code 3)") || !strings.Contains(sum, "the image was deleted") || !strings.Contains(sum, "checking the image") {
		t.Errorf("check run summary:\n%s", sum)
	}
	if imgs := cl.Images(); len(imgs) != 1 || imgs[0].ID != passed {
		t.Errorf("images %+v, want only the passing one", imgs)
	}
	if e, err := builds.Latest(ctx, s.store, q); err != nil || e.ImageID != passed {
		t.Errorf("latest %+v, %v", e, err)
	}
	if live := cl.Live(); len(live) != 0 {
		t.Errorf("left in the cloud: %v", live)
	}
}

// keep: 2 after four builds leaves exactly the two newest images of the
// generator; another generator's and another repository's images, with
// names alike, are never touched; nor is the image a channel points at,
// nor one another build took as its base image.
func TestLifecycleRetention(t *testing.T) {
	const cfgYAML = "github: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  sim: {type: simulated}\n"
	web := func(extra string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("script: echo web\n" + extra + "clouds:\n  sim: {image: debian-12, ssh_user: debian}\n")}
	}
	gh := &githubtest.Mem{Files: fstest.MapFS{
		".imagegen/web.yaml":  web("keep: 2\n"),
		".imagegen/web2.yaml": {Data: []byte("script: echo web2\nclouds:\n  sim: {image: debian-12, ssh_user: debian}\n")},
	}}
	s, cfg, _ := newServiceWith(t, gh, cfgYAML)
	cl := simulated.CloudOf(cfg.Clouds["sim"].Opener)
	ctx := context.Background()
	imageOf := func(id string) string {
		b, _, err := s.store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return b.Clouds["sim"].ImageID
	}
	// Another repository's generator "web": the same names on the same cloud.
	other := pushAndRun(t, s, "x/other", "o1", strings.Repeat("e", 40), "web", "web2")
	var webImgs, webBuilds []string
	for i := range 4 {
		ids := pushAndRun(t, s, "o/r", fmt.Sprintf("p%d", i), fmt.Sprintf("%040d", i+1), "web", "web2")
		webImgs = append(webImgs, imageOf(ids["web"]))
		webBuilds = append(webBuilds, ids["web"])
		if i == 2 {
			runs := gh.Runs()
			var sum string
			for _, r := range runs {
				if r.ExternalID == ids["web"] {
					sum = r.Summary
				}
			}
			if !strings.Contains(sum, "### Retention") || !strings.Contains(sum, "- **sim**: removed 1 older image: `"+webImgs[0]+"`") {
				t.Errorf("the third build's check run does not list what it removed:\n%s", sum)
			}
		}
	}
	have := map[string]bool{}
	for _, im := range cl.Images() {
		have[im.ID] = true
	}
	for i, id := range webImgs {
		if want := i >= 2; have[id] != want {
			t.Errorf("web image %d (%s) there: %v, want %v", i, id, have[id], want)
		}
	}
	for _, id := range []string{imageOf(other["web"]), imageOf(other["web2"])} {
		if !have[id] {
			t.Errorf("another repository's image %s was deleted", id)
		}
	}
	if n := len(cl.Images()); n != 2+4+2 {
		t.Errorf("%d images; want web's 2, web2's 4 (no keep:), the other repository's 2", n)
	}
	// Trace's neighbours come from the records: retention deleted the
	// images on the cloud, not their lineage, so a kept image's previous
	// image is the deleted one, and a deleted image still has its story.
	imgs := builds.NewImages(cfg, s.store, gh)
	st, err := imgs.Story(ctx, "sim", webImgs[2])
	if err != nil || st.Previous == nil || st.Previous.ImageID != webImgs[1] || st.Next == nil || st.Next.ImageID != webImgs[3] {
		t.Errorf("story of %s after retention: %+v, %v; want previous %s, next %s", webImgs[2], st, err, webImgs[1], webImgs[3])
	}
	if st.Removed != nil {
		t.Errorf("story of the kept %s says it was removed: %+v", webImgs[2], st.Removed)
	}
	st, err = imgs.Story(ctx, "sim", webImgs[0])
	if err != nil || st.Previous != nil || st.Next == nil || st.Next.ImageID != webImgs[1] {
		t.Fatalf("story of the deleted %s: %+v, %v; want no previous, next %s", webImgs[0], st, err, webImgs[1])
	}
	if want := "retention (keep: 2) when build " + webBuilds[2] + " published"; st.Removed == nil || st.Removed.By != want || st.Removed.At.IsZero() {
		t.Errorf("story of the deleted %s: removed %+v, want by %q", webImgs[0], st.Removed, want)
	}

	// A channel's image and a base image are kept beyond keep.
	gh.Files[".imagegen/web.yaml"] = web("keep: 1\nchannel: stable\n")
	gh.Files[".imagegen/child.yaml"] = &fstest.MapFile{Data: []byte("script: echo child\nclouds:\n  sim: {image: " + webImgs[3] + ", ssh_user: debian}\n")}
	stable := imageOf(pushAndRun(t, s, "o/r", "c1", strings.Repeat("c", 40), "child", "web")["web"])
	gh.Files[".imagegen/web.yaml"] = web("keep: 1\n")
	pushAndRun(t, s, "o/r", "c2", strings.Repeat("d", 40), "web")
	have = map[string]bool{}
	for _, im := range cl.Images() {
		have[im.ID] = true
	}
	if !have[stable] || !have[webImgs[3]] || have[webImgs[2]] {
		t.Errorf("channel image %s kept %v (want true); child's base %s kept %v (want true); %s kept %v (want false)",
			stable, have[stable], webImgs[3], have[webImgs[3]], webImgs[2], have[webImgs[2]])
	}
	if e, err := builds.Latest(ctx, s.store, builds.LatestQuery{Repo: "o/r", Generator: "web", Cloud: "sim", Channel: "stable"}); err != nil || e.ImageID != stable {
		t.Errorf("channel stable: %+v, %v", e, err)
	}
	// A failed delete: reported, the build stands, the sweep retries it.
	gh.Files[".imagegen/web.yaml"] = web("keep: 1\n")
	cl.Inject(simulated.OpDeleteImage, simulated.Fault{Err: errors.New("image in use"), Times: 1})
	ids := pushAndRun(t, s, "o/r", "c3", strings.Repeat("f", 40), "web")
	b, _, _ := s.store.Get(ctx, ids["web"])
	rec := b.Clouds["sim"]
	if rec.State != builder.StateSucceeded || len(rec.PruneErrors) != 1 || !strings.Contains(rec.PruneErrors[0], "image in use") {
		t.Fatalf("record %+v", rec)
	}
	for _, r := range gh.Runs() {
		if r.ExternalID == ids["web"] && (r.Conclusion != "success" || !strings.Contains(r.Summary, "could not remove an older image (the sweep tries again; the build stands)")) {
			t.Errorf("check run %s:\n%s", r.Conclusion, r.Summary)
		}
	}
	pending, _ := s.store.PendingPrunes(ctx)
	if len(pending) != 1 {
		t.Fatalf("pending prunes %+v", pending)
	}
	if _, err := s.sweeper.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if pending, _ := s.store.PendingPrunes(ctx); len(pending) != 0 {
		t.Errorf("pending prunes after the sweep: %+v", pending)
	}
	for _, im := range cl.Images() {
		if im.Tags[clouds.TagGenerator] == "web" && im.Tags[clouds.TagRepo] == "o/r" && im.ID != rec.ImageID && im.ID != stable && im.ID != webImgs[3] {
			t.Errorf("web image %s left after the sweep", im.ID)
		}
	}
}
