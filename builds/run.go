package builds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
)

// Runner runs one cloud's part of a build, as its queue task asks, and
// reports it.
type Runner struct {
	d   Deps
	rep *Reporter
	// secrets are the config's (Config.Secrets), listed once: every build
	// holds them while it runs.
	secrets []secret.String
}

// NewRunner returns a Runner; it needs d.Config, d.Store and d.GitHub.
func NewRunner(d Deps) *Runner {
	d = d.withDefaults()
	return &Runner{d: d, rep: NewReporter(d), secrets: slices.Clip(d.Config.Secrets())}
}

// RunRequest is one run of a build task.
type RunRequest struct {
	Build, Cloud string
	// Password is the password the task carried for a password: ask cloud,
	// opened by the queue; PasswordErr says why it could not be opened.
	// Both are zero when the task carried none.
	Password    secret.String
	PasswordErr error
	// Attempt is this run's number, from 1.
	Attempt int
	// WillRetry says the queue runs the task again if this run fails; false
	// means this is its last attempt.
	WillRetry bool
}

func (r RunRequest) carriesPassword() bool { return !r.Password.IsZero() || r.PasswordErr != nil }

// Run runs one cloud's part of a build and reports it. A build that fails
// is a result, not an error: only a build stopped by a worker shutdown (its
// ctx canceled with cause ErrShutdown), or a report GitHub refused, returns
// an error, and is retried. An error wrapping ErrNoRetry cannot be fixed by
// a retry; one wrapping ErrDropTask ends a task that carried a password.
func (r *Runner) Run(ctx context.Context, req RunRequest) error {
	// The build waits on its cloud below ru.run for minutes: the frames
	// above that wait are kept small (see builder.RunJob).
	ru, err := r.begin(ctx, req)
	if ru == nil {
		return err
	}
	return ru.end(ru.run(ctx))
}

// begin loads the build and returns its run; nil, with what to return,
// when there is nothing to run.
func (r *Runner) begin(ctx context.Context, req RunRequest) (*run, error) {
	b, sp, err := r.d.Store.Get(ctx, req.Build)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("build %s: %w: %w", req.Build, err, ErrNoRetry)
	}
	if err != nil {
		return nil, err
	}
	rec := b.Clouds[req.Cloud]
	if rec == nil || sp == nil {
		return nil, fmt.Errorf("build %s has no cloud %q: %w", req.Build, req.Cloud, ErrNoRetry)
	}
	gh, err := r.d.GitHub.Repo(ctx, b.Installation)
	if err != nil {
		return nil, fmt.Errorf("github client: %w", err)
	}
	if rec.State.Final() {
		// Done before: a retry whose report failed, or a duplicate. Report again.
		return nil, r.rep.Report(ctx, gh, b.ID, req.Cloud)
	}
	// From here the run reads the build's meta only (reports read the
	// record afresh): its clouds' parts are not held while the build waits
	// on its cloud, for minutes, thousands at once.
	b.Clouds = nil
	return &run{Runner: r, req: req, b: b, sp: sp, gh: gh,
		log: r.d.Logger.With("build", b.ID, "generator", b.Generator, "cloud", req.Cloud, "repo", b.Repo, "sha", b.Commit)}, nil
}

// GaveUp records the cloud's part of build failed, its task having given up
// (its retries spent), and reports it. A part already over is left as it is.
func (r *Runner) GaveUp(ctx context.Context, build, cloud string, cause error) {
	b, _, err := r.d.Store.Get(ctx, build)
	if err != nil || b.Clouds[cloud] == nil || b.Clouds[cloud].State.Final() {
		return
	}
	if err := failAndReport(ctx, r.d, r.rep, b, cloud, cause); err != nil {
		r.d.Logger.Error("report a build that gave up", "build", build, "cloud", cloud, "err", err)
	}
}

// run is one run of a cloud's part of a build.
type run struct {
	*Runner
	req RunRequest
	b   *Build
	sp  *spec.Spec
	gh  RepoClient
	log *slog.Logger
}

// end makes a password-carrying task end with its last attempt, whatever
// happens: ErrDropTask deletes the task instead of archiving it with its
// sealed password.
func (ru *run) end(err error) error {
	if err != nil && ru.req.carriesPassword() && !ru.req.WillRetry {
		ru.log.Error("build task failed; dropping its password", "err", err)
		return fmt.Errorf("%w: %w", err, ErrDropTask)
	}
	return err
}

