package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
)

var noPassword secret.String

// RunBuild runs one cloud's part of a build and reports it. A build that
// fails is a result, not a task error: only a build stopped by a worker
// shutdown, or a report GitHub refused, returns an error (and is retried).
func (s *Service) RunBuild(ctx context.Context, t BuildTask) error {
	b, sp, err := s.store.Get(ctx, t.Build)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("build %s: %w: %w", t.Build, err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	rec := b.Clouds[t.Cloud]
	if rec == nil || sp == nil {
		return fmt.Errorf("build %s has no cloud %q: %w", t.Build, t.Cloud, asynq.SkipRetry)
	}
	log := s.log.With("build", b.ID, "generator", b.Generator, "cloud", t.Cloud, "repo", b.Repo, "sha", b.Commit)
	gh, err := s.gh.Repo(ctx, b.Installation)
	if err != nil {
		return fmt.Errorf("github client: %w", err)
	}
	if rec.State.Final() {
		// Done before: a retry whose report failed, or a duplicate. Report again.
		return s.report(ctx, gh, b.ID, t.Cloud)
	}
	// Password-carrying tasks end here, whatever happens: RevokeTask deletes
	// the task instead of archiving it with its sealed password.
	end := func(err error) error {
		if err != nil && len(t.Password) > 0 && s.finalAttempt(ctx) {
			log.Error("build task failed; dropping its password", "err", err)
			return fmt.Errorf("%w: %w", err, asynq.RevokeTask)
		}
		return err
	}

	entry := s.cfg.Clouds[t.Cloud]
	var cred clouds.Credentials
	fail := func(msg string, err error) error {
		log.Error(msg, "err", err)
		s.finish(ctx, b.ID, t.Cloud, builder.Result{Cloud: t.Cloud, State: builder.StateFailed, Error: fmt.Sprintf("%s: %v", msg, err), Finished: time.Now().UTC()})
		return end(s.report(ctx, gh, b.ID, t.Cloud))
	}
	switch {
	case entry == nil:
		return fail("cloud not configured", fmt.Errorf("cloud %q is not in this worker's config", t.Cloud))
	case entry.AsksPassword() && len(t.Password) == 0:
		return fail("no password", fmt.Errorf("cloud %q needs a password: imagegen rerun --cloud %s %s", t.Cloud, t.Cloud, b.ID))
	case entry.AsksPassword():
		pw, err := s.sealer.Open(t.Password, sealContext(b.ID, t.Cloud))
		if err != nil {
			return fail("password", err)
		}
		cred.Password = pw
	}

	attempt := 1
	if n, ok := asynq.GetRetryCount(ctx); ok {
		attempt = n + 1
	}
	log = log.With("attempt", attempt)
	started := time.Now().UTC()
	if _, err := s.store.UpdateCloud(ctx, b.ID, t.Cloud, func(c *CloudRecord) {
		c.State, c.Started, c.Finished, c.Error, c.Phase = builder.StateRunning, started, time.Time{}, "", ""
		c.Attempts++
	}); err != nil {
		return end(err)
	}
	// The start and the phases are reported from the side; every path below
	// stops the reporter before recording the end, so the end lands last.
	pr := s.startProgress(context.WithoutCancel(ctx), gh, b, t.Cloud, log)
	defer pr.stop()
	pr.reportStart()
	log.Info("build started")

	cl, err := entry.Open(ctx, cred)
	if err != nil {
		pr.stop()
		if clouds.IsTransient(err) && !s.finalAttempt(ctx) {
			s.requeued(ctx, b.ID, t.Cloud)
			return end(fmt.Errorf("open cloud: %w", err))
		}
		return fail("open cloud", err)
	}
	// A previous attempt that died (a worker killed mid-build) may have left
	// resources tagged with this build: remove them before starting again.
	// Asked on every attempt, as a worker that died may not have counted one.
	s.removeLeftovers(ctx, cl, b.ID, log)

	// The builder redacts already; the sink's redactor is a second guard,
	// for the password this service handed over.
	redact := secret.NewRedactor(cred.Password)
	obs := &observer{LogSink: s.store.NewLogSink(context.WithoutCancel(ctx), b.ID, t.Cloud, log, redact), progress: pr}
	bctx, cancel := context.WithTimeout(ctx, s.cfg.Build.Timeout)
	defer cancel()
	res := builder.Run(bctx, builder.Job{
		Build:          b.ID,
		CloudName:      t.Cloud,
		Cloud:          cl,
		Spec:           sp,
		Repo:           b.Repo,
		Commit:         b.Commit,
		SSHTimeout:     s.cfg.Build.SSHTimeout,
		CleanupTimeout: s.cfg.Build.CleanupTimeout,
		Secrets:        []secret.String{cred.Password},
		Observer:       obs,
	})
	obs.Close() // the whole log is stored before the result is
	pr.stop()   // and no progress report is made after it
	if s.stopping.Err() != nil && res.State != builder.StateSucceeded {
		// The worker is shutting down: the task is retried later.
		log.Warn("build interrupted by shutdown; it will be retried", "err", res.Error)
		s.requeued(context.WithoutCancel(ctx), b.ID, t.Cloud)
		return end(fmt.Errorf("interrupted by shutdown: %w", s.stopping.Err()))
	}
	if res.State == builder.StateCanceled && errors.Is(bctx.Err(), context.DeadlineExceeded) {
		res.State = builder.StateFailed
		res.Error = fmt.Sprintf("timed out after %s (build.timeout): %s", s.cfg.Build.Timeout, res.Error)
	}
	res.Error = redact.Redact(res.Error)
	fctx := context.WithoutCancel(ctx)
	s.finishWith(fctx, b, t.Cloud, res)
	log.Info("build finished", "state", res.State, "err", res.Error)
	return end(s.report(fctx, gh, b.ID, t.Cloud))
}

func (s *Service) finalAttempt(ctx context.Context) bool {
	n, ok1 := asynq.GetRetryCount(ctx)
	max, ok2 := asynq.GetMaxRetry(ctx)
	return !ok1 || !ok2 || n >= max
}

func (s *Service) removeLeftovers(ctx context.Context, cl clouds.Cloud, build string, log *slog.Logger) {
	rs, err := cl.Leftovers(ctx, build)
	if err != nil {
		log.Warn("list leftovers of a previous attempt", "err", err)
		return
	}
	for _, r := range rs {
		if err := cl.Remove(ctx, r); err != nil {
			log.Warn("remove leftover", "kind", r.Kind, "id", r.ID, "err", err)
			continue
		}
		log.Info("removed leftover of a previous attempt", "kind", r.Kind, "id", r.ID)
	}
}

// requeued puts a cloud back to queued (its task will run again).
func (s *Service) requeued(ctx context.Context, build, cloud string) {
	if _, err := s.store.UpdateCloud(ctx, build, cloud, func(c *CloudRecord) {
		c.State, c.Phase = builder.StateQueued, ""
	}); err != nil {
		s.log.Error("record requeue", "build", build, "cloud", cloud, "err", err)
	}
}

// finish records a cloud's result, its image in the lineage, and metrics.
func (s *Service) finish(ctx context.Context, build, cloud string, res builder.Result) {
	s.finishWith(ctx, &Build{ID: build}, cloud, res)
}

// finishWith is finish for a build whose meta the caller has read (its repo,
// generator, commit and digest go into the lineage); with only its ID, the
// meta is read when an image needs it.
func (s *Service) finishWith(ctx context.Context, meta *Build, cloud string, res builder.Result) {
	build := meta.ID
	now := time.Now().UTC()
	rec, err := s.store.UpdateCloud(ctx, build, cloud, func(c *CloudRecord) {
		c.State = res.State
		c.Error = res.Error
		c.ExitCode = res.ExitCode
		c.Phase = ""
		if res.BaseImage != "" {
			c.BaseImage = res.BaseImage
		}
		if res.Image != nil {
			c.ImageID, c.ImageName = res.Image.ID, res.Image.Name
		}
		if c.Started.IsZero() {
			c.Started = orNow(res.Started, now)
		}
		c.Finished = orNow(res.Finished, now)
		c.Phases = res.Phases
		c.Leftovers = len(res.Leftovers)
	})
	if err != nil {
		s.log.Error("record result", "build", build, "cloud", cloud, "err", err)
		return
	}
	if s.metrics != nil {
		s.metrics.Builds.WithLabelValues(cloud, string(rec.State)).Inc()
		s.metrics.Duration.WithLabelValues(cloud, string(rec.State)).Observe(rec.Duration(now).Seconds())
	}
	if rec.State == builder.StateSucceeded && rec.ImageID != "" {
		b := meta
		if b.Repo == "" {
			var err error
			if b, _, err = s.store.Get(ctx, build); err != nil {
				s.log.Error("record image", "build", build, "cloud", cloud, "err", err)
				return
			}
		}
		if err := s.store.AddImage(ctx, LineageEntry{
			Build: build, Repo: b.Repo, Generator: b.Generator, Cloud: cloud, Commit: b.Commit, Digest: b.Digest,
			BaseImage: rec.BaseImage, ImageID: rec.ImageID, ImageName: rec.ImageName, Created: rec.Finished,
		}); err != nil {
			s.log.Error("record image", "build", build, "cloud", cloud, "err", err)
		}
	}
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t.UTC()
}

// failCloud marks a cloud failed after its task gave up, and reports it.
func (s *Service) failCloud(ctx context.Context, build, cloud string, cause error) {
	b, _, err := s.store.Get(ctx, build)
	if err != nil || b.Clouds[cloud] == nil || b.Clouds[cloud].State.Final() {
		return
	}
	s.finish(ctx, build, cloud, builder.Result{Cloud: cloud, State: builder.StateFailed, Error: cause.Error(), ExitCode: -1})
	gh, err := s.gh.Repo(ctx, b.Installation)
	if err == nil {
		err = s.report(ctx, gh, build, cloud)
	}
	if err != nil {
		s.log.Error("report a build that gave up", "build", build, "cloud", cloud, "err", err)
	}
}

// report sets the statuses of the given clouds and brings the check run up
// to date, from one read of the record made under the build's report lock.
// Reports are serialized across workers and plans, and each reads the record
// after the one before it landed, so the last to land shows the newest state:
// a plan's "queued" or a start's "running" never lands after a final status,
// and when clouds finish at once the check run's last writer is the newest.
func (s *Service) report(ctx context.Context, gh RepoClient, id string, cloudNames ...string) error {
	unlock, err := s.store.Lock(ctx, "report:"+id, time.Minute)
	if err != nil {
		return err
	}
	defer unlock()
	b, _, err := s.store.Get(ctx, id)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range cloudNames {
		if c := b.Clouds[name]; c != nil {
			if err := gh.SetStatus(ctx, b.Repo, b.Commit, cloudStatus(b, c, s.cfg.BaseURL, s.buildURL(b.ID))); err != nil {
				errs = append(errs, fmt.Errorf("status %s: %w", name, err))
			}
		}
	}
	if gh.CheckRuns() {
		errs = append(errs, s.reportCheckRun(ctx, gh, b))
	}
	return errors.Join(errs...)
}

// reportCheckRun creates or updates the build's check run; the caller holds
// the report lock.
func (s *Service) reportCheckRun(ctx context.Context, gh RepoClient, b *Build) error {
	cr := RenderCheckRun(b, s.cfg.BaseURL, s.buildURL(b.ID), time.Now().UTC())
	if b.CheckRunID != 0 {
		if err := gh.UpdateCheckRun(ctx, b.Repo, b.CheckRunID, cr); err != nil {
			return fmt.Errorf("update check run: %w", err)
		}
		return nil
	}
	crID, found := int64(0), false
	if f, ok := gh.(CheckRunFinder); ok {
		var err error
		if crID, found, err = f.FindCheckRun(ctx, b.Repo, b.Commit, cr.Name, cr.ExternalID); err != nil {
			return fmt.Errorf("find check run: %w", err)
		}
	}
	var errs []error
	if found {
		// Made by an attempt that died before recording it: adopt it.
		if err := gh.UpdateCheckRun(ctx, b.Repo, crID, cr); err != nil {
			errs = append(errs, fmt.Errorf("update check run: %w", err))
		}
	} else {
		var err error
		if crID, err = gh.CreateCheckRun(ctx, b.Repo, cr); err != nil {
			return fmt.Errorf("create check run: %w", err)
		}
	}
	if err := s.store.UpdateMeta(ctx, b.ID, func(m *Build) { m.CheckRunID = crID }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// progressTimeout bounds a progress status update.
const progressTimeout = 10 * time.Second

// observer is what the builder reports to: log lines go to the build's
// LogSink, phases to its progress reporter.
type observer struct {
	*LogSink
	// progress reports the phases on the commit (nil: they are not reported)
	progress *progress
}

func (o *observer) Phase(cloud string, p builder.Phase, at time.Time) {
	// Progress is a courtesy: handed to the build's reporter, never waited on.
	if o.progress != nil {
		o.progress.setPhase(p)
	}
}

// RerunRequest asks for a build to run again.
type RerunRequest struct {
	// Clouds to re-run; empty means every cloud of the build (for the API) or
	// every cloud that needs no password (with SkipPasswordClouds).
	Clouds []string
	// Passwords for the password: ask clouds among them.
	Passwords map[string]secret.String
	// SkipPasswordClouds leaves out the clouds that ask for a password (a
	// check run's "Re-run" button cannot bring one).
	SkipPasswordClouds bool
	// Key, when set, names the request (a webhook delivery's id): the new
	// build's id derives from it and the old build's, so the same request
	// retried makes its build once.
	Key string
}

// rerunID is the id of the build a keyed re-run of build old makes.
func rerunID(key, old string) string { return planID("rerun\x00"+key, old) }

// RerunCommit serves a check suite's "Re-run all checks": it re-runs the
// newest build of each generator made for commit sha of repo (among the
// repo's 500 newest builds), leaving out the clouds that ask for a password.
// key names the request (the delivery): retried, it re-runs nothing twice.
// It returns the new builds' ids.
func (s *Service) RerunCommit(ctx context.Context, repo, sha, key string) ([]string, error) {
	bs, err := s.store.List(ctx, ListOptions{Repo: repo, Limit: 500})
	if err != nil {
		return nil, err
	}
	done := map[string]bool{} // generators seen, newest build first
	var ids []string
	for _, b := range bs {
		if b.Commit != sha || done[b.Generator] {
			continue
		}
		done[b.Generator] = true
		if b.RerunOf != "" && b.ID == rerunID(key, b.RerunOf) {
			// This request's own re-run, made before it was retried.
			ids = append(ids, b.ID)
			continue
		}
		id, err := s.Rerun(ctx, b.ID, RerunRequest{SkipPasswordClouds: true, Key: key})
		var rerr *RequestError
		switch {
		case errors.As(err, &rerr):
			s.log.Info("check suite re-run: build not re-run", "build", b.ID, "reason", rerr.Msg)
			continue
		case err != nil:
			return ids, err
		}
		if id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// RequestError is a re-run request that cannot be served as asked.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

// Rerun records a new build of the same generator at the same commit, for the
// asked clouds, and enqueues them; passwords travel sealed in their tasks
// and are stored nowhere. It returns the new build's id ("" when nothing was
// left to re-run).
func (s *Service) Rerun(ctx context.Context, id string, req RerunRequest) (string, error) {
	old, sp, err := s.store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if sp == nil {
		return "", fmt.Errorf("build %s has no stored spec", id)
	}
	names := req.Clouds
	if len(names) == 0 {
		names = old.CloudNames()
	}
	for name := range req.Passwords {
		if !slices.Contains(names, name) {
			return "", &RequestError{fmt.Sprintf("a password was given for cloud %q, which is not re-run", name)}
		}
	}
	var picked []string
	var missing []string
	for _, name := range names {
		if _, ok := sp.Clouds[name]; !ok || old.Clouds[name] == nil {
			return "", &RequestError{fmt.Sprintf("build %s has no cloud %q (it has: %s)", id, name, strings.Join(old.CloudNames(), ", "))}
		}
		entry := s.cfg.Clouds[name]
		if entry == nil {
			return "", &RequestError{fmt.Sprintf("cloud %q is not in this server's config", name)}
		}
		if entry.AsksPassword() {
			if req.SkipPasswordClouds {
				continue
			}
			if req.Passwords[name].IsZero() {
				missing = append(missing, name)
				continue
			}
		} else if !req.Passwords[name].IsZero() {
			return "", &RequestError{fmt.Sprintf("cloud %q does not ask for a password", name)}
		}
		picked = append(picked, name)
	}
	if len(missing) > 0 {
		return "", &RequestError{fmt.Sprintf("cloud(s) %s need a password (\"passwords\": {\"%s\": \"...\"})", strings.Join(missing, ", "), missing[0])}
	}
	if len(picked) == 0 {
		return "", nil
	}
	now := time.Now().UTC()
	nid := NewID()
	if req.Key != "" {
		nid = rerunID(req.Key, old.ID)
	}
	nb := &Build{
		ID: nid, Repo: old.Repo, Commit: old.Commit, Ref: old.Ref, Generator: old.Generator,
		SpecFile: old.SpecFile, Digest: old.Digest, Created: now, RerunOf: old.ID,
		Installation: old.Installation, Clouds: map[string]*CloudRecord{},
	}
	for _, name := range picked {
		nb.Clouds[name] = &CloudRecord{Cloud: name, State: builder.StateQueued, BaseImage: sp.Clouds[name].Image,
			Queued: now, AsksPassword: s.cfg.Clouds[name].AsksPassword()}
	}
	// Not created: the same keyed request ran before; what follows is
	// idempotent (task ids), so its tasks are queued if they were not.
	if _, err := s.store.Create(ctx, nb, sp); err != nil {
		return "", err
	}
	for _, name := range picked {
		// The old build's waiting cloud is done with: it now lives in the new build.
		if old.Clouds[name].State == builder.StateWaiting {
			if _, err := s.store.UpdateCloud(ctx, old.ID, name, func(c *CloudRecord) {
				c.State, c.Error, c.Finished = builder.StateCanceled, "re-run as build "+nb.ID, now
			}); err != nil {
				return "", err
			}
		}
		if err := s.enqueueBuild(ctx, nb.ID, name, req.Passwords[name]); err != nil {
			return "", err
		}
	}
	s.log.Info("re-run enqueued", "build", nb.ID, "rerun_of", old.ID, "generator", nb.Generator, "repo", nb.Repo, "sha", nb.Commit, "clouds", picked)
	return nb.ID, nil
}
