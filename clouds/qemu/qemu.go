package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

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

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// killGrace is how long a SIGTERMed QEMU gets before SIGKILL.
const killGrace = 5 * time.Second

// Cloud is a configured local QEMU cloud. One value serves every build; it
// remembers the QEMU processes it started so it can reap them.
type Cloud struct {
	cfg    config
	prober *accelProber // decides KVM or TCG once per process

	mu  sync.Mutex
	vms map[string]*vm // by process resource id
}

// vm is a QEMU process this Cloud started.
type vm struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when QEMU has exited and been reaped
	err  error         // its exit status, once done
	tail *tailBuffer   // the last of its console and stderr, for error messages
	log  *slog.Logger  // the build's log
}

func newCloud(c config) *Cloud { return &Cloud{cfg: c, prober: prober, vms: map[string]*vm{}} }

// Open returns the cloud itself: local QEMU needs no credentials.
func (c *Cloud) Open(context.Context, clouds.Credentials) (clouds.Cloud, error) { return c, nil }

// Features: images, and the guest is powered off over SSH (QEMU has no clean
// shutdown of its own that every guest obeys).
func (c *Cloud) Features() clouds.Features {
	return clouds.Features{Images: true, PoweroffOverSSH: true}
}

// Dir is the cloud's directory: base images, built images, and work/.
func (c *Cloud) Dir() string { return c.cfg.Dir }

func (c *Cloud) workRoot() string { return filepath.Join(c.cfg.Dir, "work") }

// safeName is what build ids and names must look like to become file names.
var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Launch makes an overlay on the base disk and a NoCloud seed under
// dir/work/<build>/<name>/, boots QEMU on them with 127.0.0.1:<free port>
// forwarded to the guest's port 22, and waits for an SSH banner.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	if !safeName.MatchString(req.Build) || !safeName.MatchString(req.Name) {
		return clouds.Errorf(clouds.KindInvalid, "launch", "build %q and name %q must be letters, digits, '.', '_' or '-'", req.Build, req.Name)
	}
	inst.Build = req.Build
	base, boot, err := resolveImage(c.cfg.Dir, req.Image)
	if err != nil {
		return err
	}
	format, err := diskFormat(base)
	if err != nil {
		return fmt.Errorf("launch: read base disk: %w", err)
	}
	mem, err := c.memory(req.Size)
	if err != nil {
		return err
	}
	qemuBin, err := exec.LookPath(c.cfg.QEMU)
	if err != nil {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err, Hint: "install qemu-system-x86 (Debian) or set the cloud's qemu key"}
	}
	imgBin, err := exec.LookPath(c.cfg.QEMUImg)
	if err != nil {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err, Hint: "install qemu-utils (Debian) or set the cloud's qemu_img key"}
	}
	// Before anything is made: an accel: kvm that cannot start fails here.
	accel := c.prober.choose(ctx, qemuBin, c.cfg.Accel, c.cfg.CPUModel, req.Log)
	if accel.Err != nil {
		return accel.Err
	}

	work := filepath.Join(c.workRoot(), req.Build, req.Name)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	inst.ID = req.Build + "/" + req.Name
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: work, Name: resWorkDir})

	overlay := filepath.Join(work, overlayFile)
	if err := newOverlay(ctx, imgBin, base, format, overlay); err != nil {
		return err
	}
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: overlay, Name: resOverlay})

	seed := filepath.Join(work, seedFile)
	ud, md, err := seedFiles(req, "imagegen-"+req.Build+"-"+req.Name)
	if err != nil {
		return err
	}
	iso, err := buildISO(SeedLabel, []isoFile{{Name: "user-data", Data: ud}, {Name: "meta-data", Data: md}}, time.Now())
	if err != nil {
		return fmt.Errorf("launch: build seed: %w", err)
	}
	// 0600: the seed holds the build's private host key.
	if err := os.WriteFile(seed, iso, 0o600); err != nil {
		return fmt.Errorf("launch: write seed: %w", err)
	}
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: seed, Name: resSeed})

	var (
		port int
		v    *vm
	)
	// Picking a free port and QEMU binding it are two steps; a port taken in
	// between makes QEMU exit at once, so that case is retried.
	for try := 0; ; try++ {
		if port, err = freePort(); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		args := c.args(req.Build, accel, mem, overlay, seed, port, boot)
		req.Log.Info("starting QEMU", "accel", accel.Accel, "cpu_model", cpuName(accel.CPU), "memory_mib", mem, "cpus", c.cfg.CPUs, "base", base, "ssh", fmt.Sprintf("127.0.0.1:%d", port))
		v, err = c.start(qemuBin, args, req, inst)
		if err != nil {
			return err
		}
		err = c.waitSSH(ctx, v, port, req.Log)
		if err == nil {
			break
		}
		if try < 2 && v.exited() && strings.Contains(v.tail.String(), "host forwarding") {
			req.Log.Warn("QEMU could not bind the SSH port; trying another", "port", port)
			continue
		}
		if try < 2 && errors.Is(err, errKVMInternal) {
			if tcg, ok := c.fallBackToTCG(ctx, inst, accel, qemuBin, req.Log); ok {
				// A fresh overlay: the stopped guest may have written to the old one.
				if err := newOverlay(ctx, imgBin, base, format, overlay); err != nil {
					return err
				}
				accel = tcg
				continue
			}
			return &clouds.Error{Kind: clouds.KindInvalid, Op: "boot", Err: err,
				Hint: "set the cloud's accel: tcg (slower, works anywhere), or a cpu_model: this host's KVM can run"}
		}
		return err
	}
	inst.SSH = &clouds.Endpoint{
		Addr:          net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		HostKeys:      hostKeys(req),
		HostKeySource: "injected",
	}
	req.Log.Info("guest is up", "ssh", inst.SSH.Addr)
	return nil
}

