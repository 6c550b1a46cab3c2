package servicetest

// The QEMU cloud's tests, and end-to-end tests outside clouds/qemu, boot the
// tiny test image scripts/make-test-image.sh makes.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

var (
	qemuOnce sync.Once
	qemuPath string
	qemuErr  error
)

// NeedQEMU skips under -short and fails when QEMU is not installed.
func NeedQEMU(t testing.TB) {
	t.Helper()
	Need(t, "QEMU (Debian packages qemu-system-x86, qemu-utils)", "qemu-system-x86_64", "qemu-img")
}

// QEMUImage returns the tiny base image's disk (it boots with its own kernel
// sidecar, logs in root over SSH with the NoCloud seed's key), built once by
// scripts/make-test-image.sh and cached in .cache/testimage/<hash of the
// script, its files and the host's kernels>, so a changed script rebuilds it.
func QEMUImage(t testing.TB) string {
	t.Helper()
	NeedQEMU(t)
	qemuOnce.Do(func() {
		var root string
		if root, qemuErr = repoRoot(); qemuErr == nil {
			qemuPath, qemuErr = buildQEMUImage(root)
		}
	})
	if qemuErr != nil {
		t.Fatalf("make the test image: %v", qemuErr)
	}
	return qemuPath
}

// repoRoot is the module's root, found from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above %s", dir)
		}
		dir = parent
	}
}

func buildQEMUImage(root string) (string, error) {
	h := sha256.New()
	inputs := []string{filepath.Join(root, "scripts", "make-test-image.sh")}
	more, _ := filepath.Glob(filepath.Join(root, "scripts", "testimage", "*"))
	sort.Strings(more)
	for _, p := range append(inputs, more...) {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(p), len(b))
		h.Write(b)
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	fmt.Fprint(h, strings.Join(kernels, ","))
	dir := filepath.Join(root, ".cache", "testimage", hex.EncodeToString(h.Sum(nil))[:16])
	disk := filepath.Join(dir, "tiny.qcow2")
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	out, err := exec.Command("sh", filepath.Join(root, "scripts", "make-test-image.sh"), tmp).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("scripts/make-test-image.sh: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	// Images made by older versions of the script are of no further use.
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "*"))
	for _, o := range old {
		if o != dir {
			_ = os.RemoveAll(o)
		}
	}
	return disk, nil
}
