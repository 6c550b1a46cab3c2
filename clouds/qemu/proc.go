package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A QEMU process is named by "pid:starttime" (starttime from /proc/PID/stat,
// in clock ticks since boot), so a recycled pid is never mistaken for it.

// procStart returns the start time of pid, and whether it is a zombie.
func procStart(pid int) (uint64, bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	// The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, false, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return st, f[0] == "Z" || f[0] == "X", nil
}

func procID(pid int, start uint64) string { return fmt.Sprintf("%d:%d", pid, start) }

func parseProcID(id string) (int, uint64, error) {
	p, s, ok := strings.Cut(id, ":")
	if !ok {
		return 0, 0, fmt.Errorf("process id %q: want pid:starttime", id)
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 1 {
		return 0, 0, fmt.Errorf("process id %q: bad pid", id)
	}
	start, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("process id %q: bad start time", id)
	}
	return pid, start, nil
}

// alive reports whether the process named by pid and start still runs.
func alive(pid int, start uint64) bool {
	st, zombie, err := procStart(pid)
	return err == nil && st == start && !zombie
}

// qemuProc is a QEMU process found in /proc.
type qemuProc struct {
	pid   int
	start uint64
	build string
}

// procName is QEMU's -name for a build's VMs; the sweep finds them by it.
func procName(build string) string { return "imagegen-" + build }

// isOurQEMU reports whether pid's command line carries an imagegen -name and
// this cloud's work directory, so Remove never kills a stranger.
func isOurQEMU(pid int, workDir string) bool {
	name, mentions := qemuArgs(pid, workDir)
	return mentions && strings.HasPrefix(name, "imagegen-")
}

// qemuArgs returns pid's -name value and whether its arguments mention workDir.
func qemuArgs(pid int, workDir string) (name string, mentions bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return "", false
	}
	b, _ = bytes.CutSuffix(b, []byte{0})
	args := strings.Split(string(b), "\x00")
	for i, a := range args {
		if a == "-name" && i+1 < len(args) {
			name = args[i+1]
		}
		if strings.Contains(a, workDir+string(filepath.Separator)) {
			mentions = true
		}
	}
	return name, mentions
}

// findQEMU lists the processes whose command line carries -name imagegen-<build>
// (any build when build is "") and mentions workDir, so two qemu clouds
// with different dirs on one host never sweep each other's VMs.
func findQEMU(build, workDir string) ([]qemuProc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("scan processes: %w", err)
	}
	var out []qemuProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		name, mentions := qemuArgs(pid, workDir)
		got, ok := strings.CutPrefix(name, "imagegen-")
		if !ok || !mentions || (build != "" && got != build) {
			continue
		}
		start, zombie, err := procStart(pid)
		if err != nil || zombie {
			continue
		}
		out = append(out, qemuProc{pid: pid, start: start, build: got})
	}
	return out, nil
}

// killProc ends the process named by pid and start: SIGTERM (QEMU exits at
// once on it), then SIGKILL after grace. It returns when the process is gone.
func killProc(ctx context.Context, pid int, start uint64, grace time.Duration) error {
	if !alive(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	killed := false
	for alive(pid, start) {
		if !killed && time.Now().After(deadline) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill -9 %d: %w", pid, err)
			}
			killed = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for process %d to end: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// killGrace is how long a SIGTERMed QEMU gets before SIGKILL.
const killGrace = 5 * time.Second

// vm is a QEMU process this Cloud started.
type vm struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when QEMU has exited and been reaped
	err  error         // its exit status, once done
	tail *tailBuffer   // the last of its console and stderr, for error messages
	log  *slog.Logger  // the build's log
}

func (v *vm) exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
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
