package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
)

// FindImages globs the dir's disks, newest first; TagImage edits a built
// image's provenance sidecar. No QEMU needed.
func TestFindAndTagImages(t *testing.T) {
	dir := t.TempDir()
	c := newTestCloud(t, "{type: qemu, dir: "+dir+"}")
	day := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	for i, name := range []string{"debian-12-20250401.qcow2", "debian-12-20250501.qcow2", "ubuntu-24.04.img", "debian-12-notes.txt"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("disk"), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Chtimes(p, day.AddDate(0, i, 0), day.AddDate(0, i, 0))
	}
	// A built image, with its provenance.
	pv := Provenance{Name: "web-20250601-0000-abcdef0", Disk: "web-20250601-0000-abcdef0.qcow2", Created: day.AddDate(0, 2, 0), Tags: map[string]string{clouds.TagGenerator: "web"}}
	b, _ := json.Marshal(pv)
	_ = os.WriteFile(filepath.Join(dir, pv.Disk), []byte("disk"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, pv.Name+".json"), b, 0o644)
	ctx := context.Background()

	got, err := c.FindImages(ctx, clouds.ImageFilter{Name: "debian-12-*"})
	if err != nil || len(got) != 2 || got[0].ID != "debian-12-20250501.qcow2" || got[1].ID != "debian-12-20250401.qcow2" {
		t.Fatalf("FindImages = %+v, %v", got, err)
	}
	img, err := clouds.ResolveImage(ctx, c, clouds.ImageFilter{Name: "debian-12-*", MostRecent: true})
	if err != nil || img.ID != "debian-12-20250501.qcow2" {
		t.Errorf("ResolveImage = %+v, %v", img, err)
	}
	if _, _, err := resolveImage(dir, img.ID); err != nil {
		t.Errorf("Launch could not find %s: %v", img.ID, err)
	}
	got, _ = c.FindImages(ctx, clouds.ImageFilter{Name: "web-*", Tags: map[string]string{clouds.TagGenerator: "web"}})
	if len(got) != 1 || got[0].ID != pv.Name || !got[0].Created.Equal(pv.Created) {
		t.Errorf("built image: %+v", got)
	}
	if _, err := c.FindImages(ctx, clouds.ImageFilter{Name: "x", Owner: "me"}); clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("an owner: %v", err)
	}

	if err := c.TagImage(ctx, pv.Name, map[string]string{clouds.TagTested: clouds.TestedPassed}); err != nil {
		t.Fatal(err)
	}
	imgs, _ := ListImages(dir)
	if len(imgs) != 1 || imgs[0].Tags[clouds.TagTested] != clouds.TestedPassed || imgs[0].Tags[clouds.TagGenerator] != "web" {
		t.Errorf("after TagImage: %+v", imgs)
	}
	if err := c.TagImage(ctx, "nope", map[string]string{"a": "b"}); clouds.KindOf(err) != clouds.KindNotFound {
		t.Errorf("TagImage of a missing image: %v", err)
	}
}

// TestLifecycleEndToEnd boots the tiny image twice per case: the build (its
// base found by a glob on the dir: the newest of two copies) writes a
// marker, then the new image is booted for the test, which checks the
// marker. A passing test tags the image's provenance; a failing one deletes
// the image; neither VM is left.
func TestLifecycleEndToEnd(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	boot, err := readBoot(base)
	if err != nil || boot == nil {
		t.Fatalf("the test image's boot sidecar: %v", err)
	}
	old := time.Now().Add(-48 * time.Hour)
	for i, name := range []string{"tinyos-20250101", "tinyos-20250201"} {
		disk := filepath.Join(dir, name+".qcow2")
		data, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(disk, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writeBoot(disk, boot); err != nil {
			t.Fatal(err)
		}
		ts := old.Add(time.Duration(i) * time.Hour)
		_ = os.Chtimes(disk, ts, ts)
	}
	c := newTestCloud(t, "{type: qemu, dir: "+dir+", memory: 256, boot_timeout: 2m, shutdown_timeout: 1m}")
	for _, tc := range []struct {
		name, test, commit string
		state              builder.State
		wantErr            string
	}{
		{"pass", "grep -q 'made by' /root/marker\necho the marker is there", "aaaaaaa" + strings.Repeat("0", 33), builder.StateSucceeded, ""},
		{"fail", "test -f /root/absent || exit 7", "bbbbbbb" + strings.Repeat("0", 33), builder.StateFailed, "testing: running test: the test exited with code 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			sp := testSpec("marker", "set -e\necho \"made by $(uname -s)\" > /root/marker\nsync\n", "")
			sp.Clouds["local"] = spec.CloudSpec{SSHUser: "root", Filter: &spec.ImageFilter{Name: "tinyos-*", MostRecent: true}}
			sp.Test = tc.test
			build := "lc" + tc.name
			rec := &recorder{}
			res := builder.Run(ctx, builder.Job{Build: build, CloudName: "local", Cloud: c, Spec: sp, Branch: "main",
				Repo: "example/images", Commit: tc.commit, SSHTimeout: 2 * time.Minute, CleanupTimeout: time.Minute, Observer: rec})
			if res.State != tc.state || !strings.HasPrefix(res.Error, tc.wantErr) {
				t.Fatalf("state %s error %q, want %s %q\nlog:\n%s", res.State, res.Error, tc.state, tc.wantErr, rec)
			}
			if res.BaseImage != "tinyos-20250201.qcow2" {
				t.Errorf("base image %q, want the newest tinyos", res.BaseImage)
			}
			assertClean(t, c, build)
			imgs, err := ListImages(dir)
			if err != nil {
				t.Fatal(err)
			}
			var mine []string
			for _, im := range imgs {
				if im.Tags[clouds.TagBuild] == build {
					mine = append(mine, im.Tags[clouds.TagTested])
				}
			}
			switch {
			case tc.state == builder.StateSucceeded && (len(mine) != 1 || mine[0] != clouds.TestedPassed || !rec.has("stdout", "the marker is there")):
				t.Errorf("images of the build tagged %q; want one, passed\nlog:\n%s", mine, rec)
			case tc.state != builder.StateSucceeded && len(mine) != 0:
				t.Errorf("the failed test's image is still there: %q", mine)
			}
		})
	}
}