// started is what a run holds while its pipeline runs.
type started struct {
	cl     clouds.Cloud
	cred   clouds.Credentials
	redact secret.Redactor
	pr     *progress
}

func (ru *run) run(ctx context.Context) error {
	st, err := ru.start(ctx)
	if st == nil {
		return err
	}
	// Every path below stops the reporter before recording the end, so the
	// end lands last.
	defer st.pr.stop()
	res, timedOut := ru.build(ctx, st)
	return ru.finish(ctx, st, res, timedOut)
}

// start marks the run running, starts its progress reports, opens the
// cloud and removes what an earlier attempt left; nil, with what to
// return, when the run cannot go on.
func (ru *run) start(ctx context.Context) (*started, error) {
	entry := ru.d.Config.Clouds[ru.req.Cloud]
	// Asked again here: the config may have changed since the plan.
	if why := denied(ru.d.Config, ru.req.Cloud, ru.b.Repo, ru.b.Ref); entry != nil && why != "" {
		ru.log.Warn("cloud refused by its allow rule: nothing launched", "ref", ru.b.Ref, "reason", why)
		return nil, ru.fail(ctx, "", &DeniedError{why})
	}
	cred, msg, err := ru.credentials(entry)
	if err != nil {
		return nil, ru.fail(ctx, msg, err)
	}
	ru.log = ru.log.With("attempt", max(ru.req.Attempt, 1))
	if err := ru.markRunning(ctx); err != nil {
		return nil, err
	}
	// The start and the phases are reported from the side.
	pr := ru.rep.startProgress(context.WithoutCancel(ctx), ru.gh, ru.b, ru.req.Cloud, ru.log)
	pr.reportStart()
	ru.log.Info("build started")

	cl, err := entry.Open(ctx, cred)
	if err != nil {
		pr.stop()
		if clouds.IsTransient(err) && ru.req.WillRetry {
			ru.requeued(ctx)
			return nil, fmt.Errorf("open cloud: %w", err)
		}
		return nil, ru.fail(ctx, "open cloud", err)
	}
	// A previous attempt that died (a worker killed mid-build) may have left
	// resources tagged with this build: remove them before starting again.
	// Asked on every attempt, as a worker that died may not have counted one.
	ru.removeLeftovers(ctx, cl)

	// The builder redacts the script's output as it streams; the sink's
	// redactor guards the lines imagegen writes itself. Both know every
	// secret of the config and this build's password.
	return &started{cl: cl, cred: cred, redact: secret.NewRedactor(ru.secrets(cred)...), pr: pr}, nil
}

// finish records and reports how the pipeline ended.
func (ru *run) finish(ctx context.Context, st *started, res *builder.Result, timedOut bool) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrShutdown) && res.State != builder.StateSucceeded {
		// The worker is shutting down: the task is retried later.
		ru.log.Warn("build interrupted by shutdown; it will be retried", "err", res.Error)
		ru.requeued(context.WithoutCancel(ctx))
		return fmt.Errorf("interrupted by shutdown: %w", cause)
	}
	if res.State == builder.StateCanceled && timedOut {
		res.State = builder.StateFailed
		res.Error = fmt.Sprintf("timed out after %s (build.timeout): %s", ru.d.Config.Build.Timeout, res.Error)
	}
	res.Error = st.redact.Redact(res.Error)
	fctx := context.WithoutCancel(ctx)
	if err := recordResult(fctx, ru.d, ru.b, ru.req.Cloud, *res); err != nil {
		// Not recorded, not reported: the task runs again.
		return err
	}
	ru.retain(fctx, st.cl, *res) // keep: N, once the image is published
	ru.log.Info("build finished", "state", res.State, "err", res.Error)
	return ru.rep.Report(fctx, ru.gh, ru.b.ID, ru.req.Cloud)
}

// credentials returns what opening the cloud takes, or why the run cannot
// go on (msg and err, for fail).
func (ru *run) credentials(entry *clouds.Entry) (cred clouds.Credentials, msg string, err error) {
	switch {
	case entry == nil:
		return cred, "cloud not configured", fmt.Errorf("cloud %q is not in this worker's config", ru.req.Cloud)
	case !entry.AsksPassword():
		return cred, "", nil
	case !ru.req.carriesPassword():
		return cred, "no password", fmt.Errorf("cloud %q needs a password: imagegen rerun --cloud %s %s", ru.req.Cloud, ru.req.Cloud, ru.b.ID)
	case ru.req.PasswordErr != nil:
		return cred, "password", ru.req.PasswordErr
	}
	cred.Password = ru.req.Password
	return cred, "", nil
}

