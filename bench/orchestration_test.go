package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
)

// The simulated cloud's fixed delays: the ideal build takes their sum.
const (
	simLaunch   = 2 * time.Second
	simSSH      = 1 * time.Second
	simSnapshot = 3 * time.Second
)

// pushPlan is one push of gens generators, each on every cloud in cloudNames.
type pushPlan struct {
	repo string
	sha  string
	body []byte
	sig  string
	gens []string
}

// preparePushes puts pushes×gens generator specs on the fake GitHub and
// returns the push deliveries that build them (each push creates its branch,
// so every spec at the commit is built).
func preparePushes(tb testing.TB, s *service, pushes, gens int, cloudNames []string) []pushPlan {
	tb.Helper()
	var cl strings.Builder
	for _, c := range cloudNames {
		fmt.Fprintf(&cl, "  %s:\n    image: debian-12\n    ssh_user: debian\n", c)
	}
	var out []pushPlan
	for p := range pushes {
		pp := pushPlan{repo: fmt.Sprintf("bench/repo%03d", p), sha: randomSHA()}
		files := map[string]string{}
		for g := range gens {
			name := fmt.Sprintf("gen%03d", g)
			files[".imagegen/"+name+".yaml"] = fmt.Sprintf("name: %s\nscript: |\n  echo building %s\nclouds:\n%s", name, name, cl.String())
			pp.gens = append(pp.gens, name)
		}
		s.gh.SetFiles(pp.repo, pp.sha, files)
		pp.body = githubtest.Push(tb, githubtest.PushOptions{Repo: pp.repo, Before: zeroSHA, After: pp.sha})
		pp.sig = githubtest.Sign([]byte(webhookSecret), pp.body)
		out = append(out, pp)
	}
	return out
}

