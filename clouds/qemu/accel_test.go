package qemu

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// Stand-ins for qemu-system-x86_64, as shell scripts: each records its
// arguments and runs "the firmware" (prints SeaBIOS's last line on stdout, as
// the probe's debug console, and waits to be killed) as the real QEMU would
// on one kind of host.
const (
	firmware = `echo 'SeaBIOS (version 1.16.2)'; echo 'No bootable device.'; exec sleep 60`
	// QEMU on a host whose KVM runs every CPU model, faster than TCG.
	qemuWorks = `echo "$@" >> "$0.calls"
case " $* " in *" -accel tcg "*) sleep 0.2 ;; esac
` + firmware
	// QEMU in a nested VM whose outer hypervisor refuses IA32_ARCH_CAPABILITIES:
	// -cpu host (and max) abort in vCPU setup, as Debian's QEMU 7.2 does.
	qemuAbortsHost = `echo "$@" >> "$0.calls"
case " $* " in
*" -accel kvm "*" -cpu host "*|*" -accel kvm "*" -cpu max "*)
  echo 'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69' >&2
  echo "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion \` + "`" + `ret == cpu->kvm_msr_buf->nmsrs' failed." >&2
  kill -ABRT $$ ;;
*" -accel tcg "*) sleep 0.2 ;;
esac
` + firmware
	// QEMU whose KVM refuses every CPU model.
	qemuKVMBroken = `echo "$@" >> "$0.calls"
case " $* " in
*" -accel kvm "*) echo 'qemu-system-x86_64: failed to initialize kvm: Permission denied' >&2; exit 1 ;;
esac
` + firmware
	// Nested KVM without hardware help: every model runs, far slower than TCG.
	qemuKVMSlow = `echo "$@" >> "$0.calls"
case " $* " in *" -accel kvm "*) sleep 1.5 ;; esac
` + firmware
	// KVM runs the firmware, but a little slower than TCG: no gain.
	qemuKVMNoFaster = `echo "$@" >> "$0.calls"
