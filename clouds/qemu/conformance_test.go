package qemu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
)

// TestConformance runs the shared driver suite against real QEMU and the
// tiny test image. Stop is called there without a poweroff, so
// shutdown_timeout is short: Stop then kills QEMU, as it must.
func TestConformance(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	cfg := "{type: qemu, dir: " + dir + ", memory: 256, boot_timeout: 2m, shutdown_timeout: 1s}"
	cloudtest.Run(t, cloudtest.Harness{
		Open:     func(t *testing.T) clouds.Cloud { return newTestCloud(t, cfg) },
		Image:    base,
		User:     "root",
		BadImage: "no-such-image",
		Live:     func(t *testing.T) []clouds.Resource { return liveResources(t, dir) },
		Images: func(t *testing.T) []clouds.Image {
			imgs, err := ListImages(dir)
			if err != nil {
				t.Fatal(err)
			}
			return imgs
		},
	})
}

// liveResources reads what exists for dir from the system itself, not
// through the driver: work files under dir/work/<build>/<name>/, and QEMU
// processes whose command line names a build and a file under dir/work.
func liveResources(t *testing.T, dir string) []clouds.Resource {
	t.Helper()
	var out []clouds.Resource
	work := filepath.Join(dir, "work")
	builds, _ := os.ReadDir(work)
	for _, b := range builds {
		insts, _ := os.ReadDir(filepath.Join(work, b.Name()))
		for _, in := range insts {
			d := filepath.Join(work, b.Name(), in.Name())
			out = append(out, clouds.Resource{Kind: clouds.KindFile, ID: d, Build: b.Name()})
			files, _ := os.ReadDir(d)
			for _, f := range files {
				out = append(out, clouds.Resource{Kind: clouds.KindFile, ID: filepath.Join(d, f.Name()), Build: b.Name()})
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmd), work+"/") {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-name" && strings.HasPrefix(args[i+1], "imagegen-") {
				start, zombie, err := procStart(pid)
				if err == nil && !zombie {
					out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: procID(pid, start), Build: strings.TrimPrefix(args[i+1], "imagegen-")})
				}
			}
		}
	}
	return out
}
