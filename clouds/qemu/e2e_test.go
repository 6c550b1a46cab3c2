package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/manifest"
)

// These tests boot the tiny test image (scripts/make-test-image.sh) under
// real QEMU, TCG when there is no KVM. Each boot takes seconds.

// recorder is a builder.Observer keeping the build log, shown when a test fails.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Phase(cloud string, p builder.Phase, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf("[phase] %s", p))
}

func (r *recorder) Line(l builder.LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf("[%s] %s", l.Stream, l.Text))
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

func (r *recorder) has(stream, text string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.HasPrefix(l, "["+stream+"]") && strings.Contains(l, text) {
			return true
		}
	}
	return false
}

func testSpec(name, script, image string) *spec.Spec {
	s := &spec.Spec{
		Name:   name,
		Script: script,
		Clouds: map[string]spec.CloudSpec{"local": {Image: image, SSHUser: "root"}},
		File:   ".imagegen/" + name + ".yaml",
	}
	s.Digest = spec.ComputeDigest(s)
	return s
}

// assertClean checks that nothing of build is left: no work files, no QEMU.
func assertClean(t *testing.T, c *Cloud, build string) {
	t.Helper()
	left, err := c.Leftovers(context.Background(), build)
	if err != nil {
		t.Fatalf("Leftovers: %v", err)
	}
	if len(left) > 0 {
		t.Errorf("build %s left %+v", build, left)
	}
	if _, err := os.Stat(filepath.Join(c.workRoot(), build)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir of %s still there (%v)", build, err)
	}
}

// TestBuildEndToEnd runs the real pipeline (builder.Run) on the local cloud:
// a script writes a file; the output image is then booted and the file
// checked over SSH with a pinned host key; the sidecar holds the provenance.
func TestBuildEndToEnd(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	c := newTestCloud(t, "{type: qemu, dir: "+dir+", memory: 256, boot_timeout: 2m, shutdown_timeout: 1m}")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The busybox guest has no os-release: the script writes one, which the
	// manifest, collected right after it, must report.
	sp := testSpec("marker", "set -e\necho \"made by $(uname -s)\" > /root/marker\n"+
		"printf 'ID=imagegen-test\\nVERSION_ID=1\\nPRETTY_NAME=\"imagegen test image\"\\n' > /etc/os-release\nsync\necho wrote the marker\n", base)
	sp.Manifest.Files = []string{"/root/marker", "/bin/busybox"}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	rec := &recorder{}
	res := builder.Run(ctx, builder.Job{Build: "e2e1", CloudName: "local", Cloud: c, Spec: sp,
		Repo: "example/images", Commit: commit, SSHTimeout: 2 * time.Minute, CleanupTimeout: time.Minute, Observer: rec})
	if res.State != builder.StateSucceeded || res.Image == nil {
		t.Fatalf("build %s: %s\nlog:\n%s", res.State, res.Error, rec)
	}
	for _, p := range res.Phases {
		t.Logf("phase %-14s %s", p.Phase, p.Duration.Round(10*time.Millisecond))
	}
	if !rec.has("stdout", "wrote the marker") || !rec.has("console", "rcS: ssh up") {
		t.Errorf("the log lacks the script's output or the console:\n%s", rec)
	}
	assertClean(t, c, "e2e1")

	// The manifest of the real guest: its os-release, kernel and
	// architecture; no package manager (busybox), which is a note, not a
	// failure; the files hashed; the image tagged with its digest.
	mr := res.Manifest
	if mr == nil || mr.Manifest == nil || mr.Error != "" {
		t.Fatalf("manifest %+v\nlog:\n%s", mr, rec)
	}
	m := mr.Manifest
	if m.OS.ID != "imagegen-test" || m.OS.VersionID != "1" || m.OS.PrettyName != "imagegen test image" {
		t.Errorf("os %+v", m.OS)
	}
	if m.Kernel == "" || m.Arch != "x86_64" {
		t.Errorf("kernel %q, arch %q", m.Kernel, m.Arch)
	}
	if len(m.Packages) != 0 || mr.Packages != 0 || m.Partial || mr.Partial {
		t.Errorf("packages %v, partial %v: a guest without a package manager has none, and that is complete", m.Packages, m.Partial)
	}
	if !slices.Contains(m.Notes, "no package manager found (dpkg-query, rpm, apk): the package list is empty") {
		t.Errorf("notes %q", m.Notes)
	}
	if len(m.Files) != 2 || m.Files[1].Path != "/root/marker" || len(m.Files[1].SHA256) != 64 {
		t.Errorf("files %+v", m.Files)
	}
	if mr.SHA256 != manifest.SHA256(mr.Document) || res.Image.Tags[clouds.TagManifestSHA] != mr.SHA256 {
		t.Errorf("manifest sha256 %s; image tags %v", mr.SHA256, res.Image.Tags)
	}
	if !rec.has("imagegen", "manifest collected") {
		t.Errorf("the log does not say the manifest was collected:\n%s", rec)
	}

	// The sidecar: provenance that matches the spec digest and commit.
	b, err := os.ReadFile(filepath.Join(dir, res.Image.Name+".json"))
	if err != nil {
		t.Fatalf("provenance sidecar: %v", err)
	}
	var pv Provenance
	if err := json.Unmarshal(b, &pv); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		clouds.TagScriptSHA: sp.Digest, clouds.TagCommit: commit, clouds.TagRepo: "example/images",
		clouds.TagGenerator: "marker", clouds.TagBuild: "e2e1", clouds.TagBaseImage: base,
		clouds.TagManifestSHA: mr.SHA256,
	}
	for k, v := range want {
		if pv.Tags[k] != v {
			t.Errorf("sidecar tag %s = %q, want %q", k, pv.Tags[k], v)
		}
	}
	if !strings.HasPrefix(res.Image.Name, "marker-") || !strings.HasSuffix(res.Image.Name, "-0123456") {
		t.Errorf("image name %q", res.Image.Name)
	}
	imgs, err := ListImages(dir)
	if err != nil || len(imgs) != 1 || imgs[0].Name != res.Image.Name || imgs[0].Tags[clouds.TagScriptSHA] != sp.Digest {
		t.Fatalf("ListImages = %+v, %v", imgs, err)
	}

	// Boot the output image, by name, as a new build would.
	k := newKeys(t)
	con := &servicetest.Buffer{}
	var inst clouds.Instance
	defer func() {
		if err := c.Terminate(context.Background(), &inst); err != nil {
			t.Errorf("Terminate: %v", err)
		}
		assertClean(t, c, "e2e1-check")
	}()
	err = c.Launch(ctx, clouds.LaunchRequest{Build: "e2e1-check", Name: "check", Image: res.Image.Name, User: "root",
		AuthorizedKey: k.authorized, HostKey: k.hostKey, Log: testLog(t), Console: con}, &inst)
	if err != nil {
		t.Fatalf("boot the output image: %v\nconsole:\n%s", err, con)
	}
	cl := dialGuest(t, inst.SSH, "root", k)
	defer cl.Close()
	if out, err := run(t, cl, "cat /root/marker"); err != nil || strings.TrimSpace(out) != "made by Linux" {
		t.Fatalf("the output image's /root/marker: %q, %v\nconsole:\n%s", out, err, con)
	}
}

