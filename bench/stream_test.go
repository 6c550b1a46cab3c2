package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/fake"
	"github.com/imagegen/imagegen/internal/testenv"
	"github.com/imagegen/imagegen/queue"
)

// childEnv makes the test binary run one streaming build instead of the
// tests, so its peak RSS is the build's alone.
const childEnv = "IMAGEGEN_BENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "stream" {
		os.Exit(streamChild())
	}
	os.Exit(m.Run())
}

// Log streaming sizes: the full run through the builder, and the shorter one
// into Redis (one command per line: a full GiB would take minutes).
const (
	streamBytes      = 1 << 30
	streamRedisBytes = 16 << 20
	lineLen          = 100 // bytes per line, newline included
	streamLogLimit   = 4 << 20
)

// streamScript prints n bytes in lineLen-byte lines, at the speed of yes(1).
func streamScript(n int64) string {
	return fmt.Sprintf("yes '%s' | head -c %d\n", strings.Repeat("x", lineLen-1), n)
}

// streamOut is what the child reports on stdout.
type streamOut struct {
	Bytes   int64   `json:"bytes"`
	Lines   int64   `json:"lines"`
	Seconds float64 `json:"seconds"` // the "running script" phase
	HWM     int64   `json:"hwm"`     // VmHWM, bytes
	State   string  `json:"state"`
	Error   string  `json:"error,omitempty"`
}

// countingObserver is the build log: it counts what arrives and keeps the
// tail (bounded like build.log_limit), or, with a store, appends every line
// to Redis as the worker's observer does.
type countingObserver struct {
	store *queue.Store

	mu     sync.Mutex
	bytes  int64
	lines  int64
	tail   ring
	phases map[builder.Phase]time.Time
	err    error
}

func (o *countingObserver) Phase(_ string, p builder.Phase, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.phases[p]; !ok {
		o.phases[p] = at
	}
}

func (o *countingObserver) Line(l builder.LogLine) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.Stream != builder.StreamStdout {
		return
	}
	o.bytes += int64(len(l.Text)) + 1
	o.lines++
	if o.store != nil {
		if err := o.store.AppendLog(context.Background(), "bench-stream", "sim", l); err != nil && o.err == nil {
			o.err = err
		}
		return
	}
	o.tail.push(l.Text, streamLogLimit)
}

// ring keeps the newest lines within a byte budget, without copying them
// around on every line (a sliced-off slice front would, on each regrowth).
type ring struct {
	buf     []string
	head, n int
	size    int
}

