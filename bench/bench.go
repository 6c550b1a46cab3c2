// Package bench measures imagegen's own share of a build's time and resources
// (issue 8): its benchmarks write Results that cmd/benchrun turns into docs/BENCHMARKS.md.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// OutEnv names the directory where benchmarks write their Results as JSON;
// unset, they only report through testing.B.
const OutEnv = "IMAGEGEN_BENCH_OUT"

// Result is one benchmark's figures, as the runner renders them.
type Result struct {
	ID      string    `json:"id"`    // "1-ingest": sorts the sections
	Title   string    `json:"title"` // "Webhook ingest"
	Method  string    `json:"method"`
	Figures []Figure  `json:"figures"`
	Notes   []string  `json:"notes,omitempty"` // what the run itself saw (limits, errors)
	Started time.Time `json:"started"`
	Elapsed float64   `json:"elapsed_s"`
}

// Figure is one measured value, next to its goal when it has one.
type Figure struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Goal  string `json:"goal,omitempty"`
	// Met is nil for a figure without a goal.
	Met *bool `json:"met,omitempty"`
	// Load is the 1-minute load average when the figure was taken: the
	// machine is shared, and a figure means little without it.
	Load float64 `json:"load"`
}

// Fig returns a figure without a goal.
func Fig(name, value string) Figure {
	return Figure{Name: name, Value: value, Load: LoadAvg()}
}

// Goal returns a figure with a goal and whether it was met.
func Goal(name, value, goal string, met bool) Figure {
	return Figure{Name: name, Value: value, Goal: goal, Met: &met, Load: LoadAvg()}
}

// Write stores r in the OutEnv directory (nothing when it is unset).
func (r *Result) Write() error {
	dir := os.Getenv(OutEnv)
	if dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result %s: %w", r.ID, err)
	}
	if err := os.WriteFile(filepath.Join(dir, r.ID+".json"), b, 0o644); err != nil {
		return fmt.Errorf("write result %s: %w", r.ID, err)
	}
	return nil
}

// ReadResults loads every Result in dir, sorted by ID.
func ReadResults(dir string) ([]Result, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// LoadAvg returns the 1-minute load average (-1 when unknown).
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Percentile returns the p-th percentile (0..100) of ds by the nearest-rank
// method; 0 for no samples. ds is sorted in place.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// CPUTime returns the user+system CPU this process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcStatus returns a field of /proc/<pid>/status in bytes ("VmHWM",
// "VmRSS") or as a number ("Threads"); pid 0 is this process.
func ProcStatus(pid int, field string) (int64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return parseStatus(string(b), field)
}

func parseStatus(s, field string) (int64, error) {
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s: no value", field)
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		return v, nil
	}
	return 0, fmt.Errorf("%s not in status", field)
}

// RedisStats is what INFO says about a Redis server's work so far.
type RedisStats struct {
	Calls map[string]int64 // per command, from INFO commandstats
	CPU   time.Duration    // used_cpu_user + used_cpu_sys, from INFO cpu
}

// Total returns the number of commands run.
func (r RedisStats) Total() int64 {
	var n int64
	for _, c := range r.Calls {
		n += c
	}
	return n
}

// ParseRedisInfo reads the commandstats and cpu sections of an INFO answer.
func ParseRedisInfo(info string) RedisStats {
	st := RedisStats{Calls: map[string]int64{}}
	var cpu float64
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, fields, _ := strings.Cut(rest, ":")
			for _, kv := range strings.Split(fields, ",") {
				if v, ok := strings.CutPrefix(kv, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					st.Calls[name] = n
				}
			}
			continue
		}
		for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				cpu += f
			}
		}
	}
	st.CPU = time.Duration(cpu * float64(time.Second))
	return st
}

// Sub returns what happened between before and r.
func (r RedisStats) Sub(before RedisStats) RedisStats {
	d := RedisStats{Calls: map[string]int64{}, CPU: r.CPU - before.CPU}
	for k, v := range r.Calls {
		if n := v - before.Calls[k]; n > 0 {
			d.Calls[k] = n
		}
	}
	return d
}

// Top returns the n most called commands as "name count" strings.
func (r RedisStats) Top(n int) []string {
	type kv struct {
		k string
		v int64
	}
	var all []kv
	for k, v := range r.Calls {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int {
		if a.v != b.v {
			return int(b.v - a.v)
		}
		return strings.Compare(a.k, b.k)
	})
	var out []string
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, fmt.Sprintf("%s %d", all[i].k, all[i].v))
	}
	return out
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Ms formats a duration in milliseconds.
func Ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