// TestBuildScriptFails: a failing script fails the build with its exit code,
// makes no image, and leaves neither QEMU nor the overlay behind.
func TestBuildScriptFails(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	c := newTestCloud(t, "{type: qemu, dir: "+dir+", memory: 256, boot_timeout: 2m}")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rec := &recorder{}
	res := builder.Run(ctx, builder.Job{Build: "fail1", CloudName: "local", Cloud: c,
		Spec:       testSpec("broken", "echo about to fail\nexit 7\n", base),
		SSHTimeout: 2 * time.Minute, CleanupTimeout: time.Minute, Observer: rec})
	if res.State != builder.StateFailed || res.ExitCode != 7 {
		t.Fatalf("build %s, exit %d, error %q; want failed with exit 7\nlog:\n%s", res.State, res.ExitCode, res.Error, rec)
	}
	if res.Image != nil || len(res.Leftovers) > 0 {
		t.Errorf("image %+v, leftovers %+v", res.Image, res.Leftovers)
	}
	assertClean(t, c, "fail1")
	if imgs, err := ListImages(dir); err != nil || len(imgs) != 0 {
		t.Errorf("ListImages = %+v, %v; want none", imgs, err)
	}
}

// TestCancelWhileWaitingForSSH: Ctrl-C during boot makes Launch return at
// once; what it made is recorded, and a sweep after a "crash" (a fresh Cloud
// that never saw the launch) finds the QEMU process and the work files by
// build id and removes them.
func TestCancelWhileWaitingForSSH(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	cfg := "{type: qemu, dir: " + dir + ", memory: 256}"
	c := newTestCloud(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	k := newKeys(t)
	var inst clouds.Instance
	errc := make(chan error, 1)
	go func() {
		errc <- c.Launch(ctx, clouds.LaunchRequest{Build: "cancel1", Name: "vm", Image: base, User: "root",
			AuthorizedKey: k.authorized, HostKey: k.hostKey, Log: testLog(t)}, &inst)
	}()
	// Cancel once QEMU runs: the guest is then still booting.
	deadline := time.Now().Add(30 * time.Second)
	for {
		procs, _ := findQEMU("cancel1", c.workRoot())
		if len(procs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("QEMU never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	canceled := time.Now()
	cancel()
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Launch did not return within 5s of the cancel")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Launch after cancel = %v; want context.Canceled", err)
	}
	t.Logf("Launch returned %s after the cancel", time.Since(canceled).Round(time.Millisecond))
	kinds := map[string]int{}
	for _, r := range inst.Resources {
		kinds[r.Name]++
		if r.Build != "cancel1" {
			t.Errorf("resource %+v not tagged with the build", r)
		}
	}
	if kinds[resQEMU] != 1 || kinds[resOverlay] != 1 || kinds[resSeed] != 1 || kinds[resWorkDir] != 1 {
		t.Errorf("inst.Resources = %+v; want work dir, overlay, seed and QEMU", inst.Resources)
	}

	// The worker "crashed": a new Cloud value sweeps by build id.
	swept := newTestCloud(t, cfg)
	left, err := swept.Leftovers(context.Background(), "cancel1")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, r := range left {
		found[r.Kind] = true
		if err := swept.Remove(context.Background(), r); err != nil {
			t.Errorf("Remove(%+v): %v", r, err)
		}
		if err := swept.Remove(context.Background(), r); err != nil {
			t.Errorf("Remove twice (%+v): %v", r, err)
		}
	}
	if !found[clouds.KindServer] || !found[clouds.KindFile] {
		t.Errorf("Leftovers = %+v; want the QEMU process and the work dir", left)
	}
	assertClean(t, swept, "cancel1")
	// Terminate after the sweep: everything is gone already, which is success.
	if err := c.Terminate(context.Background(), &inst); err != nil {
		t.Errorf("Terminate after the sweep: %v", err)
	}
}

// TestGuestWithoutSSH: a guest that never brings up SSH (its root disk is
// missing, so it waits forever) fails Launch after boot_timeout with the
// console's tail; Stop then kills QEMU after shutdown_timeout, and Terminate
// removes the files.
func TestGuestWithoutSSH(t *testing.T) {
	base := testImage(t)
	dir := t.TempDir()
	// A copy of the base image whose boot sidecar names a root disk that does not exist.
	bootJSON, err := os.ReadFile(sidecarStem(base) + ".boot.json")
	if err != nil {
		t.Fatal(err)
	}
	var bc BootConfig
	if err := json.Unmarshal(bootJSON, &bc); err != nil {
		t.Fatal(err)
	}
	bc.Kernel = filepath.Join(filepath.Dir(base), bc.Kernel)
	bc.Initrd = filepath.Join(filepath.Dir(base), bc.Initrd)
	// Not quiet: the kernel's own lines reach the console within a second,
	// so the error has a console tail to show even on a loaded machine.
	bc.Append = strings.Replace(strings.Replace(bc.Append, "root=/dev/vda", "root=/dev/vdz", 1), "quiet", "", 1)
	if err := os.Symlink(base, filepath.Join(dir, "nodisk.qcow2")); err != nil {
		t.Fatal(err)
	}
	if err := writeBoot(filepath.Join(dir, "nodisk.qcow2"), &bc); err != nil {
		t.Fatal(err)
	}

	c := newTestCloud(t, "{type: qemu, dir: "+dir+", memory: 256, boot_timeout: 15s, shutdown_timeout: 300ms}")
	k := newKeys(t)
	var inst clouds.Instance
	start := time.Now()
	con := &servicetest.Buffer{}
	err = c.Launch(context.Background(), clouds.LaunchRequest{Build: "nossh1", Name: "vm", Image: "nodisk", User: "root",
		AuthorizedKey: k.authorized, HostKey: k.hostKey, Log: testLog(t), Console: con}, &inst)
	took := time.Since(start)
	if err == nil || clouds.KindOf(err) != clouds.KindFailed || !strings.Contains(err.Error(), "no SSH server") {
		t.Fatalf("Launch = %v; want a failed boot", err)
	}
	_, tail, _ := strings.Cut(err.Error(), "the console's last output:\n")
	if strings.TrimSpace(tail) == "" || !strings.Contains(con.String(), tail) {
		t.Errorf("the error lacks the console's tail: %v\nconsole:\n%s", err, con)
	}
	if took < 15*time.Second || took > 25*time.Second {
		t.Errorf("Launch took %s; want about boot_timeout (15s)", took)
	}
	stopStart := time.Now()
	if err := c.Stop(context.Background(), &inst); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(stopStart); d > 5*time.Second {
		t.Errorf("Stop took %s; want shutdown_timeout then a kill", d)
	}
	if procs, _ := findQEMU("nossh1", c.workRoot()); len(procs) != 0 {
		t.Errorf("QEMU still runs after Stop: %+v", procs)
	}
	if err := c.Terminate(context.Background(), &inst); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	if err := c.Terminate(context.Background(), &inst); err != nil {
		t.Fatalf("Terminate twice: %v", err)
	}
	assertClean(t, c, "nossh1")
}