func (r *ring) push(s string, limit int) {
	if r.n == len(r.buf) {
		nb := make([]string, max(64, 2*len(r.buf)))
		for i := range r.n {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = s
	r.n++
	r.size += len(s)
	for r.size > limit && r.n > 0 {
		r.size -= len(r.buf[r.head])
		r.buf[r.head] = ""
		r.head = (r.head + 1) % len(r.buf)
		r.n--
	}
}

// streamChild runs one build whose script prints IMAGEGEN_BENCH_BYTES bytes
// on the sshd at IMAGEGEN_BENCH_SSH, and prints a streamOut.
func streamChild() int {
	out := streamOut{}
	defer func() {
		out.HWM, _ = ProcStatus(0, "VmHWM")
		_ = json.NewEncoder(os.Stdout).Encode(out)
	}()
	n, _ := strconv.ParseInt(os.Getenv("IMAGEGEN_BENCH_BYTES"), 10, 64)
	// IMAGEGEN_BENCH_CPUPROFILE profiles the streaming side (for finding what limits it).
	if p := os.Getenv("IMAGEGEN_BENCH_CPUPROFILE"); p != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", p, n)); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	pem, err := os.ReadFile(os.Getenv("IMAGEGEN_BENCH_KEY"))
	if err != nil {
		out.Error = err.Error()
		return 1
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		out.Error = err.Error()
		return 1
	}
	user := os.Getenv("IMAGEGEN_BENCH_USER")
	ep := &clouds.Endpoint{Addr: os.Getenv("IMAGEGEN_BENCH_SSH"), User: user, Signer: signer,
		HostKeys: []string{os.Getenv("IMAGEGEN_BENCH_HOSTKEY")}, HostKeySource: "config"}
	obs := &countingObserver{phases: map[builder.Phase]time.Time{}}
	if addr := os.Getenv("IMAGEGEN_BENCH_REDIS"); addr != "" {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		obs.store = queue.NewStore(rdb, 24*time.Hour, streamLogLimit)
	}
	sp := &spec.Spec{Name: "stream", Script: streamScript(n), Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian-12", SSHUser: user}}}
	r := builder.Run(context.Background(), builder.Job{
		Build: "bench-stream", CloudName: "sim", Cloud: fake.New(fake.Options{SSH: ep}), Spec: sp, Repo: "bench", Observer: obs,
	})
	obs.mu.Lock()
	defer obs.mu.Unlock()
	out.Bytes, out.Lines, out.State = obs.bytes, obs.lines, string(r.State)
	out.Seconds = obs.phases[builder.PhaseStop].Sub(obs.phases[builder.PhaseScript]).Seconds()
	if r.Error != "" {
		out.Error = r.Error
	} else if obs.err != nil {
		out.Error = obs.err.Error()
	}
	if r.State != builder.StateSucceeded || out.Error != "" {
		return 1
	}
	return 0
}

// runStreamChild runs the child for n bytes and returns what it reported.
func runStreamChild(tb testing.TB, d *testenv.SSHD, key string, n int64, redisAddr string) streamOut {
	tb.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=stream",
		"IMAGEGEN_BENCH_SSH="+d.Addr, "IMAGEGEN_BENCH_USER="+d.User, "IMAGEGEN_BENCH_KEY="+key,
		"IMAGEGEN_BENCH_HOSTKEY="+d.HostKey, fmt.Sprintf("IMAGEGEN_BENCH_BYTES=%d", n), "IMAGEGEN_BENCH_REDIS="+redisAddr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var out streamOut
	if jerr := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &out); jerr != nil {
		tb.Fatalf("stream child: %v; stdout %q stderr %q", err, stdout.String(), stderr.String())
	}
	if err != nil || out.Error != "" {
		tb.Fatalf("stream child: %v: %s (state %s)\nstderr: %s", err, out.Error, out.State, stderr.String())
	}
	return out
}

// runOpenSSH streams n bytes of the same output with OpenSSH's ssh into
// /dev/null and returns how long it took.
func runOpenSSH(tb testing.TB, d *testenv.SSHD, key string, n int64) time.Duration {
	tb.Helper()
	_, port, _ := strings.Cut(d.Addr, ":")
	kh := filepath.Join(tb.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%s %s\n", port, d.HostKey)), 0o600); err != nil {
		tb.Fatal(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer devnull.Close()
	cmd := exec.Command("ssh", "-F", "/dev/null", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+kh, "-o", "IdentitiesOnly=yes", "-i", key, "-c", goCipher, "-p", port,
		d.User+"@127.0.0.1", streamScript(n))
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = devnull, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("ssh: %v: %s", err, stderr.String())
	}
	return time.Since(start)
}

// goCipher is the cipher x/crypto/ssh's client prefers (and so negotiates
// with OpenSSH's sshd); the reference ssh uses it too, so the ratio compares
// the clients, not the ciphers.
const goCipher = "aes128-gcm@openssh.com"

// BenchmarkLogStream: a script printing 1 GiB over SSH from a real sshd into
// the build log, against OpenSSH's ssh into /dev/null.
func BenchmarkLogStream(b *testing.B) {
	for range b.N {
		benchLogStream(b)
	}
}

func benchLogStream(b *testing.B) {
	if _, err := exec.LookPath("ssh"); err != nil {
		b.Skipf("OpenSSH's ssh client is not installed (Debian package openssh-client): %v", err)
	}
	res := &Result{ID: "4-logstream", Title: "Log streaming", Started: time.Now()}
	d := testenv.StartSSHD(b)
	key := d.WriteClientKey(b)
	rds := testenv.StartRedis(b)

	// Alternate the two, twice, and keep each one's best: the machine is shared.
	var best streamOut
	var bestSSH time.Duration
	var hwm int64
	for range 2 {
		ref := runOpenSSH(b, d, key, streamBytes)
		if bestSSH == 0 || ref < bestSSH {
			bestSSH = ref
		}
		o := runStreamChild(b, d, key, streamBytes, "")
		// +1: the last line, cut by head -c, has no newline; the log counts one.
		if o.Bytes != streamBytes && o.Bytes != streamBytes+1 {
			b.Fatalf("the build log got %d bytes; the script printed %d", o.Bytes, streamBytes)
		}
		if best.Seconds == 0 || o.Seconds < best.Seconds {
			best = o
		}
		hwm = max(hwm, o.HWM)
	}
	// The same process streaming 1 MiB: what the binary costs before the stream.
	base := runStreamChild(b, d, key, 1<<20, "")
	rd := runStreamChild(b, d, key, streamRedisBytes, rds.Addr)
	if rd.Bytes != streamRedisBytes && rd.Bytes != streamRedisBytes+1 {
		b.Fatalf("the Redis build log got %d bytes; the script printed %d", rd.Bytes, streamRedisBytes)
	}
	mbps := func(n int64, s float64) float64 { return float64(n) / 1e6 / s }
	ours := mbps(best.Bytes, best.Seconds)
	theirs := mbps(streamBytes, bestSSH.Seconds())
	ratio := ours / theirs
	redisRate := mbps(rd.Bytes, rd.Seconds)
	res.Method = fmt.Sprintf("A real OpenSSH sshd on 127.0.0.1; the script `%s` prints %s in %d-byte lines. "+
		"imagegen's side runs as a child process (this test binary re-executed), so its peak RSS (VmHWM, read by the child at its end) is its own: "+
		"`builder.Run` on a simulated cloud whose instance is that sshd (the real sshexec client and the builder's redacting log) into an observer that "+
		"keeps a %s tail, as build.log_limit does; rate is over the \"running script\" phase. "+
		"The reference is OpenSSH's `ssh -c %s` (the cipher x/crypto/ssh negotiates) running the same script into /dev/null. "+
		"Two alternating runs each; the best of each counts. A third run sends %s through the worker's real log store "+
		"(`queue.Store.AppendLog` into redis-server, one call per line, as the worker's observer does).",
		strings.TrimSpace(streamScript(streamBytes)), MiB(streamBytes), lineLen, MiB(streamLogLimit), goCipher, MiB(streamRedisBytes))
	res.Figures = []Figure{
		Fig("OpenSSH ssh → /dev/null", fmt.Sprintf("%.0f MB/s", theirs)),
		Fig("imagegen → build log (builder, bounded tail)", fmt.Sprintf("%.0f MB/s (%d lines)", ours, best.Lines)),
		Goal("ratio imagegen / ssh", fmt.Sprintf("%.2f", ratio), "≥ 0.8", ratio >= 0.8),
		Goal("peak RSS of the streaming process", MiB(hwm), "≤ 64 MiB", hwm <= 64<<20),
		Fig("peak RSS of the same process streaming 1 MiB (its floor)", MiB(base.HWM)),
		Fig("imagegen → build log in Redis (worker's store, one call per line)", fmt.Sprintf("%.1f MB/s (%.0f lines/s; %.2f × ssh)", redisRate, float64(rd.Lines)/rd.Seconds, redisRate/theirs)),
		Fig("peak RSS, Redis run", MiB(rd.HWM)),
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	b.ReportMetric(ours, "MB/s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(float64(hwm)/(1<<20), "peak-MiB")
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}
