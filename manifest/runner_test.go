package manifest

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// execRunner runs the script on this machine with shell -c, as an SSH exec
// request runs it on a VM: the Runner the tests use, and a model for the
// adapter over sshexec.
type execRunner struct {
	shell string   // default /bin/sh
	env   []string // default: this process's
}

func (r execRunner) Run(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error) {
	shell := r.shell
	if shell == "" {
		shell = "/bin/sh"
	}
	c := exec.CommandContext(ctx, shell, "-c", cmd)
	c.Stdout, c.Stderr = stdout, stderr
	c.Env = r.env
	// Its own process group, killed whole: the tools it started too.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 2 * time.Second
	err := c.Run()
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// runnerFunc adapts a function to Runner.
type runnerFunc func(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error)

func (f runnerFunc) Run(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error) {
	return f(ctx, cmd, stdout, stderr)
}

const busybox = "/usr/bin/busybox"

// fakeMachine is a directory of busybox applets and fake package managers:
// a machine with only what the test puts on it. Its shell is dash with that
// directory as its PATH (busybox ash would run its own rpm applet before
// any rpm on the PATH; TestCollectThisMachine runs the script under ash).
type fakeMachine struct {
	t   *testing.T
	bin string
}

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	for _, p := range []string{busybox, "/bin/dash"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed", p)
		}
	}
	bin := t.TempDir()
	for _, app := range []string{"sh", "cat", "uname", "od", "tr", "sha256sum", "id", "awk", "sleep", "yes", "head", "printf"} {
		if err := os.Symlink(busybox, filepath.Join(bin, app)); err != nil {
			t.Fatal(err)
		}
	}
	return &fakeMachine{t: t, bin: bin}
}

// tool installs a fake command: a busybox sh script.
func (f *fakeMachine) tool(name, script string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.bin, name), []byte("#!"+busybox+" sh\n"+script+"\n"), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeMachine) runner() execRunner {
	return execRunner{shell: "/bin/dash", env: []string{"PATH=" + f.bin, "HOME=/nonexistent"}}
}
