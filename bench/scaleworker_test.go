package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/store"
)

// The scale benchmark runs the worker in a child process (this test binary
// again, with childEnv=scale-worker), so that the memory and CPU it reports
// are the worker's alone: the fake GitHub (which keeps every call it got),
// the webhook server and the load generator stay in the parent. The child
// wires the worker as cmd/imagegen's wire does, from the parent's config,
// and answers the parent's commands, one a line on stdin, with one JSON
// line on stdout each.
const scaleWorkerChild = "scale-worker"

// scaleConfigEnv names the file holding the child's config.
const scaleConfigEnv = "IMAGEGEN_BENCH_SCALE_CONFIG"

// An init, not TestMain: TestMain is stream_test.go's.
func init() {
	if os.Getenv(childEnv) == scaleWorkerChild {
		os.Exit(scaleWorkerMain())
	}
}

// workerStats is the child's answer to "stats" (and, partly, to the other
// commands).
type workerStats struct {
	Servers    int           `json:"servers"` // servers alive on the simulated clouds
	Goroutines int           `json:"goroutines,omitempty"`
	HeapInuse  uint64        `json:"heap_inuse,omitempty"`
	HeapLive   uint64        `json:"heap_live,omitempty"` // HeapAlloc right after a collection ("stats gc")
	StackInuse uint64        `json:"stack_inuse,omitempty"`
	NumGC      uint32        `json:"num_gc,omitempty"`
	PauseTotal time.Duration `json:"pause_total,omitempty"`
	HWM        int64         `json:"hwm,omitempty"` // VmHWM
	RSS        int64         `json:"rss,omitempty"` // VmRSS
	CPU        time.Duration `json:"cpu,omitempty"`
	// Sweeps is how many sweeps are over; the last took SweepWall, while
	// the process used SweepCPU.
	Sweeps    int           `json:"sweeps"`
	SweepCPU  time.Duration `json:"sweep_cpu,omitempty"`
	SweepWall time.Duration `json:"sweep_wall,omitempty"`
	Error     string        `json:"error,omitempty"`
}

func scaleWorkerMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "scale worker:", err)
		return 1
	}
	yml, err := os.ReadFile(os.Getenv(scaleConfigEnv))
	if err != nil {
		return fail(err)
	}
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	cfg, err := config.Parse(yml, "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		return fail(err)
	}
	if err := cfg.CheckService(); err != nil {
		return fail(err)
	}
	opt, err := asynq.ParseRedisURI(cfg.Redis)
	if err != nil {
		return fail(err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return fail(errors.New("redis: not a UniversalClient"))
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sealer, err := queue.NewSealer(cfg.EncryptionKey)
	if err != nil {
		return fail(err)
	}
	qc, err := queue.NewClient(rdb, cfg, sealer)
	if err != nil {
		return fail(err)
	}
	gh, err := github.New(cfg.GitHub, github.Options{Logger: log})
	if err != nil {
		return fail(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: st, Queue: qc, Logger: log, Metrics: builds.NewMetrics(prometheus.NewRegistry()), GitHub: gh}
	// The sweep runs as the worker's loop runs it (10 s after the start,
	// then every build.sweep_interval), here, so the parent knows when the
	// first is over: it lists every resource, and is kept out of the window.
	w, err := queue.NewWorker(queue.WorkerOptions{Config: cfg, Redis: rdb, Logger: log, Sealer: sealer,
		Deliveries: builds.NewDeliveries(github.ParseDelivery, builds.NewPlanner(d), builds.NewReruns(d)),
		Runner:     builds.NewRunner(d)})
	if err != nil {
		return fail(err)
	}
	sweeper := builds.NewSweeper(d, qc)
	var sweepMu sync.Mutex
	var sweeps int
	var sweepCPU, sweepWall time.Duration
	go func() {
		wait := 10 * time.Second
		for {
			time.Sleep(wait)
			wait = cfg.Build.SweepInterval
			cpu0, t0 := CPUTime(), time.Now()
			_, _ = sweeper.Sweep(context.Background())
			sweepMu.Lock()
			sweeps, sweepCPU, sweepWall = sweeps+1, CPUTime()-cpu0, time.Since(t0)
			sweepMu.Unlock()
		}
	}()
	var sims []*simulated.Cloud
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range cfg.Clouds {
			if !yield(n) {
				return
			}
		}
	}) {
		if c := simulated.CloudOf(cfg.Clouds[name].Opener); c != nil {
			sims = append(sims, c)
		}
	}
	if err := w.Start(); err != nil {
		return fail(err)
	}
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(workerStats{})
	servers := func() int {
		n := 0
		for _, c := range sims {
			n += c.Count(clouds.KindServer)
		}
		return n
	}
	var cpuProfile *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		ans := workerStats{Servers: servers()}
		sweepMu.Lock()
		ans.Sweeps, ans.SweepCPU, ans.SweepWall = sweeps, sweepCPU, sweepWall
		sweepMu.Unlock()
		err := error(nil)
		switch cmd {
		case "servers":
		case "stats":
			ans = childStats(ans, arg == "gc")
		case "goroutines": // what every goroutine waits on, grouped
			err = writeProfile(arg, func(f io.Writer) error { return pprof.Lookup("goroutine").WriteTo(f, 1) })
		case "heap": // after a collection
			runtime.GC()
			err = writeProfile(arg, pprof.WriteHeapProfile)
		case "cpuprofile":
			if cpuProfile, err = os.Create(arg); err == nil {
				err = pprof.StartCPUProfile(cpuProfile)
			}
		case "cpustop":
			if cpuProfile != nil {
				pprof.StopCPUProfile()
				err = cpuProfile.Close()
			}
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			ans.Error = err.Error()
		}
		if err := out.Encode(ans); err != nil {
			return fail(err)
		}
	}
	// stdin closed: the parent is done.
	w.Shutdown()
	return 0
}

