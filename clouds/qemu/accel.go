package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// How the accelerator is chosen (docs/qemu.md):
//
// A /dev/kvm that opens proves little inside a cloud VM. Nested KVM may abort
// QEMU while it sets up the vCPU (QEMU 7.2 asserts after "failed to set MSR
// 0x10a", IA32_ARCH_CAPABILITIES, which the outer hypervisor refuses), or run
// the guest ten times slower than TCG, or stop it with "KVM internal error"
// on an instruction the nested KVM cannot emulate. So the probe runs the one
// guest every QEMU carries, its SeaBIOS firmware without a boot disk, to the
// line "No bootable device." (a quarter of a second under TCG), once under TCG
// and then under KVM with each CPU model, and takes KVM only when it gets
// there and no slower than TCG. A KVM guest that still stops with "KVM
// internal error" during a build turns the choice to TCG for the rest of the
// process (demote) and the launch is retried under TCG.

// The CPU models tried under KVM when the config names none: the host's own
// CPU, then the host's without IA32_ARCH_CAPABILITIES.
var kvmCPUModels = []string{"host", "host,-arch-capabilities"}

// Bounds of one probe. An explicit accel: kvm only has to get there within
// probeTimeout; for auto, KVM also has to be no slower than TCG, so its probe
// is cut off at twice TCG's time (at least kvmMinBudget).
const (
	probeTimeout = 10 * time.Second
	kvmMinBudget = 750 * time.Millisecond
)

// biosDone is what SeaBIOS prints on its debug console when it has set up the
// machine and found nothing to boot.
const biosDone = "No bootable device"

// accelChoice is how QEMU will run: an accelerator, a CPU model ("" for
// QEMU's default) and why they were chosen, for the log.
type accelChoice struct {
	Accel  string
	CPU    string
	Reason string
	Err    error // set when no choice works (accel: kvm that cannot start)
}

// kvmDevice is the file whose opening tells whether KVM may work at all.
const kvmDevice = "/dev/kvm"

// accelProber decides the accelerator once per process, QEMU binary and
// config, and caches the decision: every build of every qemu cloud that names
// the same binary, accel and cpu_model shares it.
type accelProber struct {
	mu   sync.Mutex
	done map[accelKey]accelChoice

	kvmDevice string // kvmDevice, or a test's stand-in
}

type accelKey struct{ bin, accel, cpu string }

// prober is the process's one accelProber.
var prober = &accelProber{kvmDevice: kvmDevice}

// choose returns the accelerator and CPU model for a config's accel and
// cpu_model, probing QEMU the first time they are asked for.
//   - tcg: TCG with the configured model, if any; nothing is probed.
//   - kvm: the configured model, or each of kvmCPUModels, until one runs the
//     firmware; none running is an error that names QEMU's own message and
//     the way out.
//   - auto: as kvm, but KVM must also be no slower than TCG; otherwise TCG
//     (with QEMU's default CPU model: a configured one is for KVM).
func (p *accelProber) choose(ctx context.Context, bin, accel, cpu string, log *slog.Logger) accelChoice {
	if accel == "tcg" {
		return accelChoice{Accel: "tcg", CPU: cpu, Reason: "the config says accel: tcg"}
	}
	key := accelKey{bin, accel, cpu}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.done[key]; ok {
		return c
	}
	c := p.probe(ctx, bin, accel, cpu)
	if ctx.Err() != nil {
		// Canceled mid-probe: decide nothing, the next build probes again.
		if c.Err == nil {
			c.Err = fmt.Errorf("probe QEMU's accelerator: %w", ctx.Err())
		}
		return c
	}
	p.remember(key, c, log)
	return c
}

func (p *accelProber) remember(key accelKey, c accelChoice, log *slog.Logger) {
	if p.done == nil {
		p.done = map[accelKey]accelChoice{}
	}
	p.done[key] = c
	if c.Err != nil {
		log.Error("QEMU cannot run with the configured accelerator", "accel", key.accel, "cpu_model", cpuName(key.cpu), "err", c.Err)
		return
	}
	log.Info("QEMU accelerator chosen", "accel", c.Accel, "cpu_model", cpuName(c.CPU), "reason", c.Reason)
}