// deliverAll posts every push at once and fails unless each is accepted.
func deliverAll(tb testing.TB, s *service, plans []pushPlan) {
	tb.Helper()
	snd := newSender(s.url, len(plans))
	var wg sync.WaitGroup
	errs := make(chan error, len(plans))
	for i, p := range plans {
		wg.Go(func() {
			code, err := snd.deliver(context.Background(), "push", fmt.Sprintf("push-%d-%s", i, p.sha[:8]), p.sig, p.body)
			if err == nil && code != http.StatusAccepted {
				err = fmt.Errorf("push %d: status %d", i, code)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// finalStatuses counts the commit statuses, over plans, that are final
// (success, failure, error), and of those, successes.
func finalStatuses(s *service, plans []pushPlan) (final, ok int) {
	for _, p := range plans {
		for _, st := range s.gh.LatestStatuses(p.repo, p.sha) {
			switch st.State {
			case "success":
				ok++
				final++
			case "failure", "error":
				final++
			}
		}
	}
	return final, ok
}

// BenchmarkOrchestration: 200 generator × cloud builds through the whole
// path (webhook → plan → build → statuses) on simulated clouds.
func BenchmarkOrchestration(b *testing.B) {
	for range b.N {
		benchOrchestration(b)
	}
}

func benchOrchestration(b *testing.B) {
	const pushes, gens = 10, 10
	cloudNames := []string{"sim-a", "sim-b"}
	builds := pushes * gens * len(cloudNames)
	res := &Result{ID: "2-orchestration", Title: "Orchestration overhead", Started: time.Now()}
	clouds := fmt.Sprintf("\n  sim-a: {type: simulated, launch_delay: %s, ssh_delay: %s, snapshot_delay: %s}\n  sim-b: {type: simulated, launch_delay: %s, ssh_delay: %s, snapshot_delay: %s}\n",
		simLaunch, simSSH, simSnapshot, simLaunch, simSSH, simSnapshot)
	// Room for every build at once, plus the delivery and plan tasks.
	s := startService(b, serviceOptions{clouds: clouds, concurrency: builds + 2*pushes, worker: true})
	plans := preparePushes(b, s, pushes, gens, cloudNames)
	ctx := context.Background()
	before, err := s.redisStats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := CPUTime()
	start := time.Now()
	deliverAll(b, s, plans)
	accepted := time.Since(start)
	var final, ok int
	err = waitUntil(2*time.Minute, 20*time.Millisecond, func() bool {
		final, ok = finalStatuses(s, plans)
		return final >= builds
	})
	wall := time.Since(start)
	cpu := CPUTime() - cpu0
	after, err2 := s.redisStats(ctx)
	if err != nil {
		b.Fatalf("%d of %d builds reported final after %s", final, builds, wall)
	}
	if err2 != nil {
		b.Fatal(err2)
	}
	if ok != builds {
		b.Fatalf("%d of %d builds succeeded", ok, builds)
	}
	rs := after.Sub(before)
	ideal := simLaunch + simSSH + simSnapshot
	ratio := wall.Seconds() / ideal.Seconds()
	perBuildCPU := (cpu + rs.CPU).Seconds() / float64(builds)
	cmds := float64(rs.Total()) / float64(builds)
	res.Method = fmt.Sprintf("%d pushes (each creating its branch, so every spec is built) of %d generators × %d simulated clouds "+
		"(launch %s, SSH %s, snapshot %s) = %d builds, posted at once to the real `POST /webhook`; one worker with concurrency %d "+
		"takes them through delivery → plan (specs read from the fake GitHub API) → build → statuses and check runs on the fake GitHub. "+
		"Wall time runs from the first POST to the last final commit status seen on the fake GitHub (polled every 20 ms). "+
		"CPU is this process (server, worker, fake GitHub, load generator: an upper bound) plus redis-server's own (INFO cpu); "+
		"Redis commands from INFO commandstats before and after.",
		pushes, gens, len(cloudNames), simLaunch, simSSH, simSnapshot, builds, builds+2*pushes)
	res.Figures = []Figure{
		Fig("ideal (the delays alone)", ideal.String()),
		Goal("wall time", fmt.Sprintf("%.2f s (%.3f × ideal)", wall.Seconds(), ratio), "≤ 1.1 × ideal", ratio <= 1.1),
		Fig("all deliveries accepted after", Ms(accepted)),
		Fig("CPU per build (imagegen process + redis)", fmt.Sprintf("%.1f ms (%.1f ms + %.1f ms)", perBuildCPU*1000,
			cpu.Seconds()*1000/float64(builds), rs.CPU.Seconds()*1000/float64(builds))),
		Fig("Redis commands per build", fmt.Sprintf("%.0f", cmds)),
		Fig("GitHub API calls per build", fmt.Sprintf("%.1f", float64(len(s.gh.Calls()))/float64(builds))),
	}
	res.Notes = append(res.Notes, "most called Redis commands: "+strings.Join(rs.Top(6), ", "))
	if bd, err := breakdown(ctx, s, plans, start, wall); err != nil {
		res.Notes = append(res.Notes, "no breakdown: "+err.Error())
	} else {
		res.Figures = append(res.Figures, bd...)
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	b.ReportMetric(ratio, "wall/ideal")
	b.ReportMetric(perBuildCPU*1000, "cpu-ms/build")
	b.ReportMetric(cmds, "redis-cmds/build")
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}

// breakdown splits the wall time by where builds spent it, from their
// records: waiting to start (delivery, plan, queue), running (the pipeline and
// its observer, against the cloud's own delays), and reporting after the end.
func breakdown(ctx context.Context, s *service, plans []pushPlan, start time.Time, wall time.Duration) ([]Figure, error) {
	var created, queued, waited, run, overPhases []time.Duration
	var lastFinished time.Time
	for _, p := range plans {
		bs, err := s.store.List(ctx, builds.ListOptions{Repo: p.repo, Limit: 500})
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			for _, c := range b.Clouds {
				created = append(created, b.Created.Sub(start))
				queued = append(queued, c.Started.Sub(start))
				waited = append(waited, c.Started.Sub(b.Created))
				run = append(run, c.Finished.Sub(c.Started))
				if c.Finished.After(lastFinished) {
					lastFinished = c.Finished
				}
				// Time in phases other than the cloud's own waits.
				var cloudTime time.Duration
				for _, ph := range c.Phases {
					switch ph.Phase {
					case builder.PhaseLaunch, builder.PhaseSnapshot, builder.PhaseStop:
						cloudTime += ph.Duration
					}
				}
				overPhases = append(overPhases, c.Finished.Sub(c.Started)-cloudTime)
			}
		}
	}
	if len(run) == 0 {
		return nil, fmt.Errorf("no build records")
	}
	return []Figure{
		Fig("from the first POST to a build's record (planned): p50 / max", Ms(Percentile(created, 50))+" / "+Ms(slices.Max(created))),
		Fig("from the first POST to a build's start: p50 / max", Ms(Percentile(queued, 50))+" / "+Ms(slices.Max(queued))),
		Fig("from a build's record to its start (enqueue, report, dequeue): p50 / max", Ms(Percentile(waited, 50))+" / "+Ms(slices.Max(waited))),
		Fig("a build's run (started → finished): p50 / max", Ms(Percentile(run, 50))+" / "+Ms(slices.Max(run))),
		Fig("of which outside the cloud's calls (keys, statuses, records, cleanup): p50 / max", Ms(Percentile(overPhases, 50))+" / "+Ms(slices.Max(overPhases))),
		Fig("last build finished → last final status", Ms(start.Add(wall).Sub(lastFinished))),
	}, nil
}
