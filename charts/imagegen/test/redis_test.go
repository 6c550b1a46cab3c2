package charttest

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestBundledRedisRuns runs the bundled Redis container's rendered command with
// the local redis-server: the password is required, AOF is on, eviction is off,
// redis-server is the container's process, and the rendered probes tell up from
// down. (The password goes in on stdin; /proc cannot show that it stays off the
// command line, since redis-server rewrites its process title.)
func TestBundledRedisRuns(t *testing.T) {
	for _, b := range []string{"redis-server", "redis-cli", "sh"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install redis-server; scripts/install-deps.sh test does)", b)
		}
	}
	for _, tc := range []struct {
		name string
		set  []string
		auth bool
	}{
		{"with a password", nil, true},
		{"without", []string{"redis.bundled.auth.enabled=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmTemplate(t, nil, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			ct := find(t, decode(t, out).statefulSets, "-redis").Spec.Template.Spec.Containers[0]
			if strings.Join(ct.Command, " ") != "sh -c" || len(ct.Args) != 1 {
				t.Fatalf("the redis container runs %q %q, want sh -c SCRIPT", ct.Command, ct.Args)
			}
			port := freePort(t)
			dir := t.TempDir()
			// Where the pod has its own network and volume, the test has a free
			// port on 127.0.0.1 and a temporary directory.
			script := rewrite(t, ct.Args[0], map[string]string{
				"--port 6379": "--port " + port + " --bind 127.0.0.1",
				"--dir /data": "--dir " + dir,
			})
			const password = "chart-test-password-4c1d"
			cmd := exec.Command("sh", "-c", script)
			cmd.Env = append(os.Environ(), "REDIS_PASSWORD="+password)
			cmd.Dir = dir
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				_ = cmd.Wait()
			})

			cli := func(auth bool, args ...string) string {
				c := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", port}, args...)...)
				c.Env = cliEnv("")
				if auth && tc.auth {
					c.Env = cliEnv(password)
				}
				b, _ := c.CombinedOutput()
				return strings.TrimSpace(string(b))
			}
			deadline := time.Now().Add(10 * time.Second)
			for cli(true, "ping") != "PONG" {
				if time.Now().After(deadline) {
					t.Fatalf("redis did not answer PING within 10s: %q", cli(true, "ping"))
				}
				time.Sleep(50 * time.Millisecond)
			}

			if got := cli(false, "ping"); tc.auth == (got == "PONG") {
				t.Errorf("PING without the password: %q (password required: %v)", got, tc.auth)
			}
			for key, want := range map[string]string{"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction", "dir": dir} {
				if got := cli(true, "config", "get", key); !strings.HasSuffix(got, "\n"+want) {
					t.Errorf("config get %s: %q, want %s", key, got, want)
				}
			}
			// exec: the shell is gone and redis-server is the process (PID 1 in
			// the pod), so it gets Kubernetes' SIGTERM and writes its AOF on the way out.
			comm, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(comm)); got != "redis-server" {
				t.Errorf("the container's process is %q, want redis-server (exec'd by the shell)", got)
			}

			// The rendered probes, pointed at the test's port.
			for _, p := range []*corev1.Probe{ct.LivenessProbe, ct.ReadinessProbe} {
				if p == nil || p.Exec == nil || len(p.Exec.Command) != 3 {
					t.Fatalf("probe %+v: want an exec sh -c probe", p)
				}
				probe := rewrite(t, p.Exec.Command[2], map[string]string{"-h 127.0.0.1": "-h 127.0.0.1 -p " + port})
				for _, auth := range []bool{true, false} {
					c := exec.Command(p.Exec.Command[0], p.Exec.Command[1], probe)
					c.Env = cliEnv("wrong-password")
					if auth {
						c.Env = cliEnv(password)
					}
					err := c.Run()
					if wantOK := auth || !tc.auth; (err == nil) != wantOK {
						t.Errorf("probe %q with the right password %v: err %v, want success %v", probe, auth, err, wantOK)
					}
				}
			}
		})
	}
}

// cliEnv is the environment with REDISCLI_AUTH (redis-cli's password) set to
// password, or unset when it is empty: redis-cli sends AUTH even for an empty one.
func cliEnv(password string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REDISCLI_AUTH=") {
			env = append(env, kv)
		}
	}
	if password != "" {
		env = append(env, "REDISCLI_AUTH="+password)
	}
	return env
}

// rewrite replaces each old with new in s, failing when one is missing, so a
// template change cannot make the test run something else silently.
func rewrite(t *testing.T, s string, repl map[string]string) string {
	t.Helper()
	for old, new := range repl {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is not in the rendered command %q", old, s)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	return s
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