// demote is called when a guest under the chosen KVM stopped with a KVM
// internal error: for accel: auto the choice becomes TCG for the rest of the
// process, and demote says so and returns true. An explicit accel: kvm stays
// (the build fails with the error and the way out) and demote returns false.
func (p *accelProber) demote(bin, accel, cpu, why string, log *slog.Logger) bool {
	if accel != "auto" {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remember(accelKey{bin, accel, cpu}, accelChoice{Accel: "tcg",
		Reason: "a guest under KVM stopped with a KVM internal error (" + why + "); TCG from now on"}, log)
	return true
}

func cpuName(cpu string) string {
	if cpu == "" {
		return "QEMU's default"
	}
	return cpu
}

func (p *accelProber) probe(ctx context.Context, bin, accel, cpu string) accelChoice {
	f, err := os.OpenFile(p.kvmDevice, os.O_RDWR, 0)
	if err != nil {
		if accel == "kvm" {
			return accelChoice{Err: &clouds.Error{Kind: clouds.KindInvalid, Op: "start QEMU",
				Err:  fmt.Errorf("accel: kvm, but %s does not open: %w", p.kvmDevice, err),
				Hint: "give the worker /dev/kvm (group kvm), or set the cloud's accel: tcg (slower, works anywhere)"}}
		}
		return accelChoice{Accel: "tcg", Reason: fmt.Sprintf("%s does not open (%v)", p.kvmDevice, err)}
	}
	f.Close()

	// TCG's time is the bar KVM must clear under auto.
	budget := probeTimeout
	var tcgTime time.Duration
	if accel == "auto" {
		tcgTime, err = runFirmware(ctx, bin, "tcg", "", probeTimeout)
		if err != nil {
			// QEMU itself does not run: TCG, and the launch says why.
			return accelChoice{Accel: "tcg", Reason: fmt.Sprintf("QEMU does not run its firmware under TCG either (%v)", err)}
		}
		budget = max(2*tcgTime, kvmMinBudget)
	}

	models := kvmCPUModels
	if cpu != "" {
		models = []string{cpu}
	}
	var failures []string
	for _, m := range models {
		took, err := runFirmware(ctx, bin, "kvm", m, budget)
		if ctx.Err() != nil {
			return accelChoice{Err: fmt.Errorf("probe QEMU's accelerator: %w", ctx.Err())}
		}
		if err != nil {
			failures = append(failures, fmt.Sprintf("-accel kvm -cpu %s: %v", m, err))
			continue
		}
		if accel == "auto" && took > tcgTime*3/2 {
			failures = append(failures, fmt.Sprintf("-accel kvm -cpu %s: the firmware took %s, TCG %s (nested KVM without hardware help?)",
				m, took.Round(time.Millisecond), tcgTime.Round(time.Millisecond)))
			continue
		}
		reason := fmt.Sprintf("/dev/kvm opens and QEMU runs its firmware under KVM with -cpu %s in %s", m, took.Round(time.Millisecond))
		if accel == "auto" {
			reason += fmt.Sprintf(" (TCG: %s)", tcgTime.Round(time.Millisecond))
		}
		if len(failures) > 0 {
			reason += "; " + strings.Join(failures, "; ")
		}
		return accelChoice{Accel: "kvm", CPU: m, Reason: reason}
	}
	if accel == "kvm" {
		return accelChoice{Err: &clouds.Error{Kind: clouds.KindInvalid, Op: "start QEMU",
			Err:  fmt.Errorf("accel: kvm, but QEMU cannot run a guest under KVM: %s", strings.Join(failures, "; ")),
			Hint: "set the cloud's accel: tcg (slower, works anywhere), or a cpu_model: this host's KVM accepts (e.g. host,-arch-capabilities)"}}
	}
	return accelChoice{Accel: "tcg", Reason: "/dev/kvm opens but KVM is no use here: " + strings.Join(failures, "; ")}
}

// runFirmware starts QEMU with no disk and its SeaBIOS debug console on
// stdout, waits until the firmware says it found nothing to boot, kills QEMU
// and returns how long that took. No guest OS is involved: under TCG it takes
// about a quarter of a second. QEMU that exits first (an aborted vCPU setup),
// or a firmware not done within budget, is an error carrying QEMU's own words.
func runFirmware(ctx context.Context, bin, accel, cpu string, budget time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	args := []string{"-nodefaults", "-no-user-config", "-machine", "pc", "-accel", accel,
		"-m", "16", "-display", "none", "-no-reboot",
		"-chardev", "stdio,id=bios", "-device", "isa-debugcon,iobase=0x402,chardev=bios"}
	if cpu != "" {
		args = append(args, "-cpu", cpu)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr := &tailBuffer{max: 4 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	found := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if bytes.Contains(sc.Bytes(), []byte(biosDone)) {
				found <- time.Since(start)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(found)
	}()
	var took time.Duration
	select {
	case d, ok := <-found:
		took = d
		if !ok {
			err = errors.New("QEMU exited")
		}
	case <-ctx.Done():
		err = fmt.Errorf("the firmware was not done after %s", budget.Round(time.Millisecond))
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	waitErr := cmd.Wait()
	if err == nil {
		return took, nil
	}
	if waitErr != nil && !strings.Contains(err.Error(), "not done") {
		err = fmt.Errorf("%w (%w)", err, waitErr)
	}
	if msg := oneLine(stderr.String()); msg != "" {
		err = fmt.Errorf("%w: %s", err, msg)
	}
	return 0, err
}

// oneLine joins QEMU's stderr lines, dropping warnings about CPU features.
func oneLine(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "terminating on signal") {
			continue
		}
		lines = append(lines, l)
	}
	s := strings.Join(lines, " | ")
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}

// kvmInternalError is what QEMU prints when KVM stops a guest it cannot run
// (it then pauses the guest, which never comes up).
const kvmInternalError = "KVM internal error"
