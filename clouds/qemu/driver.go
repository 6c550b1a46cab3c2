// Package qemu is cloud type "qemu": real images built on this machine by booting a base disk under QEMU (KVM or TCG), saved as qcow2.
// It knows clouds only, not builds, GitHub or Redis, and removes only files under its dir and its QEMU processes (imagegen-<build>).
package qemu

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/imagegen/imagegen/clouds"
)

// Cloud is a configured local QEMU cloud. One value serves every build; it
// remembers the QEMU processes it started so it can reap them.
type Cloud struct {
	cfg    config
	prober *accelProber // decides KVM or TCG once per process

	mu  sync.Mutex
	vms map[string]*vm // by process resource id
}

func newCloud(c config) *Cloud { return &Cloud{cfg: c, prober: prober, vms: map[string]*vm{}} }

// Open returns the cloud itself: local QEMU needs no credentials.
func (c *Cloud) Open(context.Context, clouds.Credentials) (clouds.Cloud, error) { return c, nil }

// Features reports images, and a guest powered off over SSH (QEMU has no
// clean shutdown of its own that every guest obeys).
func (c *Cloud) Features() clouds.Features {
	return clouds.Features{Images: true, PoweroffOverSSH: true}
}

// Dir is the cloud's directory: base images, built images, and work/.
func (c *Cloud) Dir() string { return c.cfg.Dir }

func (c *Cloud) workRoot() string { return filepath.Join(c.cfg.Dir, "work") }

// Resource names of what Launch creates, so Terminate and Snapshot can tell
// the files apart.
const (
	resWorkDir = "work-dir"
	resOverlay = "overlay"
	resSeed    = "seed"
	resQEMU    = "qemu"
)

// The files of a launch, in dir/work/<build>/<name>/.
const (
	overlayFile = "overlay.qcow2"
	seedFile    = "seed.iso"
)

// safeName is what build ids and names must look like to become file names.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func lastOf(inst *clouds.Instance, kind, name string) (clouds.Resource, bool) {
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if r := inst.Resources[i]; r.Kind == kind && r.Name == name {
			return r, true
		}
	}
	return clouds.Resource{}, false
}

// within reports whether path lies strictly inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, filepath.Clean(path))
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