// newOverlay (re)creates a copy-on-write overlay on the base disk.
func newOverlay(ctx context.Context, imgBin, base, format, overlay string) error {
	absBase, err := filepath.Abs(base)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	_ = os.Remove(overlay)
	if out, err := exec.CommandContext(ctx, imgBin, "create", "-q", "-f", "qcow2", "-F", format, "-b", absBase, overlay).CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("launch: create overlay: %w", ctx.Err())
		}
		return clouds.Errorf(clouds.KindFailed, "create overlay", "qemu-img create: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// errKVMInternal marks a guest that KVM stopped: QEMU pauses it and it never
// comes up.
var errKVMInternal = errors.New(kvmInternalError)

// fallBackToTCG kills a guest that KVM stopped and, for accel: auto, turns
// the process's choice to TCG and returns it; an explicit accel: kvm returns
// false.
func (c *Cloud) fallBackToTCG(ctx context.Context, inst *clouds.Instance, chosen accelChoice, bin string, log *slog.Logger) (accelChoice, bool) {
	if r, ok := lastOf(inst, clouds.KindServer, resQEMU); ok {
		if pid, start, err := parseProcID(r.ID); err == nil {
			if err := c.kill(ctx, r.ID, pid, start); err != nil {
				log.Warn("could not kill the stopped guest's QEMU; Terminate will", "err", err)
			}
		}
	}
	why := "-cpu " + chosen.CPU
	if !c.prober.demote(bin, c.cfg.Accel, c.cfg.CPUModel, why, log) {
		return accelChoice{}, false
	}
	log.Warn("KVM stopped the guest; booting it again under TCG", "cpu_model", cpuName(chosen.CPU))
	return accelChoice{Accel: "tcg", Reason: "KVM internal error"}, true
}

func hostKeys(req clouds.LaunchRequest) []string {
	if req.HostKey.PrivatePEM.IsZero() || strings.TrimSpace(req.HostKey.Public) == "" {
		return nil
	}
	return []string{strings.TrimSpace(req.HostKey.Public)}
}

// memory reads a spec's size: "" for the config's memory, or MiB ("2048").
func (c *Cloud) memory(size string) (int, error) {
	if size == "" {
		return c.cfg.Memory, nil
	}
	m, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSuffix(size, "M"), "MiB"))
	if err != nil || m < 64 {
		return 0, clouds.Errorf(clouds.KindInvalid, "launch", "size %q: want memory in MiB, at least 64 (e.g. 2048)", size)
	}
	return m, nil
}

func (c *Cloud) args(build string, accel accelChoice, mem int, overlay, seed string, port int, boot *BootConfig) []string {
	a := []string{
		"-name", procName(build),
		"-nodefaults", "-no-user-config",
		"-machine", "pc", "-accel", accel.Accel,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(c.cfg.CPUs),
		"-display", "none",
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
		"-drive", "file=" + overlay + ",if=virtio,format=qcow2",
		"-drive", "file=" + seed + ",if=virtio,format=raw,readonly=on",
		"-netdev", fmt.Sprintf("user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22", port),
		"-device", "virtio-net-pci,netdev=net0",
	}
	if accel.CPU != "" {
		a = append(a, "-cpu", accel.CPU)
	}
	if boot != nil {
		a = append(a, "-kernel", boot.Kernel)
		if boot.Initrd != "" {
			a = append(a, "-initrd", boot.Initrd)
		}
		if boot.Append != "" {
			a = append(a, "-append", boot.Append)
		}
	}
	return a
}

