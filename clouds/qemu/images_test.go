package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
)

// TestBuildImages lists a directory's images by the build their provenance
// names, as the sweep does, and deletes what it lists: disk and sidecars.
// It needs no QEMU: the files are what Snapshot leaves.
func TestBuildImages(t *testing.T) {
	dir := t.TempDir()
	c, err := configure("{type: qemu, dir: " + dir + "}")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put := func(name, build string, disk bool) {
		t.Helper()
		if disk {
			write(name+".qcow2", "QFI\xfb")
			write(name+".boot.json", `{"kernel":"vmlinuz"}`)
		}
		tags := map[string]string{clouds.TagGenerator: "dstat"}
		if build != "" {
			tags[clouds.TagBuild] = build
		}
		b, err := json.Marshal(Provenance{Name: name, Disk: name + ".qcow2", Created: time.Now().UTC(), Tags: tags})
		if err != nil {
			t.Fatal(err)
		}
		write(name+".json", string(b))
	}
	put("dstat-a1", "a", true)
	put("dstat-a2", "a", true)
	put("dstat-b1", "b", true)
	put("dstat-ab1", "ab", true)
	put("untagged", "", true)        // provenance without a build: not a build's
	put("dstat-gone", "a", false)    // its disk was removed by hand
	write("ubuntu.qcow2", "QFI\xfb") // a base image: no provenance
	write("notes.json", `{"owner":"lab"}`)

	tests := []struct {
		build string
		want  []string
	}{
		{"a", []string{"dstat-a1", "dstat-a2"}},
		{"b", []string{"dstat-b1"}},
		{"none", nil},
		{"", []string{"dstat-a1", "dstat-a2", "dstat-ab1", "dstat-b1"}},
	}
	for _, tc := range tests {
		t.Run("build "+tc.build, func(t *testing.T) {
			imgs, err := c.BuildImages(context.Background(), tc.build)
			if err != nil {
				t.Fatal(err)
			}
			cloudtest.CheckListed(t, imgs, tc.build, tc.want, func(t testing.TB, im clouds.Image) {
				if im.ID != im.Name || im.Location != filepath.Join(dir, im.Name+".qcow2") {
					t.Errorf("image %s: id %q, location %q; want the name and its disk", im.Name, im.ID, im.Location)
				}
			})
		})
	}

	imgs, err := c.BuildImages(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	cloudtest.DeleteListed(t, c, imgs)
	for _, im := range imgs {
		for _, f := range []string{".qcow2", ".json", ".boot.json"} {
			if _, err := os.Stat(filepath.Join(dir, im.Name+f)); !os.IsNotExist(err) {
				t.Errorf("%s%s outlived DeleteImage (stat: %v)", im.Name, f, err)
			}
		}
	}
	if left, err := c.BuildImages(context.Background(), "a"); err != nil || len(left) > 0 {
		t.Errorf("after DeleteImage: %v, %v", left, err)
	}
	for _, f := range []string{"dstat-b1.qcow2", "ubuntu.qcow2", "untagged.qcow2", "notes.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s of no listed image was touched: %v", f, err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.BuildImages(ctx, ""); err == nil {
		t.Error("BuildImages on a canceled context succeeded")
	}
}
