// Command benchrun runs imagegen's benchmarks (package bench), one process
// each, and writes their figures, the machine and the method to docs/BENCHMARKS.md.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/imagegen/imagegen/bench"
)

// benchmark is one benchmark function of package bench and its report section.
type benchmark struct{ Func, ID, Title string }

// benchmarks are run in this order; each writes one Result.
var benchmarks = []benchmark{
	{"BenchmarkIngest", "1-ingest", "Webhook ingest"},
	{"BenchmarkIngestDurability", "1b-durability", "Webhook ingest by redis_durability"},
	{"BenchmarkOrchestration", "2-orchestration", "Orchestration overhead"},
	{"BenchmarkNoticing", "3-noticing", "Noticing"},
	{"BenchmarkLogStream", "4-logstream", "Log streaming"},
	{"BenchmarkLogStreamStudy", "4b-logstream-study", "Log streaming: what each part costs"},
	{"BenchmarkScale", "5-scale", "Scale in one worker"},
	{"BenchmarkManifest", "6-manifest", "Image manifests"},
	{"BenchmarkAPICalls", "7-apicalls", "Cloud API calls at scale"},
	{"BenchmarkFirstCall", "8-firstcall", "Delivery to first cloud call"},
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("benchrun", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	out := flag.String("out", "docs/BENCHMARKS.md", "the report to write")
	analysis := flag.String("analysis", "bench/analysis.md", "hand-written findings appended to the report")
	only := flag.String("run", "", "run only the benchmarks whose function name matches this `regexp`")
	timeout := flag.Duration("timeout", 5*time.Minute, "limit for one benchmark")
	flag.Parse()
	var pick *regexp.Regexp
	if *only != "" {
		var err error
		if pick, err = regexp.Compile(*only); err != nil {
			return fmt.Errorf("-run: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "imagegen-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bench.test")
	log.Info("building the benchmarks")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./bench")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go test -c ./bench: %w", err)
	}
	resDir := filepath.Join(tmp, "results")
	if err := os.Mkdir(resDir, 0o755); err != nil {
		return err
	}

	machine := describeMachine()
	var failures []string
	for _, bm := range benchmarks {
		if pick != nil && !pick.MatchString(bm.Func) {
			continue
		}
		msg, err := runOne(ctx, log, bin, resDir, bm, *timeout)
		if err != nil {
			return err
		}
		if msg != "" {
			failures = append(failures, msg)
		}
	}

	results, err := bench.ReadResults(resDir)
	if err != nil {
		return err
	}
	// A partial run (-run) writes only its own sections: the report holds one
	// run's figures, never a mix of runs on differently loaded machines.
	notes, err := os.ReadFile(*analysis)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := render(machine, results, string(notes), *only)
	if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
		return err
	}
	log.Info("wrote", "file", *out, "benchmarks", len(results))
	if len(failures) > 0 {
		return fmt.Errorf("%d benchmark(s) failed: %s", len(failures), strings.Join(failures, "; "))
	}
	return nil
}

// runOne runs one benchmark of the test binary bin, its result into
// resDir; a benchmark that fails gets a result saying so, and its failure
// is returned as msg.
func runOne(ctx context.Context, log *slog.Logger, bin, resDir string, bm benchmark, timeout time.Duration) (msg string, err error) {
	log.Info("running", "benchmark", bm.Func, "load", bench.LoadAvg())
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$", "-test.bench=^"+bm.Func+"$", "-test.benchtime=1x",
		"-test.timeout="+timeout.String())
	cmd.Dir = "bench" // where `go test` would run it
	cmd.Env = append(os.Environ(), bench.OutEnv+"="+resDir)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if _, serr := os.Stat(filepath.Join(resDir, bm.ID+".json")); err != nil || serr != nil {
		msg := fmt.Sprintf("%s failed after %s: %v", bm.Func, time.Since(start).Round(time.Second), errors.Join(err, serr))
		log.Error(msg, "output", tail(buf.String(), 30))
		r := bench.Result{ID: bm.ID, Title: bm.Title, Started: start, Elapsed: time.Since(start).Seconds(),
			Notes: []string{"this run failed: " + msg, "output: " + tail(buf.String(), 12)}}
		return msg, writeResult(resDir, r)
	}
	log.Info("done", "benchmark", bm.Func, "took", time.Since(start).Round(time.Second), "result", benchLine(buf.String()))
	return "", nil
}

func writeResult(dir string, r bench.Result) error {
	old := os.Getenv(bench.OutEnv)
	os.Setenv(bench.OutEnv, dir)
	defer os.Setenv(bench.OutEnv, old)
	return r.Write()
}

