package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkScale: 1 000 builds in flight at once in one worker, all waiting
// on a slow simulated launch; what does the waiting cost?
func BenchmarkScale(b *testing.B) {
	for range b.N {
		benchScale(b)
	}
}

func benchScale(b *testing.B) {
	const (
		gens   = 10
		window = 30 * time.Second // long enough that one noisy second of a shared machine does not decide the figure
	)
	// IMAGEGEN_BENCH_SCALE_BUILDS=10000 runs issue 17's 10 000 builds (500
	// pushes; the launch then takes 9 minutes, longer than that ramp, and
	// the run goes on until every build has reported its end, for the time
	// from delivery to the last status); make bench runs 1 000.
	pushes, launch, rssGoal, finish := 50, 75*time.Second, int64(256<<20), false // launch: longer than the ramp and the window together
	if v := os.Getenv("IMAGEGEN_BENCH_SCALE_BUILDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2*gens || n%(2*gens) != 0 {
			b.Fatalf("IMAGEGEN_BENCH_SCALE_BUILDS=%q: want a multiple of %d", v, 2*gens)
		}
		pushes = n / (2 * gens)
		if n > 1000 {
			// Under build.timeout (10 min), or every build would time out.
			launch, rssGoal, finish = 9*time.Minute, 512<<20, true
		}
	}
	switch os.Getenv("IMAGEGEN_BENCH_SCALE_FINISH") {
	case "0": // the memory figures alone
		finish = false
	case "1":
		finish = true
	}
	if v := os.Getenv("IMAGEGEN_BENCH_SCALE_LAUNCH"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("IMAGEGEN_BENCH_SCALE_LAUNCH=%q: %v", v, err)
		}
		launch = d
	}
	const snapshotDelay = time.Second
	builds := pushes * gens * 2
	res := &Result{ID: "5-scale", Title: "Scale in one worker", Started: time.Now()}
	cl := fmt.Sprintf("\n  sim-a: {type: simulated, launch_delay: %s, snapshot_delay: %s}\n  sim-b: {type: simulated, launch_delay: %s, snapshot_delay: %s}\n", launch, snapshotDelay, launch, snapshotDelay)
	// The server, the fake GitHub and the load generator in this process;
	// the worker in a child of its own (scaleworker_test.go).
	s := startService(b, serviceOptions{clouds: cl, concurrency: builds + 2*pushes})
	w := startScaleWorker(b, s.yml)
	servers := func() int { return w.ask(b, "servers").Servers }
	plans := preparePushes(b, s, pushes, gens, []string{"sim-a", "sim-b"})
	ctx := context.Background()
	start := time.Now()
	deliverAll(b, s, plans)
	// Ramp: every build launched and waiting on its server.
	rampErr := waitUntil(launch-window-5*time.Second, 100*time.Millisecond, func() bool { return servers() >= builds })
	ramp := time.Since(start)
	inFlight := servers()
	if rampErr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("only %d of %d builds were in flight after %s", inFlight, builds, ramp.Round(time.Second)))
	}
	// The ramp's tail: progress statuses and check-run updates trail the
	// launches. The window starts once the fake GitHub has had no call for 1 s.
	calls, still := s.gh.CallCount(), time.Now()
	settleErr := waitUntil(20*time.Second, 100*time.Millisecond, func() bool {
		if n := s.gh.CallCount(); n != calls {
			calls, still = n, time.Now()
		}
		return time.Since(still) >= time.Second
	})
	if settleErr != nil {
		res.Notes = append(res.Notes, "GitHub calls had not stopped 20 s after the ramp: the window includes some of them")
	}
	settled := time.Since(start)
	// The worker's first sweep of the clouds (10 s after it starts, then every
	// build.sweep_interval) lists every resource: a periodic cost, measured
	// on its own (it may overlap the ramp) and kept out of the window.
	var sweep workerStats
	if err := waitUntil(5*time.Minute, 100*time.Millisecond, func() bool { sweep = w.ask(b, "servers"); return sweep.Sweeps > 0 }); err != nil {
		b.Fatal("the worker's first sweep did not end in 5 minutes")
	}

	before, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// IMAGEGEN_BENCH_SCALE_CPUPROFILE profiles the worker in the window alone.
	cpuProfile := os.Getenv("IMAGEGEN_BENCH_SCALE_CPUPROFILE")
	if cpuProfile != "" {
		w.ask(b, "cpuprofile "+cpuProfile)
	}
	w0 := w.ask(b, "stats")
	cpu0, t0 := CPUTime(), time.Now()
	time.Sleep(window / 2)
	mid := w.ask(b, "stats")
	time.Sleep(window / 2)
	w1 := w.ask(b, "stats")
	// IMAGEGEN_BENCH_SCALE_GOROUTINES writes what every goroutine of the
	// worker waits on, grouped, after the window (20 000 goroutines take a
	// while to write).
	if p := os.Getenv("IMAGEGEN_BENCH_SCALE_GOROUTINES"); p != "" {
		w.ask(b, "goroutines "+p)
	}
	idle := time.Since(t0)
	cpu := CPUTime() - cpu0
	if cpuProfile != "" {
		w.ask(b, "cpustop")
	}
	after, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	hwm, err := ProcStatus(0, "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	// IMAGEGEN_BENCH_SCALE_MEMPROFILE writes the worker's heap (after a
	// collection) at the window's end.
	if p := os.Getenv("IMAGEGEN_BENCH_SCALE_MEMPROFILE"); p != "" {
		w.ask(b, "heap "+p)
	}
	live := w.ask(b, "stats gc")
	gcs, gcPause := w1.NumGC-w0.NumGC, w1.PauseTotal-w0.PauseTotal
	if w1.Servers < inFlight {
		res.Notes = append(res.Notes, "some builds ended during the idle window: the launch delay is too short for this machine")
	}
	rs := after.Sub(before)
	workerPct := 100 * (w1.CPU - w0.CPU).Seconds() / idle.Seconds()
	cpuPct := 100 * cpu.Seconds() / idle.Seconds()
	redisPct := 100 * rs.CPU.Seconds() / idle.Seconds()
	res.Method = fmt.Sprintf("%d pushes × %d generators × 2 simulated clouds = %d builds through the real webhook, one worker with concurrency %d "+
		"in a process of its own (wired as `imagegen worker` wires it; the webhook server, the fake GitHub and the load generator in the benchmark's process); "+
		"the clouds take %s to launch, so once every build has its server (counted on the worker's simulated clouds) all of them wait at once; "+
		"once the fake GitHub has had no call for 1 s (the ramp's progress reports are done) and the worker's first sweep of the clouds (10 s after it starts; its CPU is that of the whole process while it ran, the ramp's too if they overlap) is over, over the next %s: "+
		"CPU of the worker's process and of the other (getrusage), redis-server's CPU and commands (INFO), the worker's goroutines and memory at mid-window (runtime.MemStats), "+
		"its live heap right after a collection at the window's end, and each process's peak RSS (VmHWM) then.",
		pushes, gens, builds, builds+2*pushes, launch, window)
	res.Figures = []Figure{
		Fig("builds in flight", fmt.Sprintf("%d of %d", inFlight, builds)),
		Fig("ramp: first POST → all launched / → GitHub calls done", fmt.Sprintf("%.1f s / %.1f s", ramp.Seconds(), settled.Seconds())),
		Goal("peak RSS of the worker's process", MiB(w1.HWM), "≤ "+MiB(rssGoal), w1.HWM <= rssGoal && inFlight >= builds),
		Fig("peak RSS of the other process (webhook server, fake GitHub, load generator)", MiB(hwm)),
		Fig("worker: Go heap in use / live after a collection / goroutine stacks / goroutines", fmt.Sprintf("%s / %s / %s / %d (%.2f per build)",
			MiB(int64(mid.HeapInuse)), MiB(int64(live.HeapLive)), MiB(int64(mid.StackInuse)), mid.Goroutines, float64(mid.Goroutines)/float64(max(inFlight, 1)))),
		Goal("CPU while waiting (the worker's process)", fmt.Sprintf("%.2f %% of one core", workerPct), "< 5 %", workerPct < 5 && inFlight >= builds),
		Fig("CPU while waiting (the other process)", fmt.Sprintf("%.2f %% of one core", cpuPct)),
		Fig("garbage collections during the wait (worker)", fmt.Sprintf("%d (%s of pauses)", gcs, gcPause.Round(10*time.Microsecond))),
		Fig("the worker's first sweep of the clouds: its process's CPU / wall time", fmt.Sprintf("%.2f s / %.1f s", sweep.SweepCPU.Seconds(), sweep.SweepWall.Seconds())),
		Fig("redis-server CPU while waiting", fmt.Sprintf("%.2f %% of one core (%.0f commands/s)", redisPct, float64(rs.Total())/idle.Seconds())),
	}
	if top := rs.Top(5); len(top) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("Redis commands during the %s wait: %v", window, top))
	}
	b.ReportMetric(float64(w1.HWM)/(1<<20), "worker-peak-MiB")
	b.ReportMetric(float64(hwm)/(1<<20), "other-peak-MiB")
	b.ReportMetric(workerPct, "idle-cpu-%")
	b.ReportMetric(float64(mid.Goroutines), "goroutines")
	if finish {
		res.Figures = append(res.Figures, scaleFinish(b, s, w, plans, builds, start, launch+snapshotDelay, rssGoal)...)
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}