// markRunning records the cloud running, one attempt more.
func (ru *run) markRunning(ctx context.Context) error {
	started := time.Now().UTC()
	_, err := ru.d.Store.UpdateCloud(ctx, ru.b.ID, ru.req.Cloud, func(c *CloudRecord) {
		c.State, c.Started, c.Finished, c.Error, c.Phase = builder.StateRunning, started, time.Time{}, "", ""
		c.Attempts++
	})
	return err
}

// build runs the builder's pipeline on the run's cloud, within
// build.timeout, and returns its result, and whether the timeout ended it.
// The whole log is stored, and the progress reporter stopped, when it
// returns.
func (ru *run) build(ctx context.Context, st *started) (*builder.Result, bool) {
	obs := &observer{LogSink: ru.d.Store.NewLogSink(context.WithoutCancel(ctx), ru.b.ID, ru.req.Cloud, ru.log, st.redact), progress: st.pr}
	bctx, cancel := context.WithTimeout(ctx, ru.d.Config.Build.Timeout)
	defer cancel()
	res := builder.RunJob(bctx, ru.job(st, obs))
	obs.Close()  // the whole log is stored before the result is
	st.pr.stop() // and no progress report is made after it
	return res, errors.Is(bctx.Err(), context.DeadlineExceeded)
}

// job is the builder's job for the run.
func (ru *run) job(st *started, obs builder.Observer) *builder.Job {
	return &builder.Job{
		Build:          ru.b.ID,
		CloudName:      ru.req.Cloud,
		Cloud:          st.cl,
		Spec:           ru.sp,
		Repo:           ru.b.Repo,
		Commit:         ru.b.Commit,
		Branch:         branchOf(ru.b.Ref),
		Provenance:     ru.provenance(),
		SSHTimeout:     ru.d.Config.Build.SSHTimeout,
		CleanupTimeout: ru.d.Config.Build.CleanupTimeout,
		Secrets:        ru.secrets(st.cred),
		Observer:       obs,
	}
}

// secrets are what the build's log must never show: every secret of the
// config and the build's own password.
func (ru *run) secrets(cred clouds.Credentials) []secret.String {
	if cred.Password.IsZero() {
		return ru.Runner.secrets // shared by every build: never appended to in place (clipped)
	}
	return append(ru.Runner.secrets, cred.Password)
}

// fail records the run failed (msg: what failed; "": err says it all) and
// reports it.
func (ru *run) fail(ctx context.Context, msg string, err error) error {
	why := err.Error()
	if msg != "" {
		ru.log.Error(msg, "err", err)
		why = msg + ": " + why
	}
	if rerr := recordResult(ctx, ru.d, ru.b, ru.req.Cloud, builder.Result{Cloud: ru.req.Cloud, State: builder.StateFailed, Error: why, Finished: time.Now().UTC()}); rerr != nil {
		return rerr
	}
	return ru.rep.Report(ctx, ru.gh, ru.b.ID, ru.req.Cloud)
}

// requeued puts the cloud back to queued (its task will run again).
func (ru *run) requeued(ctx context.Context) {
	if _, err := ru.d.Store.UpdateCloud(ctx, ru.b.ID, ru.req.Cloud, func(c *CloudRecord) {
		c.State, c.Phase = builder.StateQueued, ""
	}); err != nil {
		ru.log.Error("record requeue", "err", err)
	}
}

// removeLeftovers removes what earlier attempts of the build left on cl.
func (ru *run) removeLeftovers(ctx context.Context, cl clouds.Cloud) {
	rs, err := cl.Leftovers(ctx, ru.b.ID)
	if err != nil {
		ru.log.Warn("list leftovers of a previous attempt", "err", err)
		return
	}
	for _, r := range rs {
		if err := cl.Remove(ctx, r); err != nil {
			ru.log.Warn("remove leftover", "kind", r.Kind, "id", r.ID, "err", err)
			continue
		}
		ru.log.Info("removed leftover of a previous attempt", "kind", r.Kind, "id", r.ID)
	}
}

// observer is what the builder reports to: log lines go to the build's
// LogSink, phases to its progress reporter.
type observer struct {
	LogSink
	// progress reports the phases on the commit (nil: they are not reported)
	progress *progress
}

func (o *observer) Phase(cloud string, p builder.Phase, at time.Time) {
	// Progress is a courtesy: handed to the build's reporter, never waited on.
	if o.progress != nil {
		o.progress.setPhase(p)
	}
}
