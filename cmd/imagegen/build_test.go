package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// buildFixture is a config with a type ssh cloud "box" on the test sshd and a
// generator repository whose spec builds on it.
type buildFixture struct {
	sshd   *servicetest.SSHD
	config string
	spec   string
	repo   string
}

func newBuildFixture(t *testing.T, script, password string) *buildFixture {
	t.Helper()
	s := servicetest.StartSSHD(t)
	key := s.WriteClientKey(t)
	dir := t.TempDir()
	host, port, _ := strings.Cut(s.Addr, ":")
	pw := ""
	if password != "" {
		pw = ", password: ask"
	}
	conf := "clouds:\n" +
		"  box: {type: ssh" + pw + ", host: " + host + ", port: " + port + ", private_key_file: " + strconv.Quote(key) + ", host_key: '" + s.HostKey + "'}\n" +
		"  other: {type: ssh, host: 127.0.0.1, private_key_file: " + strconv.Quote(key) + ", host_key: '" + s.HostKey + "'}\n"
	cfgPath := filepath.Join(dir, "imagegen.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "gens")
	if err := os.MkdirAll(filepath.Join(repo, ".imagegen"), 0o755); err != nil {
		t.Fatal(err)
	}
	var sc strings.Builder
	for _, l := range strings.Split(script, "\n") {
		sc.WriteString("  " + l + "\n")
	}
	specText := "name: hello\nscript: |\n" + sc.String() + "clouds:\n  box:\n    ssh_user: " + s.User + "\n"
	specPath := filepath.Join(repo, ".imagegen", "hello.yaml")
	if err := os.WriteFile(specPath, []byte(specText), 0o644); err != nil {
		t.Fatal(err)
	}
	return &buildFixture{sshd: s, config: cfgPath, spec: specPath, repo: repo}
}

func runBuildCmd(t *testing.T, lookup map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
		v, ok := lookup[k]
		return v, ok
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = run(ctx, e, append([]string{"build"}, args...))
	return code, out.String(), errOut.String()
}

func TestBuildCommand(t *testing.T) {
	const password = "s3cret-box-password"
	tests := []struct {
		name       string
		script     string
		password   string            // set: the cloud is password: ask
		env        map[string]string // the environment
		args       func(f *buildFixture) []string
		wantCode   int
		wantStdout []string
		wantStderr []string
		notStderr  []string
	}{
		{
			name:       "script runs, output streamed, table printed",
			script:     "echo hello from the script\necho to stderr >&2\nid -un",
			args:       func(f *buildFixture) []string { return []string{"--config", f.config, "--cloud", "box", f.spec} },
			wantStdout: []string{"CLOUD", "STATE", "IMAGE ID", "IMAGE NAME", "DURATION", "box", "succeeded"},
			wantStderr: []string{"[box] hello from the script", "[box] to stderr", "[box] " + string(builder.PhaseScript), "[box] done"},
		},
		{
			name:       "failing script exits 1 with failed in the table",
			script:     "echo about to fail\nexit 4",
			args:       func(f *buildFixture) []string { return []string{"--config", f.config, "--cloud", "box", f.spec} },
			wantCode:   1,
			wantStdout: []string{"box", "failed"},
			wantStderr: []string{"[box] about to fail", "exited with code 4"},
		},
		{
			name:       "unknown cloud lists the spec's clouds",
			script:     "true",
			args:       func(f *buildFixture) []string { return []string{"--config", f.config, "--cloud", "nowhere", f.spec} },
			wantCode:   1,
			wantStderr: []string{"--cloud nowhere", "its clouds: box"},
		},
		{
			name:       "password: ask without a terminal names the variable",
			script:     "true",
			password:   password,
			args:       func(f *buildFixture) []string { return []string{"--config", f.config, f.spec} },
			wantCode:   1,
			wantStderr: []string{"IMAGEGEN_PASSWORD_BOX"},
		},
		{
			name:       "password from the environment, redacted in output; default clouds are the spec's",
			script:     "echo pw is " + password,
			password:   password,
			env:        map[string]string{"IMAGEGEN_PASSWORD_BOX": password},
			args:       func(f *buildFixture) []string { return []string{"--config", f.config, f.spec} },
			wantStdout: []string{"succeeded"},
			wantStderr: []string{"[box] pw is [redacted]"},
			notStderr:  []string{password},
		},
		{
			name:     "usage error",
			script:   "true",
			args:     func(f *buildFixture) []string { return []string{f.spec} },
			wantCode: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newBuildFixture(t, tt.script, tt.password)
			code, stdout, stderr := runBuildCmd(t, tt.env, tt.args(f)...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range tt.notStderr {
				if strings.Contains(stderr+stdout, w) {
					t.Errorf("output contains %q", w)
				}
			}
		})
	}
}

// TestBuildProvenance checks the build reads commit and origin from git and
// warns about a dirty tree.
func TestBuildProvenance(t *testing.T) {
	servicetest.Need(t, "git (the build's provenance, imagegen:commit, comes from git)", "git")
	f := newBuildFixture(t, "echo built", "")
	gitRun := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", f.repo, "-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q")
	gitRun("remote", "add", "origin", "https://github.com/octo/gens.git")
	gitRun("add", ".")
	gitRun("commit", "-q", "-m", "init")
	head := gitRun("rev-parse", "HEAD")

	code, stdout, stderr := runBuildCmd(t, nil, "--config", f.config, f.spec)
	if code != 0 || strings.Contains(stderr, "uncommitted") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "[box] built") {
		t.Errorf("stderr:\n%s", stderr)
	}

	if err := os.WriteFile(filepath.Join(f.repo, "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, stderr = runBuildCmd(t, nil, "--config", f.config, f.spec)
	if !strings.Contains(stderr, "uncommitted changes") || !strings.Contains(stderr, head) {
		t.Errorf("no dirty-tree warning naming %s:\n%s", head, stderr)
	}
}

// triggerWriter calls fire once when what it has been written contains want.
type triggerWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	fire func()
	done bool
}

func (w *triggerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		w.fire()
	}
	return len(p), nil
}

func (w *triggerWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestBuildInterrupted is Ctrl-C during the script: the build is canceled,
// cleans up, says so, and exits 1 promptly.
func TestBuildInterrupted(t *testing.T) {
	f := newBuildFixture(t, "echo started\nsleep 30.5\necho not reached", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var canceledAt time.Time
	errOut := &triggerWriter{want: "[box] started", fire: func() { canceledAt = time.Now(); cancel() }}
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: errOut, lookup: func(string) (string, bool) { return "", false }}
	code := run(ctx, e, []string{"build", "--config", f.config, f.spec})
	if canceledAt.IsZero() {
		t.Fatalf("the script never started:\n%s", errOut.String())
	}
	if d := time.Since(canceledAt); d > 5*time.Second {
		t.Errorf("took %s to end after the interrupt", d)
	}
	if code != 1 || !strings.Contains(out.String(), "canceled") {
		t.Errorf("exit %d, table:\n%s", code, out.String())
	}
	for _, w := range []string{"interrupted: canceling the build and cleaning up", "[box] cleaning up", "cleanup has run"} {
		if !strings.Contains(errOut.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut.String())
		}
	}
	if strings.Contains(errOut.String(), "not reached") {
		t.Error("the script went on after the interrupt")
	}
}
