package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
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
		sweepSettle = 16 * time.Second // the first sweep (at 10 s) and its own work are over by then
		gens        = 10
		window      = 30 * time.Second // long enough that one noisy second of a shared machine does not decide the figure
	)
	// IMAGEGEN_BENCH_SCALE_BUILDS=10000 runs issue 17's 10 000 builds (500
	// pushes; the launch then takes 10 minutes, longer than that ramp);
	// make bench runs 1 000.
	pushes, launch, rssGoal := 50, 75*time.Second, int64(256<<20) // launch: longer than the ramp and the window together
	if v := os.Getenv("IMAGEGEN_BENCH_SCALE_BUILDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2*gens || n%(2*gens) != 0 {
			b.Fatalf("IMAGEGEN_BENCH_SCALE_BUILDS=%q: want a multiple of %d", v, 2*gens)
		}
		pushes = n / (2 * gens)
		if n > 1000 {
			launch, rssGoal = 10*time.Minute, 512<<20
		}
	}
	builds := pushes * gens * 2
	res := &Result{ID: "5-scale", Title: "Scale in one process", Started: time.Now()}
	cl := fmt.Sprintf("\n  sim-a: {type: simulated, launch_delay: %s, snapshot_delay: 1s}\n  sim-b: {type: simulated, launch_delay: %s, snapshot_delay: 1s}\n", launch, launch)
	s := startService(b, serviceOptions{clouds: cl, concurrency: builds + 2*pushes, worker: true})
	simA, simB := simulated.CloudOf(s.cfg.Clouds["sim-a"].Opener), simulated.CloudOf(s.cfg.Clouds["sim-b"].Opener)
	if simA == nil || simB == nil {
		b.Fatal("the simulated clouds' fakes are not reachable")
	}
	servers := func() int {
		n := 0
		for _, c := range []*simulated.Cloud{simA, simB} {
			for _, r := range c.Live() {
				if r.Kind == clouds.KindServer {
					n++
				}
			}
		}
		return n
	}
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
	calls, still := len(s.gh.Calls()), time.Now()
	settleErr := waitUntil(20*time.Second, 100*time.Millisecond, func() bool {
		if n := len(s.gh.Calls()); n != calls {
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
	// on its own so the window shows the steady wait.
	sweepCPU0, sweepT0 := CPUTime(), time.Now()
	if w := time.Until(s.workerStarted.Add(sweepSettle)); w > 0 {
		time.Sleep(w)
	}
	sweepCPU, sweepGap := CPUTime()-sweepCPU0, time.Since(sweepT0)

	before, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// IMAGEGEN_BENCH_SCALE_CPUPROFILE profiles the window alone.
	stopProfile := func() {}
	if p := os.Getenv("IMAGEGEN_BENCH_SCALE_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		stopProfile = func() { pprof.StopCPUProfile(); f.Close() }
	}
	var gc0 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	cpu0, t0 := CPUTime(), time.Now()
	time.Sleep(window / 2)
	goroutines := runtime.NumGoroutine()
	// IMAGEGEN_BENCH_SCALE_GOROUTINES writes what every goroutine waits on,
	// grouped, at mid-window.
	if p := os.Getenv("IMAGEGEN_BENCH_SCALE_GOROUTINES"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("goroutine").WriteTo(f, 1); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
	time.Sleep(window / 2)
	idle := time.Since(t0)
	cpu := CPUTime() - cpu0
	stopProfile()
	after, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	hwm, err := ProcStatus(0, "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	// IMAGEGEN_BENCH_SCALE_MEMPROFILE writes the heap (after a collection)
	// at the window's end.
	if p := os.Getenv("IMAGEGEN_BENCH_SCALE_MEMPROFILE"); p != "" {
		runtime.GC()
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcs, gcPause := ms.NumGC-gc0.NumGC, time.Duration(ms.PauseTotalNs-gc0.PauseTotalNs)
	if servers() < inFlight {
		res.Notes = append(res.Notes, "some builds ended during the idle window: the launch delay is too short for this machine")
	}
	rs := after.Sub(before)
	cpuPct := 100 * cpu.Seconds() / idle.Seconds()
	redisPct := 100 * rs.CPU.Seconds() / idle.Seconds()
	res.Method = fmt.Sprintf("%d pushes × %d generators × 2 simulated clouds = %d builds through the real webhook, one worker with concurrency %d; "+
		"the clouds take %s to launch, so once every build has its server (counted on the fakes) all of them wait at once; "+
		"once the fake GitHub has had no call for 1 s (the ramp's progress reports are done) and the worker's first sweep of the clouds (10 s after it starts) is over, over the next %s: CPU of this process (getrusage; it holds the server, the worker, the fake GitHub and the load generator, "+
		"so it is an upper bound for imagegen), redis-server's CPU and commands (INFO), goroutines at mid-window, and this process's "+
		"peak RSS (VmHWM, likewise an upper bound: the fake GitHub's records of every status live in it too).",
		pushes, gens, builds, builds+2*pushes, launch, window)
	res.Figures = []Figure{
		Fig("builds in flight", fmt.Sprintf("%d of %d", inFlight, builds)),
		Fig("ramp: first POST → all launched / → GitHub calls done", fmt.Sprintf("%.1f s / %.1f s", ramp.Seconds(), settled.Seconds())),
		Goal("peak RSS (whole process)", MiB(hwm), "≤ "+MiB(rssGoal), hwm <= rssGoal && inFlight >= builds),
		Fig("Go heap in use / goroutine stacks / goroutines", fmt.Sprintf("%s / %s / %d (%.1f per build)", MiB(int64(ms.HeapInuse)), MiB(int64(ms.StackInuse)), goroutines, float64(goroutines)/float64(max(inFlight, 1)))),
		Goal("CPU while waiting (this process)", fmt.Sprintf("%.2f %% of one core", cpuPct), "< 5 %", cpuPct < 5 && inFlight >= builds),
		Fig("garbage collections during the wait (this process)", fmt.Sprintf("%d (%s of pauses)", gcs, gcPause.Round(10*time.Microsecond))),
		Fig("CPU of the gap holding the worker's first sweep (this process)", fmt.Sprintf("%.2f s over %.1f s", sweepCPU.Seconds(), sweepGap.Seconds())),
		Fig("redis-server CPU while waiting", fmt.Sprintf("%.2f %% of one core (%.0f commands/s)", redisPct, float64(rs.Total())/idle.Seconds())),
	}
	if top := rs.Top(5); len(top) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("Redis commands during the %s wait: %v", window, top))
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	b.ReportMetric(float64(hwm)/(1<<20), "peak-MiB")
	b.ReportMetric(cpuPct, "idle-cpu-%")
	b.ReportMetric(float64(goroutines), "goroutines")
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}
