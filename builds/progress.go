package builds

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/imagegen/imagegen/builder"
)

// progress reports a running build's progress — its start, then each phase
// — from its own goroutine, so the pipeline never waits on Redis or GitHub
// for a courtesy status. The goroutine runs only while there is news to
// report: 10 000 builds waiting on their clouds hold none (its stack was
// some 7 KiB a build). It keeps only the latest news: a phase that passed
// before it could be reported is skipped. stop waits for the report in
// flight (and the start's, if still to be made) and drops the phases not
// reported, so the final report, made after stop, lands last.
type progress struct {
	rep   *Reporter
	ctx   context.Context
	gh    RepoClient
	b     *Build // the build's meta: its statuses' context and link
	cloud string
	log   *slog.Logger

	mu       sync.Mutex
	start    bool          // the start is still to be reported
	phase    builder.Phase // the latest phase not yet reported ("": none)
	running  bool          // the goroutine runs
	stopping bool          // stop was called: no goroutine starts any more
	kick     chan struct{} // news is waiting
	done     chan struct{} // closed by stop
	loops    sync.WaitGroup
	once     sync.Once
}

// progressSettle is how long progress waits after news before reporting it:
// long enough to fold a build's first phases into its start's report, and to
// keep the reports of builds started together out of the moment they start.
const progressSettle = 500 * time.Millisecond

// progressTimeout bounds a progress status update.
const progressTimeout = 10 * time.Second

// startProgress starts the reporter of one cloud's run of build b.
func (r *Reporter) startProgress(ctx context.Context, gh RepoClient, b *Build, cloud string, log *slog.Logger) *progress {
	return &progress{rep: r, ctx: ctx, gh: gh, b: b, cloud: cloud, log: log,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// reportStart asks for the run's start to be reported: the status and the
// check run (now in progress).
func (pr *progress) reportStart() {
	pr.mu.Lock()
	pr.start = true
	pr.mu.Unlock()
	pr.signal()
}

// setPhase asks for phase p to be recorded and shown on the commit,
// replacing any phase not reported yet.
func (pr *progress) setPhase(p builder.Phase) {
	pr.mu.Lock()
	pr.phase = p
	pr.mu.Unlock()
	pr.signal()
}

func (pr *progress) signal() {
	pr.mu.Lock()
	if pr.stopping {
		pr.mu.Unlock()
		return
	}
	if !pr.running {
		pr.running = true
		pr.loops.Add(1)
		go pr.loop()
	}
	pr.mu.Unlock()
	select {
	case pr.kick <- struct{}{}:
	default:
	}
}

// stop ends the reporter once the report in flight, if any, and the start's
// have landed; phases not reported yet are dropped (the final report
// supersedes them). It may be called more than once.
func (pr *progress) stop() {
	pr.once.Do(func() {
		pr.mu.Lock()
		pr.stopping = true
		pr.mu.Unlock()
		close(pr.done)
	})
	pr.loops.Wait()
	pr.flushStart()
}

// loop reports the news until there is none left, then returns (signal
// starts it again).
func (pr *progress) loop() {
	defer pr.loops.Done()
	for {
		select {
		case <-pr.done:
			return
		case <-pr.kick:
		}
		// Let the news settle: the phases at a build's start come within
		// milliseconds (keys, launching), and so do those between a script's
		// end and the snapshot; one report then stands for all of them.
		settle := time.NewTimer(progressSettle)
		select {
		case <-pr.done: // stopped while news waited: the end supersedes it
			settle.Stop()
			return
		case <-settle.C:
		}
		pr.mu.Lock()
		start, phase := pr.start, pr.phase
		pr.start, pr.phase = false, ""
		pr.mu.Unlock()
		pr.post(start, phase)
		pr.mu.Lock()
		if !pr.start && pr.phase == "" {
			pr.running = false
			pr.mu.Unlock()
			return
		}
		pr.mu.Unlock()
	}
}

// flushStart reports the start if it has not been yet, even for a build
// that ends at once: a commit's statuses then always begin pending, before
// the end is reported. Phases not reported yet are dropped.
func (pr *progress) flushStart() {
	pr.mu.Lock()
	start := pr.start
	pr.start = false
	pr.mu.Unlock()
	if start {
		pr.post(true, "")
	}
}

// post records the phase on the cloud's record and reports it: with the
// start, as part of the full report (status and check run, under the
// build's report lock); otherwise as the cloud's status alone.
func (pr *progress) post(start bool, phase builder.Phase) {
	// A failure here must not fail the build, nor hold it up long.
	ctx, cancel := context.WithTimeout(pr.ctx, progressTimeout)
	defer cancel()
	var rec *CloudRecord
	if phase != "" {
		var err error
		if rec, err = pr.rep.d.Store.UpdateCloud(ctx, pr.b.ID, pr.cloud, func(c *CloudRecord) {
			c.Phase = phase
			if c.State == builder.StateRunning && isTestPhase(phase) {
				c.State = builder.StateTesting // the image is made; not yet good
			}
		}); err != nil {
			pr.log.Warn("record phase", "phase", phase, "err", err)
		}
	}
	switch {
	case start:
		if err := pr.rep.Report(ctx, pr.gh, pr.b.ID, pr.cloud); err != nil {
			pr.log.Warn("report start", "err", err) // the end is what must be reported
		}
	case rec != nil && rec.State.Active() && phase != builder.PhaseDone && phase != builder.PhaseCleanup:
		// The record as written is the status's source: no second read.
		st := pr.rep.status(pr.b, rec)
		if err := pr.gh.SetStatus(ctx, pr.b.Repo, pr.b.Commit, st); err != nil {
			pr.log.Warn("report phase", "phase", phase, "err", err)
		}
	}
}
