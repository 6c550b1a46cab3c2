package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

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
	if req.HostKey.PrivatePEM.IsZero() || strings.TrimSpace(req.HostKey.Public) == "" {
		// The seed's key is the only one imagegen could pin: the policy is
		// always host_key: require.
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: fmt.Errorf("%w: the build brought no host key to put in the guest's seed", clouds.ErrNoHostKey)}
	}
	p, err := c.prepare(ctx, req)
	if err != nil {
		return err
	}
	if err := c.makeDisks(ctx, req, &p, inst); err != nil {
		return err
	}
	port, err := c.boot(ctx, req, p, inst)
	if err != nil {
		return err
	}
	inst.SSH = &clouds.Endpoint{
		Addr:          net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		HostKeys:      []string{strings.TrimSpace(req.HostKey.Public)},
		HostKeySource: clouds.SourceInjected,
		HostKeyPolicy: clouds.HostKeyRequire,
	}
	req.Log.Info("guest is up", "ssh", inst.SSH.Addr)
	return nil
}

// launchPlan is what Launch found before it made anything, and the disks it made.
type launchPlan struct {
	base    string      // the base disk
	format  string      // its format, for the overlay
	boot    *BootConfig // its boot sidecar; nil: the disk boots itself
	mem     int         // MiB
	qemuBin string
	imgBin  string
	accel   accelChoice
	overlay string // set by makeDisks
	seed    string // set by makeDisks
}

// prepare checks what Launch needs before anything is made: the base disk,
// the size, the QEMU binaries and the accelerator.
func (c *Cloud) prepare(ctx context.Context, req clouds.LaunchRequest) (launchPlan, error) {
	var p launchPlan
	var err error
	if p.base, p.boot, err = resolveImage(c.cfg.Dir, req.Image); err != nil {
		return p, err
	}
	if p.format, err = diskFormat(p.base); err != nil {
		return p, fmt.Errorf("launch: read base disk: %w", err)
	}
	if p.mem, err = c.memory(req.Size); err != nil {
		return p, err
	}
	if p.qemuBin, err = exec.LookPath(c.cfg.QEMU); err != nil {
		return p, &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err, Hint: "install qemu-system-x86 (Debian) or set the cloud's qemu key"}
	}
	if p.imgBin, err = exec.LookPath(c.cfg.QEMUImg); err != nil {
		return p, &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err, Hint: "install qemu-utils (Debian) or set the cloud's qemu_img key"}
	}
	// Before anything is made: an accel: kvm that cannot start fails here.
	p.accel = c.prober.choose(ctx, p.qemuBin, c.cfg.Accel, c.cfg.CPUModel, req.Log)
	if p.accel.Err != nil {
		return p, p.accel.Err
	}
	return p, nil
}

// makeDisks makes the work directory, the overlay on the base disk and the
// seed, recording each in inst once it exists.
func (c *Cloud) makeDisks(ctx context.Context, req clouds.LaunchRequest, p *launchPlan, inst *clouds.Instance) error {
	work := filepath.Join(c.workRoot(), req.Build, req.Name)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	inst.ID = req.Build + "/" + req.Name
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: work, Name: resWorkDir})

	p.overlay = filepath.Join(work, overlayFile)
	if err := newOverlay(ctx, p.imgBin, p.base, p.format, p.overlay); err != nil {
		return err
	}
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: p.overlay, Name: resOverlay})

	p.seed = filepath.Join(work, seedFile)
	ud, md, err := seedFiles(req, "imagegen-"+req.Build+"-"+req.Name)
	if err != nil {
		return err
	}
	iso, err := buildISO(SeedLabel, []isoFile{{Name: "user-data", Data: ud}, {Name: "meta-data", Data: md}}, time.Now())
	if err != nil {
		return fmt.Errorf("launch: build seed: %w", err)
	}
	// 0600: the seed holds the build's private host key.
	if err := os.WriteFile(p.seed, iso, 0o600); err != nil {
		return fmt.Errorf("launch: write seed: %w", err)
	}
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: p.seed, Name: resSeed})
	return nil
}

// boot starts QEMU on the disks and waits for the guest's SSH banner on the
// forwarded port, which it returns. Two failures boot again, twice at most:
// a port taken between picking it and QEMU binding it, and a guest KVM
// stopped (under TCG, for accel: auto).
func (c *Cloud) boot(ctx context.Context, req clouds.LaunchRequest, p launchPlan, inst *clouds.Instance) (int, error) {
	accel := p.accel
	for try := 0; ; try++ {
		port, err := freePort()
		if err != nil {
			return 0, fmt.Errorf("launch: %w", err)
		}
		args := c.args(req.Build, accel, p.mem, p.overlay, p.seed, port, p.boot)
		req.Log.Info("starting QEMU", "accel", accel.Accel, "cpu_model", cpuName(accel.CPU), "memory_mib", p.mem, "cpus", c.cfg.CPUs, "base", p.base, "ssh", fmt.Sprintf("127.0.0.1:%d", port))
		v, err := c.start(p.qemuBin, args, req, inst)
		if err != nil {
			return 0, err
		}
		err = c.waitSSH(ctx, v, port, req.Log)
		if err == nil {
			return port, nil
		}
		if try < 2 && v.exited() && strings.Contains(v.tail.String(), "host forwarding") {
			req.Log.Warn("QEMU could not bind the SSH port; trying another", "port", port)
			continue
		}
		if try < 2 && errors.Is(err, errKVMInternal) {
			if tcg, ok := c.fallBackToTCG(ctx, inst, accel, p.qemuBin, req.Log); ok {
				// A fresh overlay: the stopped guest may have written to the old one.
				if err := newOverlay(ctx, p.imgBin, p.base, p.format, p.overlay); err != nil {
					return 0, err
				}
				accel = tcg
				continue
			}
			return 0, &clouds.Error{Kind: clouds.KindInvalid, Op: "boot", Err: err,
				Hint: "set the cloud's accel: tcg (slower, works anywhere), or a cpu_model: this host's KVM can run"}
		}
		return 0, err
	}
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