// start runs QEMU and records it in inst the moment it has a pid.
func (c *Cloud) start(bin string, args []string, req clouds.LaunchRequest, inst *clouds.Instance) (*vm, error) {
	tail := &tailBuffer{max: 16 << 10}
	var console io.Writer = &lineLogger{log: req.Log}
	if req.Console != nil {
		console = req.Console
	}
	out := io.MultiWriter(tail, console)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	// Its own process group: a Ctrl-C in the terminal reaches imagegen, whose
	// cleanup ends QEMU, not QEMU directly mid-snapshot.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, clouds.Errorf(clouds.KindFailed, "start QEMU", "%w", err)
	}
	v := &vm{cmd: cmd, done: make(chan struct{}), tail: tail, log: req.Log}
	start, _, err := procStart(cmd.Process.Pid)
	id := procID(cmd.Process.Pid, start)
	inst.Add(clouds.Resource{Kind: clouds.KindServer, ID: id, Name: resQEMU})
	c.mu.Lock()
	c.vms[id] = v
	c.mu.Unlock()
	go func() {
		v.err = cmd.Wait()
		close(v.done)
		c.mu.Lock()
		delete(c.vms, id)
		c.mu.Unlock()
	}()
	if err != nil {
		return v, fmt.Errorf("start QEMU: read its start time: %w", err)
	}
	return v, nil
}

func (v *vm) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// waitSSH waits for an SSH banner on the forwarded port. QEMU's user network
// accepts connections before the guest listens, so a connection alone proves nothing.
func (c *Cloud) waitSSH(ctx context.Context, v *vm, port int, log *slog.Logger) error {
	bctx, cancel := context.WithTimeout(ctx, c.cfg.BootTimeout)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	poll := clouds.Backoff{Initial: 200 * time.Millisecond, Max: time.Second, Factor: 1.5}
	err := clouds.Poll(bctx, poll, func(ctx context.Context) (bool, error) {
		if v.exited() {
			return false, clouds.Errorf(clouds.KindFailed, "boot", "QEMU exited before SSH came up (%v); its last output:\n%s", v.err, v.tail.String())
		}
		if v.tail.Contains(kvmInternalError) {
			return false, clouds.Errorf(clouds.KindFailed, "boot", "%w: KVM stopped the guest; the console's last output:\n%s", errKVMInternal, v.tail.String())
		}
		return sshBanner(ctx, addr), nil
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("wait for SSH: %w", ctx.Err())
	case bctx.Err() != nil:
		log.Warn("no SSH server in time", "addr", addr, "timeout", c.cfg.BootTimeout)
		return clouds.Errorf(clouds.KindFailed, "wait for SSH", "no SSH server on %s after %s; the console's last output:\n%s", addr, c.cfg.BootTimeout, v.tail.String())
	default:
		return fmt.Errorf("wait for SSH: %w", err)
	}
}

func sshBanner(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Stop waits for QEMU to exit after the guest's poweroff, and kills it when
// it has not within shutdown_timeout.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	r, ok := lastOf(inst, clouds.KindServer, resQEMU)
	if !ok {
		return clouds.Errorf(clouds.KindInvalid, "stop", "instance %q has no QEMU process", inst.ID)
	}
	pid, start, err := parseProcID(r.ID)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ShutdownTimeout)
	defer cancel()
	if err := c.waitExit(wctx, r.ID, pid, start); err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stop: %w", ctx.Err())
	}
	if v := c.vm(r.ID); v != nil {
		// Only a VM this Cloud started has a build log to say it in.
		v.log.Warn("the guest did not power off in time; killing QEMU (the disk may need a fsck)", "instance", inst.ID, "timeout", c.cfg.ShutdownTimeout)
	}
	return c.kill(ctx, r.ID, pid, start)
}

func (c *Cloud) vm(id string) *vm {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vms[id]
}

