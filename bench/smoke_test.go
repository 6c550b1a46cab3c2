package bench

import (
	"testing"
	"time"

	"github.com/imagegen/imagegen/internal/servicetest"
)

// The benchmarks run only under `make bench`; these quick tests run their
// harness end to end under `make test`, so a change elsewhere that breaks a
// benchmark shows up the day it is made.

// TestHarnessBuildsAPush: one push through the harness's service (real
// webhook, Redis, worker, fake GitHub) ends with a success status per cloud.
func TestHarnessBuildsAPush(t *testing.T) {
	s := startService(t, serviceOptions{clouds: "\n  sim-a: {type: simulated}\n  sim-b: {type: simulated}\n", worker: true})
	plans := preparePushes(t, s, 1, 2, []string{"sim-a", "sim-b"})
	deliverAll(t, s, plans)
	var final, ok int
	if err := waitUntil(30*time.Second, 20*time.Millisecond, func() bool {
		final, ok = finalStatuses(s, plans)
		return final >= 4
	}); err != nil {
		t.Fatalf("%d of 4 statuses final", final)
	}
	if ok != 4 {
		t.Errorf("%d of 4 builds succeeded", ok)
	}
	fs, err := breakdown(t.Context(), s, plans, time.Now().Add(-time.Minute), time.Minute)
	if err != nil || len(fs) == 0 {
		t.Errorf("breakdown: %v, %d figures", err, len(fs))
	}
	st, err := s.redisStats(t.Context())
	if err != nil || st.Total() == 0 {
		t.Errorf("redis stats: %v, %d commands", err, st.Total())
	}
}

// TestStreamChildCountsEveryByte: the streaming child, on a real sshd, gets
// every byte the script prints into its log and reports its peak RSS.
func TestStreamChildCountsEveryByte(t *testing.T) {
	d := servicetest.StartSSHD(t)
	key := d.WriteClientKey(t)
	const n = 1 << 20
	out := runStreamChild(t, d, key, n, "")
	if out.Bytes != n && out.Bytes != n+1 {
		t.Errorf("the log got %d bytes; the script printed %d", out.Bytes, n)
	}
	if want := int64((n + lineLen - 1) / lineLen); out.Lines != want {
		t.Errorf("%d lines; want %d", out.Lines, want)
	}
	if out.HWM <= 0 || out.Seconds <= 0 {
		t.Errorf("child report %+v", out)
	}
}

// TestStudyChildModes runs each of BenchmarkLogStreamStudy's child modes on
// 1 MiB: each counts every byte, x/crypto/ssh alone negotiates the cipher it
// was given, and the allocations are reported.
func TestStudyChildModes(t *testing.T) {
	d := servicetest.StartSSHD(t)
	key := d.WriteClientKey(t)
	const n = 1 << 20
	for _, tc := range []struct {
		env   []string
		state string // "lines": sshexec alone; the builder's run otherwise
	}{
		{[]string{"IMAGEGEN_BENCH_MODE=lines"}, "lines"},
		{[]string{"IMAGEGEN_BENCH_MODE=lines", "IMAGEGEN_BENCH_REDACT=1"}, "lines"},
		{[]string{"IMAGEGEN_BENCH_MODE=per-line"}, "succeeded"},
		{[]string{"IMAGEGEN_BENCH_MODE=count"}, "succeeded"},
	} {
		env := tc.env
		out := runChild(t, d, key, n, "", false, env...)
		if out.State != tc.state {
			t.Errorf("%v: state %q, want %q", env, out.State, tc.state)
		}
		if out.Bytes != n && out.Bytes != n+1 {
			t.Errorf("%v: %d bytes; the script printed %d", env, out.Bytes, n)
		}
		if out.Lines != (n+lineLen-1)/lineLen || out.AllocBytes == 0 || out.StartFile == 0 {
			t.Errorf("%v: child report %+v", env, out)
		}
	}
	for _, c := range []string{"chacha20-poly1305@openssh.com", "aes128-ctr"} {
		out := runChild(t, d, key, n, "", true, "IMAGEGEN_BENCH_CIPHER="+c, "IMAGEGEN_BENCH_MAC=hmac-sha2-256-etm@openssh.com", "IMAGEGEN_BENCH_READ=4096")
		if out.Bytes != n || out.State != c {
			t.Errorf("x/crypto/ssh alone with %s: %d bytes, negotiated %q", c, out.Bytes, out.State)
		}
	}
}