case " $* " in *" -accel kvm "*) sleep 0.5 ;; *" -accel tcg "*) sleep 0.2 ;; esac
` + firmware
)

// fakeQEMU writes script as an executable and returns its path; calls reads
// the argument lines it was started with.
func fakeQEMU(t *testing.T, script string) (bin string, calls func() []string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, func() []string {
		b, err := os.ReadFile(bin + ".calls")
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}

// kvmDev returns a file that opens read-write, standing in for a usable
// /dev/kvm, or a path that does not exist.
func kvmDev(t *testing.T, present bool) string {
	p := filepath.Join(t.TempDir(), "kvm")
	if present {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestAccelChoice(t *testing.T) {
	tests := []struct {
		name      string
		kvm       bool   // /dev/kvm opens
		qemu      string // the stand-in
		accel     string // config
		cpu       string // config's cpu_model
		want      accelChoice
		wantErr   []string // substrings of the error, for a choice that fails
		wantCalls int      // probes started
	}{
		{name: "no /dev/kvm, auto", kvm: false, qemu: qemuWorks, accel: "auto",
			want: accelChoice{Accel: "tcg"}, wantCalls: 0},
		{name: "working KVM, auto", kvm: true, qemu: qemuWorks, accel: "auto",
			want: accelChoice{Accel: "kvm", CPU: "host"}, wantCalls: 2},
		{name: "KVM aborts -cpu host, auto", kvm: true, qemu: qemuAbortsHost, accel: "auto",
			want: accelChoice{Accel: "kvm", CPU: "host,-arch-capabilities"}, wantCalls: 3},
		{name: "KVM refuses every model, auto", kvm: true, qemu: qemuKVMBroken, accel: "auto",
			want: accelChoice{Accel: "tcg"}, wantCalls: 3},
		{name: "nested KVM far slower than TCG, auto", kvm: true, qemu: qemuKVMSlow, accel: "auto",
			want: accelChoice{Accel: "tcg"}, wantCalls: 3},
		{name: "KVM no faster than TCG, auto", kvm: true, qemu: qemuKVMNoFaster, accel: "auto",
			want: accelChoice{Accel: "tcg"}, wantCalls: 3},
		{name: "slow KVM is still KVM when the config says kvm", kvm: true, qemu: qemuKVMSlow, accel: "kvm",
			want: accelChoice{Accel: "kvm", CPU: "host"}, wantCalls: 1},
		{name: "tcg is never probed", kvm: true, qemu: qemuAbortsHost, accel: "tcg",
			want: accelChoice{Accel: "tcg"}, wantCalls: 0},
		{name: "tcg with a cpu_model", kvm: true, qemu: qemuWorks, accel: "tcg", cpu: "max",
			want: accelChoice{Accel: "tcg", CPU: "max"}, wantCalls: 0},
		{name: "working KVM, kvm", kvm: true, qemu: qemuWorks, accel: "kvm",
			want: accelChoice{Accel: "kvm", CPU: "host"}, wantCalls: 1},
		{name: "KVM aborts -cpu host, kvm", kvm: true, qemu: qemuAbortsHost, accel: "kvm",
			want: accelChoice{Accel: "kvm", CPU: "host,-arch-capabilities"}, wantCalls: 2},
		{name: "KVM aborts the configured cpu_model, kvm", kvm: true, qemu: qemuAbortsHost, accel: "kvm", cpu: "host",
			wantErr:   []string{"failed to set MSR 0x10a", "accel: tcg", "cpu_model"},
			wantCalls: 1},
		{name: "KVM aborts the configured cpu_model, auto falls back to TCG", kvm: true, qemu: qemuAbortsHost, accel: "auto", cpu: "host",
			want: accelChoice{Accel: "tcg"}, wantCalls: 2},
		{name: "a cpu_model KVM takes", kvm: true, qemu: qemuAbortsHost, accel: "kvm", cpu: "host,-arch-capabilities,-pdpe1gb",
			want: accelChoice{Accel: "kvm", CPU: "host,-arch-capabilities,-pdpe1gb"}, wantCalls: 1},
		{name: "KVM refuses every model, kvm", kvm: true, qemu: qemuKVMBroken, accel: "kvm",
			wantErr:   []string{"Permission denied", "accel: tcg", "cpu_model"},
			wantCalls: 2},
		{name: "no /dev/kvm, kvm", kvm: false, qemu: qemuWorks, accel: "kvm",
			wantErr:   []string{"does not open", "accel: tcg"},
			wantCalls: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin, calls := fakeQEMU(t, tt.qemu)
			p := &accelProber{kvmDevice: kvmDev(t, tt.kvm)}
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, nil))
			got := p.choose(context.Background(), bin, tt.accel, tt.cpu, log)
			if len(tt.wantErr) > 0 {
				if got.Err == nil {
					t.Fatalf("choose = %+v; want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(got.Err.Error(), w) {
						t.Errorf("error %q does not say %q", got.Err, w)
					}
				}
				if strings.Contains(got.Err.Error(), "Assertion") && !strings.Contains(got.Err.Error(), "accel: tcg") {
					t.Errorf("error is QEMU's assertion alone: %q", got.Err)
				}
			} else {
				if got.Err != nil {
					t.Fatalf("choose: %v", got.Err)
				}
				if got.Accel != tt.want.Accel || got.CPU != tt.want.CPU {
					t.Errorf("choose = %s -cpu %q; want %s -cpu %q", got.Accel, got.CPU, tt.want.Accel, tt.want.CPU)
				}
				if got.Reason == "" {
					t.Error("no reason given")
				}
			}
			if n := len(calls()); n != tt.wantCalls {
				t.Errorf("QEMU was started %d times: %q; want %d", n, calls(), tt.wantCalls)
			}
			if tt.accel != "tcg" && tt.wantErr == nil {
				if !strings.Contains(logged.String(), "QEMU accelerator chosen") || !strings.Contains(logged.String(), "accel="+tt.want.Accel) {
					t.Errorf("log does not say which accelerator was chosen:\n%s", logged.String())
				}
			}
			if tt.qemu == qemuAbortsHost && tt.want.Accel == "kvm" && tt.cpu == "" &&
				!strings.Contains(logged.String(), "failed to set MSR 0x10a") {
				t.Errorf("log does not carry QEMU's error for the refused model:\n%s", logged.String())
			}

			// Decided once: asking again starts nothing.
			before := len(calls())
			again := p.choose(context.Background(), bin, tt.accel, tt.cpu, log)
			if again.Accel != got.Accel || again.CPU != got.CPU || (again.Err == nil) != (got.Err == nil) {
				t.Errorf("second choose = %+v; first was %+v", again, got)
			}
			if n := len(calls()); n != before {
				t.Errorf("second choose started QEMU %d more times", n-before)
			}
		})
	}
}

// TestLaunchKVMThatCannotStart: an explicit accel: kvm on a host whose KVM
// aborts QEMU fails the launch at once, says what to do, and creates nothing.
func TestLaunchKVMThatCannotStart(t *testing.T) {
	bin, calls := fakeQEMU(t, qemuAbortsHost)
	img, _ := fakeQEMU(t, "exit 0") // qemu-img, never reached
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newTestCloud(t, "{type: qemu, dir: "+dir+", accel: kvm, cpu_model: host, qemu: "+bin+", qemu_img: "+img+"}")
	c.prober = &accelProber{kvmDevice: kvmDev(t, true)}
	var inst clouds.Instance
	err := c.Launch(context.Background(), clouds.LaunchRequest{Build: "b1", Name: "gen", Image: "base", HostKey: newKeys(t).hostKey, Log: testLog(t)}, &inst)
	if err == nil {
		t.Fatal("Launch succeeded on a KVM that aborts")
	}
	for _, w := range []string{"failed to set MSR 0x10a", "accel: tcg", "cpu_model"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Launch error %q does not say %q", err, w)
		}
	}
	if clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("kind = %s; want invalid (no retry can fix it)", clouds.KindOf(err))
	}
	if len(inst.Resources) != 0 {
		t.Errorf("a refused Launch recorded %+v", inst.Resources)
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); !os.IsNotExist(err) {
		t.Errorf("work dir made before the accelerator was known: %v", err)
	}
	if n := len(calls()); n != 1 {
		t.Errorf("QEMU started %d times; want the one probe", n)
	}
}

// TestProbeRealQEMU runs the probe against the installed QEMU: its firmware
// runs under TCG everywhere, and an aborting QEMU in front of the real one
// (the nested-VM host, on any machine) never leaves -cpu host chosen. On this
// host's own KVM the choice is logged, whichever it is.
func TestProbeRealQEMU(t *testing.T) {
	needQEMU(t)
	real, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	took, err := runFirmware(context.Background(), real, "tcg", "", probeTimeout)
	if err != nil {
		t.Fatalf("the firmware under TCG: %v", err)
	}
	t.Logf("SeaBIOS under TCG: %s", took)
	if _, err := runFirmware(context.Background(), real, "tcg", "no-such-cpu", probeTimeout); err == nil || !strings.Contains(err.Error(), "no-such-cpu") {
		t.Errorf("a CPU model QEMU does not know = %v; want QEMU's complaint", err)
	}

	// The aborting wrapper execs the real QEMU for everything but -cpu host.
	wrapper, calls := fakeQEMU(t, strings.Replace(qemuAbortsHost, firmware, `exec `+real+` "$@"`, 1))
	p := &accelProber{kvmDevice: kvmDevice}
	got := p.choose(context.Background(), wrapper, "auto", "", testLog(t))
	if got.Err != nil {
		t.Fatalf("auto behind an aborting KVM: %v", got.Err)
	}
	if got.CPU == "host" {
		t.Errorf("chose -cpu host, which the wrapper aborts")
	}
	if got.Accel == "kvm" && got.CPU != "host,-arch-capabilities" {
		t.Errorf("chose KVM with -cpu %q", got.CPU)
	}
	if _, err := runFirmware(context.Background(), real, got.Accel, got.CPU, probeTimeout); err != nil {
		t.Errorf("the chosen %s -cpu %q does not run the real QEMU: %v", got.Accel, got.CPU, err)
	}
	t.Logf("behind the aborting wrapper: %s -cpu %q after %d runs: %s", got.Accel, cpuName(got.CPU), len(calls()), got.Reason)
	host := prober.choose(context.Background(), real, "auto", "", testLog(t))
	t.Logf("on this host, accel: auto chooses %s -cpu %q: %s", host.Accel, cpuName(host.CPU), host.Reason)
}

// TestKVMInternalErrorFallsBackToTCG: a guest that KVM stops during boot (as
// nested KVM does on an instruction it cannot emulate; QEMU then pauses the
// guest) is killed and booted again under TCG, and the process's choice turns
// to TCG. The wrapper plays the stopped KVM guest and runs the real QEMU for TCG.
func TestKVMInternalErrorFallsBackToTCG(t *testing.T) {
	base := testImage(t)
	real, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	wrapper, calls := fakeQEMU(t, `echo "$@" >> "$0.calls"