// waitExit waits until the process is gone (and reaped, when it is ours).
func (c *Cloud) waitExit(ctx context.Context, id string, pid int, start uint64) error {
	if v := c.vm(id); v != nil {
		select {
		case <-v.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for alive(pid, start) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (c *Cloud) kill(ctx context.Context, id string, pid int, start uint64) error {
	if err := killProc(ctx, pid, start, killGrace); err != nil {
		return err
	}
	// Ours: wait for the reaper so no zombie holds the files.
	return c.waitExit(ctx, id, pid, start)
}

func lastOf(inst *clouds.Instance, kind, name string) (clouds.Resource, bool) {
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if r := inst.Resources[i]; r.Kind == kind && r.Name == name {
			return r, true
		}
	}
	return clouds.Resource{}, false
}

// Snapshot converts the stopped instance's overlay into a standalone,
// compressed qcow2 dir/<name>.qcow2, carries the base's boot sidecar over,
// and writes the provenance sidecar dir/<name>.json last: an image is
// listed only once it is complete.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	if !safeName.MatchString(req.Name) {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image name %q must be letters, digits, '.', '_' or '-'", req.Name)
	}
	if r, ok := lastOf(inst, clouds.KindServer, resQEMU); ok {
		if pid, start, err := parseProcID(r.ID); err == nil && alive(pid, start) {
			return clouds.Errorf(clouds.KindInvalid, "snapshot", "QEMU still runs for %q: Stop it first", inst.ID)
		}
	}
	ov, ok := lastOf(inst, clouds.KindFile, resOverlay)
	if !ok {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "instance %q has no overlay", inst.ID)
	}
	out := filepath.Join(c.cfg.Dir, req.Name+".qcow2")
	if _, err := os.Stat(out); err == nil {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image %s exists already", out)
	}
	imgBin, err := exec.LookPath(c.cfg.QEMUImg)
	if err != nil {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "%w", err)
	}
	base, boot, baseErr := c.overlayBase(ctx, imgBin, ov.ID)
	img.ID, img.Name, img.Location, img.Tags = req.Name, req.Name, out, req.Tags

	// Converted inside the work directory, then renamed into dir: a crash
	// mid-convert leaves the partial file where the sweep finds it by build id.
	part := filepath.Join(filepath.Dir(ov.ID), "image.part")
	req.Log.Info("converting the overlay into a standalone image", "image", out)
	if b, err := exec.CommandContext(ctx, imgBin, "convert", "-q", "-c", "-O", "qcow2", ov.ID, part).CombinedOutput(); err != nil {
		_ = os.Remove(part)
		if ctx.Err() != nil {
			return fmt.Errorf("snapshot: %w", ctx.Err())
		}
		return clouds.Errorf(clouds.KindFailed, "snapshot", "qemu-img convert: %w: %s", err, strings.TrimSpace(string(b)))
	}
	// Link, not rename: it never replaces an image that appeared meanwhile.
	err = os.Link(part, out)
	_ = os.Remove(part)
	if errors.Is(err, os.ErrExist) {
		*img = clouds.Image{} // not ours: DeleteImage must not touch it
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image %s exists already", out)
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if baseErr != nil {
		req.Log.Warn("could not find the base disk's boot sidecar", "err", baseErr)
	}
	if boot != nil {
		if err := writeBoot(out, boot); err != nil {
			return fmt.Errorf("snapshot: write boot sidecar: %w", err)
		}
	}
	pv := Provenance{Name: req.Name, Disk: filepath.Base(out), Base: base, Created: time.Now().UTC(), Tags: req.Tags}
	b, err := json.MarshalIndent(pv, "", "  ")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.cfg.Dir, req.Name+".json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("snapshot: write provenance: %w", err)
	}
	req.Log.Info("image saved", "image", out)
	return nil
}

// overlayBase asks qemu-img which base the overlay was made on, and reads that base's boot sidecar.
func (c *Cloud) overlayBase(ctx context.Context, imgBin, overlay string) (string, *BootConfig, error) {
	b, err := exec.CommandContext(ctx, imgBin, "info", "--output=json", "-U", overlay).Output()
	if err != nil {
		return "", nil, fmt.Errorf("qemu-img info: %w", err)
	}
	var info struct {
		Backing string `json:"full-backing-filename"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return "", nil, fmt.Errorf("qemu-img info: %w", err)
	}
	if info.Backing == "" {
		return "", nil, nil
	}
	boot, err := readBoot(info.Backing)
	return info.Backing, boot, err
}

// Terminate kills QEMU and removes the seed, overlay and work directory,
// newest first. Already gone is success.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if err := c.Remove(ctx, inst.Resources[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeleteImage removes an image's disk and sidecars.
func (c *Cloud) DeleteImage(_ context.Context, img *clouds.Image) error {
	loc := img.Location
	if loc == "" {
		if img.ID == "" {
			return nil
		}
		loc = filepath.Join(c.cfg.Dir, img.ID+".qcow2")
	}
	if !within(c.cfg.Dir, loc) {
		return clouds.Errorf(clouds.KindInvalid, "delete image", "%s is not in %s", loc, c.cfg.Dir)
	}
	stem := sidecarStem(loc)
	var errs []error
	// The provenance sidecar first: a half-deleted image is then no longer listed.
	for _, p := range []string{stem + ".json", loc, stem + ".boot.json"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete image: %w", err))
		}
	}
	return errors.Join(errs...)
}

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

// within reports whether path lies strictly inside dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, filepath.Clean(path))
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append([]byte(nil), t.b[over:]...)
	}
	return len(p), nil
}

// Contains reports whether s is in the kept tail.
func (t *tailBuffer) Contains(s string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Contains(string(t.b), s)
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.b), "\r\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// lineLogger writes the console to the build log a line at a time, when the
// build gave no console writer.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.log.Debug("console", "line", strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}