// benchLine returns the "BenchmarkX-2 1 ... ns/op ..." line of go test's output.
func benchLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "Benchmark") && strings.Contains(l, "ns/op") {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return ""
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// machine is what the report says about where it ran.
type machine struct {
	CPU, Kernel, Go, Redis, SSH string
	Cores                       int
	Mem                         string
	Load                        string
	Date                        time.Time
}

func describeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				_, _ = fmt.Sscan(strings.TrimSpace(v), &kb) // 0 when unreadable: "0.0 GiB"
				m.Mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	m.Redis = firstLine(exec.Command("redis-server", "--version"))
	m.SSH = firstLine(exec.Command("ssh", "-V")) // ssh -V prints on stderr
	return m
}

func firstLine(cmd *exec.Cmd) string {
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "not found"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(buf.String()), "\n")
	return l
}

func render(m machine, results []bench.Result, analysis, only string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# imagegen benchmarks\n\n")
	w("imagegen's own share of a build — accepting the push, queueing, polling, streaming logs, reporting — measured against the limit ")
	w("measured in the same run (issue 8). Written by `make bench` (`go run ./bench/cmd/benchrun`) on %s; ", m.Date.Format("2006-01-02 15:04 MST"))
	w("the figures are this machine's, from that run; the findings at the end are kept by hand in `bench/analysis.md`.\n\n")
	if only != "" {
		w("**Partial run**: only the benchmarks matching `%s`.\n\n", only)
	}
	w("## Summary\n\n| # | benchmark | figure | value | goal | met | load (1 min) |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		n, _, _ := strings.Cut(r.ID, "-")
		goals := 0
		for _, f := range r.Figures {
			if f.Goal == "" {
				continue
			}
			goals++
			w("| %s | %s | %s | %s | %s | %s | %.2f |\n", n, r.Title, esc(f.Name), esc(f.Value), esc(f.Goal), met(f.Met), f.Load)
		}
		switch {
		case goals == 0 && len(r.Figures) > 0:
			w("| %s | %s | (figures without a goal: see its section) | | | | |\n", n, r.Title)
		case goals == 0:
			w("| %s | %s | (no figures: the run failed) | | | **no** | |\n", n, r.Title)
		}
	}
	w("\n## Machine\n\n")
	w("- CPU: %s, %d cores seen by Go; memory %s; Linux %s\n", m.CPU, m.Cores, m.Mem, m.Kernel)
	w("- %s; %s; %s\n", m.Go, m.Redis, m.SSH)
	w("- load average (1, 5, 15 min) when the run started: %s. The machine is shared with other engineers' builds and tests: ", m.Load)
	w("each figure carries the 1-minute load average when it was taken, and every goal is a ratio to a limit measured in the same run where the issue allows.\n\n")
	w("## How to reproduce\n\n")
	w("```sh\nmake bench                      # all of them, about %d minutes; rewrites docs/BENCHMARKS.md\n", estimateMinutes(results))
	w("go run ./bench/cmd/benchrun -run Ingest -out /tmp/b.md   # one of them\n")
	w("go test -run '^$' -bench BenchmarkScale -benchtime 1x ./bench/   # raw, without the report\n```\n\n")
	w("`make bench` first installs what the benchmarks need (`scripts/install-deps.sh test`: redis-server, OpenSSH server and client, the octokit webhook examples). ")
	w("Nothing leaves 127.0.0.1.\n\n")
	for _, r := range results {
		n, _, _ := strings.Cut(r.ID, "-")
		w("## %s. %s\n\n", n, r.Title)
		if r.Method != "" {
			w("**Method.** %s\n\n", r.Method)
		}
		if len(r.Figures) > 0 {
			w("| figure | value | goal | met | load |\n|---|---|---|---|---|\n")
			for _, f := range r.Figures {
				w("| %s | %s | %s | %s | %.2f |\n", esc(f.Name), esc(f.Value), esc(f.Goal), met(f.Met), f.Load)
			}
			w("\n")
		}
		for _, note := range r.Notes {
			w("- %s\n", strings.ReplaceAll(note, "\n", "\n  "))
		}
		if len(r.Notes) > 0 {
			w("\n")
		}
		w("_Took %.0f s._\n\n", r.Elapsed)
	}
	if strings.TrimSpace(analysis) != "" {
		w("%s\n", strings.TrimSpace(analysis))
	}
	return b.String()
}

func estimateMinutes(results []bench.Result) int {
	var s float64
	for _, r := range results {
		s += r.Elapsed
	}
	return max(1, int(s/60+1.5)) // plus building and start-up
}

func met(m *bool) string {
	switch {
	case m == nil:
		return ""
	case *m:
		return "yes"
	default:
		return "**no**"
	}
}

func esc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