case " $* " in
*" -accel kvm "*) echo 'KVM internal error. Suberror: 1'; echo 'emulation failure'; exec sleep 600 ;;
esac
exec `+real+` "$@"`)
	dir := t.TempDir()
	c := newTestCloud(t, "{type: qemu, dir: "+dir+", memory: 256, boot_timeout: 2m, shutdown_timeout: 1s, qemu: "+wrapper+"}")
	c.prober = &accelProber{kvmDevice: kvmDev(t, true), done: map[accelKey]accelChoice{
		{wrapper, "auto", ""}: {Accel: "kvm", CPU: "host,-arch-capabilities", Reason: "the test says so"},
	}}
	k := newKeys(t)
	var logged servicetest.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var inst clouds.Instance
	defer func() {
		if err := c.Terminate(context.Background(), &inst); err != nil {
			t.Errorf("Terminate: %v", err)
		}
		assertClean(t, c, "kvmerr")
	}()
	err = c.Launch(ctx, clouds.LaunchRequest{Build: "kvmerr", Name: "gen", Image: base, User: "root",
		AuthorizedKey: k.authorized, HostKey: k.hostKey, Log: log}, &inst)
	if err != nil {
		t.Fatalf("Launch: %v\nlog:\n%s", err, logged.String())
	}
	if !strings.Contains(logged.String(), "booting it again under TCG") || !strings.Contains(logged.String(), "QEMU accelerator chosen") {
		t.Errorf("the log does not say the guest went to TCG:\n%s", logged.String())
	}
	var accels []string
	for _, l := range calls() {
		f := strings.Fields(l)
		for i := range f {
			if f[i] == "-accel" && i+1 < len(f) {
				accels = append(accels, f[i+1])
			}
		}
	}
	if strings.Join(accels, ",") != "kvm,tcg" {
		t.Errorf("QEMU started with accelerators %v; want kvm, then tcg", accels)
	}
	if got := c.prober.choose(ctx, wrapper, "auto", "", log); got.Accel != "tcg" {
		t.Errorf("after the KVM internal error the choice is %+v; want tcg", got)
	}
	cl := dialGuest(t, inst.SSH, "root", k)
	defer cl.Close()
	if out, err := run(t, cl, "echo up"); err != nil || strings.TrimSpace(out) != "up" {
		t.Errorf("the guest under TCG: %q, %v", out, err)
	}
	poweroff(t, cl)
	if err := c.Stop(ctx, &inst); err != nil {
		t.Errorf("Stop: %v", err)
	}
}
