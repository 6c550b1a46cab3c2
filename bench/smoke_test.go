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
