package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one", ms(7), 99, 7 * time.Millisecond},
		{"median of odd, unsorted", ms(5, 1, 3), 50, 3 * time.Millisecond},
		{"median of even takes the lower", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100 is the 99th", ms(seq(100)...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(3, 9, 1), 100, 9 * time.Millisecond},
		{"p0 is the min", ms(3, 9, 1), 0, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %g) = %v; want %v", tt.in, tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestParseRedisInfo(t *testing.T) {
	before := ParseRedisInfo("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n# Commandstats\r\n" +
		"cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_hset:calls=4,usec=8,usec_per_call=2.00\r\n")
	after := ParseRedisInfo("# CPU\r\nused_cpu_sys:2.000000\r\nused_cpu_user:3.000000\r\n# Commandstats\r\n" +
		"cmdstat_evalsha:calls=25,usec=250,usec_per_call=10.00\r\n" +
		"cmdstat_hset:calls=4,usec=8,usec_per_call=2.00\r\n" +
		"cmdstat_info:calls=1,usec=30,usec_per_call=30.00\r\n")
	if before.CPU != 3750*time.Millisecond || before.Total() != 14 {
		t.Fatalf("before: cpu %v, total %d; want 3.75s, 14", before.CPU, before.Total())
	}
	d := after.Sub(before)
	tests := []struct {
		cmd  string
		want int64
	}{{"evalsha", 15}, {"info", 1}, {"hset", 0}}
	for _, tt := range tests {
		if got := d.Calls[tt.cmd]; got != tt.want {
			t.Errorf("delta %s = %d; want %d", tt.cmd, got, tt.want)
		}
	}
	if d.CPU != 1250*time.Millisecond || d.Total() != 16 {
		t.Errorf("delta cpu %v total %d; want 1.25s, 16", d.CPU, d.Total())
	}
	if top := d.Top(1); len(top) != 1 || top[0] != "evalsha 15" {
		t.Errorf("Top(1) = %v", top)
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tbench\nVmHWM:\t   53120 kB\nVmRSS:\t   40000 kB\nThreads:\t7\n"
	tests := []struct {
		field string
		want  int64
		err   bool
	}{
		{"VmHWM", 53120 * 1024, false},
		{"Threads", 7, false},
		{"VmSwap", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatus(status, tt.field)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseStatus(%s) = %d, %v; want %d (error %v)", tt.field, got, err, tt.want, tt.err)
		}
	}
	// This process has a real status file.
	if hwm, err := ProcStatus(0, "VmHWM"); err != nil || hwm <= 0 {
		t.Errorf("ProcStatus(self, VmHWM) = %d, %v", hwm, err)
	}
}

func TestResultRoundTrip(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(OutEnv, dir)
	for _, r := range []Result{
		{ID: "2-b", Title: "B", Figures: []Figure{Goal("x", "1", "≤ 2", true)}},
		{ID: "1-a", Title: "A", Figures: []Figure{Fig("y", "2")}, Notes: []string{"n"}},
	} {
		if err := r.Write(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResults(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "1-a" || got[1].ID != "2-b" {
		t.Fatalf("ReadResults: %+v", got)
	}
	if m := got[1].Figures[0].Met; m == nil || !*m {
		t.Errorf("goal figure lost its met flag: %+v", got[1].Figures[0])
	}
	if got[0].Figures[0].Met != nil {
		t.Errorf("a figure without a goal has a met flag")
	}
}

func TestRingKeepsNewestWithinLimit(t *testing.T) {
	var r ring
	for i := range 1000 {
		r.push(strings.Repeat("x", 9)+string(rune('a'+i%26)), 100)
	}
	if r.n != 10 || r.size != 100 {
		t.Fatalf("ring holds %d lines, %d bytes; want 10, 100", r.n, r.size)
	}
	if last := r.buf[(r.head+r.n-1)%len(r.buf)]; last[9] != byte('a'+999%26) {
		t.Errorf("newest line %q", last)
	}
}

func TestStreamScriptPrintsLines(t *testing.T) {
	s := streamScript(1 << 20)
	if !strings.Contains(s, "head -c 1048576") || !strings.Contains(s, strings.Repeat("x", lineLen-1)) {
		t.Errorf("script %q", s)
	}
}