func writeProfile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// childStats fills the process's figures into s; gc collects first, so
// HeapLive is what is live.
func childStats(s workerStats, gc bool) workerStats {
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.Goroutines = runtime.NumGoroutine()
	s.HeapInuse, s.StackInuse, s.NumGC, s.PauseTotal = ms.HeapInuse, ms.StackInuse, ms.NumGC, time.Duration(ms.PauseTotalNs)
	if gc {
		s.HeapLive = ms.HeapAlloc
	}
	s.HWM, _ = ProcStatus(0, "VmHWM")
	s.RSS, _ = ProcStatus(0, "VmRSS")
	s.CPU = CPUTime()
	return s
}

// scaleWorker is the parent's handle on the child.
type scaleWorker struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	mu      sync.Mutex
	started time.Time // when its worker started: its first sweep comes 10 s later
}

// startScaleWorker starts the child on the config yml and waits until its
// worker runs; the test's cleanup stops it.
func startScaleWorker(tb testing.TB, yml string) *scaleWorker {
	tb.Helper()
	cf := tb.TempDir() + "/imagegen.yaml"
	if err := os.WriteFile(cf, []byte(yml), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+scaleWorkerChild, scaleConfigEnv+"="+cf)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	w := &scaleWorker{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if !w.out.Scan() {
		tb.Fatalf("scale worker did not start: %v", w.out.Err())
	}
	w.started = time.Now()
	return w
}

// ask sends the child one command and returns its answer.
func (w *scaleWorker) ask(tb testing.TB, cmd string) workerStats {
	tb.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := fmt.Fprintln(w.in, cmd); err != nil {
		tb.Fatalf("scale worker: %s: %v", cmd, err)
	}
	if !w.out.Scan() {
		tb.Fatalf("scale worker: %s: no answer (%v)", cmd, w.out.Err())
	}
	var s workerStats
	if err := json.Unmarshal(w.out.Bytes(), &s); err != nil {
		tb.Fatalf("scale worker: %s: %v", cmd, err)
	}
	if s.Error != "" {
		tb.Fatalf("scale worker: %s: %s", cmd, s.Error)
	}
	return s
}
