package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagegen/imagegen/clouds"
)

// Leftovers finds, by build id, the QEMU processes named imagegen-<build>
// that use this cloud's dir (kind server: the VM), and the work directories
// dir/work/<build>/<name> with their overlay and seed (kind file).
func (c *Cloud) Leftovers(_ context.Context, build string) ([]clouds.Resource, error) {
	if build != "" && !safeName.MatchString(build) {
		return nil, clouds.Errorf(clouds.KindInvalid, "leftovers", "bad build id %q", build)
	}
	var out []clouds.Resource
	procs, err := findQEMU(build, c.workRoot())
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: procID(p.pid, p.start), Name: resQEMU, Build: p.build})
	}
	pattern := filepath.Join(c.workRoot(), "*", "*")
	if build != "" {
		pattern = filepath.Join(c.workRoot(), build, "*")
	}
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		b := filepath.Base(filepath.Dir(d))
		out = append(out, clouds.Resource{Kind: clouds.KindFile, ID: d, Name: resWorkDir, Build: b})
		for _, f := range []struct{ file, name string }{{overlayFile, resOverlay}, {seedFile, resSeed}} {
			if p := filepath.Join(d, f.file); fileExists(p) {
				out = append(out, clouds.Resource{Kind: clouds.KindFile, ID: p, Name: f.name, Build: b})
			}
		}
	}
	return out, nil
}

// Remove kills a QEMU process or deletes a file or work directory. Idempotent.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	switch r.Kind {
	case clouds.KindServer:
		pid, start, err := parseProcID(r.ID)
		if err != nil {
			return clouds.Errorf(clouds.KindInvalid, "remove", "%w", err)
		}
		if alive(pid, start) && !isOurQEMU(pid, c.workRoot()) {
			return clouds.Errorf(clouds.KindInvalid, "remove", "process %d is not a QEMU of this cloud", pid)
		}
		if err := c.kill(ctx, r.ID, pid, start); err != nil {
			return fmt.Errorf("remove QEMU %s: %w", r.ID, err)
		}
		return nil
	case clouds.KindFile:
		if !within(c.workRoot(), r.ID) {
			return clouds.Errorf(clouds.KindInvalid, "remove", "%s is not under %s", r.ID, c.workRoot())
		}
		if err := os.RemoveAll(r.ID); err != nil {
			return fmt.Errorf("remove %s: %w", r.ID, err)
		}
		if r.Name == resWorkDir {
			// The build's directory goes with its last instance; not empty is fine.
			_ = os.Remove(filepath.Dir(r.ID))
		}
		return nil
	default:
		return clouds.Errorf(clouds.KindInvalid, "remove", "unknown resource kind %q", r.Kind)
	}
}