// scaleFinish waits until every build's final status has landed and returns
// the whole path's time (the first POST → the last final status) against
// the simulated clouds' own delays, and the worker's peak RSS over the whole
// run. A commit status whose latest is pending although a final one landed
// before (a progress report overtaking the end) is counted apart.
func scaleFinish(b *testing.B, s *service, w *scaleWorker, plans []pushPlan, builds int, start time.Time, ideal time.Duration, rssGoal int64) []Figure {
	var final, ok, stale int
	var examples []string
	count := func() {
		final, ok, stale, examples = 0, 0, 0, examples[:0]
		for _, p := range plans {
			seen := map[string]bool{} // contexts with a final status so far
			latest := map[string]string{}
			for _, st := range s.gh.Statuses(p.repo, p.sha) {
				if st.State != "pending" && !seen[st.Context] {
					seen[st.Context] = true
					final++
					if st.State == "success" {
						ok++
					}
				}
				latest[st.Context] = st.State + " " + st.Description
			}
			for c, l := range latest {
				if seen[c] && strings.HasPrefix(l, "pending") {
					stale++
					if len(examples) < 3 {
						examples = append(examples, fmt.Sprintf("%s %s: %q", p.repo, c, l))
					}
				}
			}
		}
	}
	err := waitUntil(ideal+10*time.Minute-time.Since(start), 250*time.Millisecond, func() bool {
		count()
		return final >= builds
	})
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%d of %d builds reported final after %s", final, builds, wall.Round(time.Second))
	}
	time.Sleep(15 * time.Second) // what lands late has landed by then
	count()
	end := w.ask(b, "stats")
	ratio := wall.Seconds() / ideal.Seconds()
	figs := []Figure{
		Goal("the first POST → the last final status, against the clouds' delays (launch + snapshot)", fmt.Sprintf("%.1f s against %s (%.3f ×; imagegen's share %.1f s)", wall.Seconds(), ideal, ratio, (wall-ideal).Seconds()),
			"≤ 1.1 ×, every status final", ratio <= 1.1 && ok == builds && stale == 0),
		Fig("builds succeeded", fmt.Sprintf("%d of %d", ok, builds)),
		Fig("commit statuses pending after their final one (a progress report landed after the end)", fmt.Sprintf("%d of %d %v", stale, builds, examples)),
		Goal("peak RSS of the worker's process over the whole run (the ends included)", MiB(end.HWM), "≤ "+MiB(rssGoal), end.HWM <= rssGoal),
	}
	if bd, err := breakdown(context.Background(), s, plans, start, wall); err != nil {
		figs = append(figs, Fig("breakdown", "none: "+err.Error()))
	} else {
		figs = append(figs, bd...)
	}
	b.ReportMetric(ratio, "wall/ideal")
	return figs
}
