package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/sshexec"
)

// Defaults for Job's zero values.
const (
	DefaultSSHTimeout     = clouds.DefaultSSHTimeout // 15 min
	DefaultCleanupTimeout = 10 * time.Minute
)

// ImageName is the new image's name: <generator>-<yyyymmdd-hhmm>-<short sha>,
// in UTC; the short sha is the commit's first 7 characters, "local" without one.
func ImageName(generator string, t time.Time, commit string) string {
	sha := "local"
	if commit != "" {
		sha = commit[:min(7, len(commit))]
	}
	return fmt.Sprintf("%s-%s-%s", generator, t.UTC().Format("20060102-1504"), sha)
}

// RunAll runs jobs in parallel and returns their results in jobs' order; one
// failing does not stop the others.
func RunAll(ctx context.Context, jobs []Job) []Result {
	results := make([]Result, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { results[i] = Run(ctx, j) })
	}
	wg.Wait()
	return results
}

// Run runs one generator on one cloud and always cleans up what it made,
// in reverse order, on a fresh context bounded by job.CleanupTimeout. It
// never panics: a panic in a step or driver becomes a failed Result.
func Run(ctx context.Context, job Job) Result {
	return *RunJob(ctx, &job)
}

// RunJob is Run for a job the caller holds by pointer; the result it
// returns is the run's own. A build waits on its cloud for minutes at the
// bottom of this call, so the frames above that wait are kept small (the
// job, the result and the steps' temporaries live on the heap or in frames
// that have returned): a goroutine's stack shrinks, at a collection, only
// while it uses less than a quarter of it, and a worker holds thousands of
// these stacks at once.
func RunJob(ctx context.Context, job *Job) *Result {
	p := newPipeline(job)
	p.safeRun(ctx)
	return &p.res
}

func newPipeline(job *Job) *pipeline {
	p := &pipeline{job: *job, now: time.Now}
	if p.job.SSHTimeout <= 0 {
		p.job.SSHTimeout = DefaultSSHTimeout
	}
	if p.job.CleanupTimeout <= 0 {
		p.job.CleanupTimeout = DefaultCleanupTimeout
	}
	p.log = &buildLog{cloud: p.job.CloudName, observer: p.job.Observer, redact: secret.NewRedactor(p.job.Secrets...), now: p.now}
	p.slog = p.log.logger(StreamImagegen)
	return p
}

// safeRun is the last line of defence for "never panics": steps and cleanups
// are guarded one by one; this catches a panic in the pipeline itself.
func (p *pipeline) safeRun(ctx context.Context) {
	defer p.recoverRun()
	p.run(ctx)
}

// recoverRun turns a panic in the pipeline into a failed p.res.
func (p *pipeline) recoverRun() {
	if v := recover(); v != nil {
		r := &p.res
		r.State, r.Finished = StateFailed, p.now()
		r.Err = fmt.Errorf("internal error: panic: %v", v)
		r.Error = r.Err.Error()
	}
}

// pipeline is one Run: the job, its log, and the typed state its steps share.
type pipeline struct {
	job  Job
	now  func() time.Time
	log  *buildLog
	slog *slog.Logger
	res  Result

	// State the steps fill, in order.
	clientSigner  ssh.Signer
	authorizedKey string
	hostKey       clouds.HostKey
	inst          clouds.Instance
	client        *sshexec.Client
	imageName     string
	img           clouds.Image
	imageReady    bool // Snapshot returned: the image is usable
	succeeded     bool // every step ran: cleanup keeps the image
	baseImage     string

	// The test stage's (test.go).
	testInst   clouds.Instance
	testClient *sshexec.Client
	keepImage  bool // the test failed and keep_failed keeps the image
}

// step is one stage of the pipeline. cleanup undoes what run made and runs
// even when run failed (it made part of it, or was canceled mid-way).
type step struct {
	phase   Phase
	run     func(ctx context.Context) error
	cleanup func(ctx context.Context) error // may be nil
}

func (p *pipeline) steps() []step {
	var steps []step
	images := p.job.Cloud.Features().Images
	if p.job.Spec.Clouds[p.job.CloudName].Filter != nil && images {
		steps = append(steps, step{PhaseResolve, p.resolveBase, nil})
	}
	if !images && p.job.Spec.Test != "" {
		p.slog.Info("this cloud makes no image: the spec's test (test:) does not run here")
	}
	steps = append(steps, []step{
		{PhaseKey, p.generateKeys, nil},
		{PhaseLaunch, p.launch, p.terminate},
		{PhaseSSH, p.waitSSH, p.closeSSH},
		{PhaseScript, p.runScript, nil},
		{PhaseManifest, p.collectManifest, nil},
	}...)
	if images {
		steps = append(steps,
			step{PhaseStop, p.stop, nil},
			step{PhaseSnapshot, p.snapshot, p.deleteImage},
		)
		if p.job.Spec.Test != "" {
			steps = append(steps, p.testSteps()...)
		}
	}
	return steps
}

// run runs the steps and then the cleanups of those that ran, and leaves
// the result in p.res. Its frame is on the stack of every waiting build:
// the work before and after the steps is in functions of its own.
func (p *pipeline) run(ctx context.Context) {
	if err := p.begin(); err != nil {
		p.finish(ctx, err)
		return
	}
	steps := p.steps()
	done, err := p.runSteps(ctx, steps)
	p.cleanUp(ctx, steps, done, err)
}

// begin starts the result and checks the job.
func (p *pipeline) begin() error {
	job := &p.job
	p.res = Result{Cloud: job.CloudName, State: StateRunning, ExitCode: -1, Started: p.now()}
	if job.Spec != nil {
		p.baseImage = job.Spec.Clouds[job.CloudName].Image
		p.res.BaseImage = p.baseImage
	}
	if err := p.check(); err != nil {
		return err
	}
	p.imageName = ImageName(job.Spec.Name, p.res.Started, job.Commit)
	p.slog.Info("building", "generator", job.Spec.Name, "cloud", job.CloudName, "build", job.Build, "image", p.imageName)
	return nil
}

// runSteps runs steps in order until one fails or ctx ends; done is how
// many were started (each gets its cleanup).
func (p *pipeline) runSteps(ctx context.Context, steps []step) (done int, err error) {
	for i := range steps {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		done++
		if err := p.runPhase(ctx, &steps[i]); err != nil {
			return done, stepError(steps[i].phase, err)
		}
	}
	return done, nil
}

func stepError(ph Phase, err error) error { return fmt.Errorf("%s: %w", ph, err) }

// cleanUp runs the cleanups of the done steps, newest first, on a fresh
// context, and finishes the result.
func (p *pipeline) cleanUp(ctx context.Context, steps []step, done int, err error) {
	job := &p.job
	if err == nil {
		p.succeeded = true
	}

	// Cleanup must outlive a canceled build: a fresh context, its own timeout.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), job.CleanupTimeout)
	defer cancel()
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		p.slog.Warn("build canceled: cleaning up")
	case ctx.Err() != nil:
		p.slog.Warn("build timed out: cleaning up")
	}
	start := p.now()
	p.log.phase(PhaseCleanup, start)
	var cerrs []error
	for i := done - 1; i >= 0; i-- {
		s := steps[i]
		if s.cleanup == nil {
			continue
		}
		if cerr := p.guard(cctx, s.cleanup); cerr != nil {
			p.slog.Error("cleanup failed", "step", string(s.phase), "err", cerr)
			cerrs = append(cerrs, fmt.Errorf("clean up after %s: %w", s.phase, cerr))
		}
	}
	p.res.Phases = append(p.res.Phases, PhaseTiming{Phase: PhaseCleanup, Started: start, Duration: p.now().Sub(start)})
	switch {
	case err == nil && len(cerrs) > 0:
		// The image is made; what was left behind is reported, and the sweep removes it.
		p.slog.Warn("the image is made, but cleanup left resources behind", "leftovers", len(p.res.Leftovers))
	case err != nil && len(cerrs) > 0:
		err = errors.Join(append([]error{err}, cerrs...)...)
	}
	p.finish(ctx, err)
}

// check refuses a job that cannot run, rather than panicking on it.
func (p *pipeline) check() error {
	switch {
	case p.job.Cloud == nil:
		return errors.New("no cloud given")
	case p.job.Spec == nil:
		return errors.New("no generator spec given")
	}
	if _, ok := p.job.Spec.Clouds[p.job.CloudName]; !ok {
		return fmt.Errorf("generator %q has no settings for cloud %q", p.job.Spec.Name, p.job.CloudName)
	}
	return nil
}

func (p *pipeline) runPhase(ctx context.Context, s *step) error {
	start := p.now()
	p.log.phase(s.phase, start)
	err := p.guard(ctx, s.run)
	p.res.Phases = append(p.res.Phases, PhaseTiming{Phase: s.phase, Started: start, Duration: p.now().Sub(start)})
	return err
}

// guard turns a panic in a step or a driver into an error.
func (p *pipeline) guard(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.slog.Error("internal error", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: panic: %v", r)
		}
	}()
	return f(ctx)
}

// finish ends p.res: its state, image, and error, redacted.
func (p *pipeline) finish(ctx context.Context, err error) {
	r := &p.res
	r.Finished = p.now()
	switch {
	case err == nil:
		r.State = StateSucceeded
		if p.imageReady {
			img := p.img
			r.Image = &img
		}
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		r.State = StateCanceled
		r.Err = err
	default:
		r.State = StateFailed
		r.Err = err
	}
	if err != nil && p.keepImage && p.imageReady {
		// Kept on purpose: the record names it, so the sweep leaves it.
		img := p.img
		r.Image = &img
	}
	if r.Err != nil {
		r.Error = p.log.redact.Redact(r.Err.Error())
		for i, l := range r.LogTail {
			r.LogTail[i] = p.log.redact.Redact(l)
		}
		p.slog.Error("build "+string(r.State), "err", r.Error)
	} else {
		p.slog.Info("build succeeded", "duration", r.Finished.Sub(r.Started).Round(time.Second).String())
	}
	p.log.phase(PhaseDone, r.Finished)
}

func (p *pipeline) generateKeys(context.Context) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if p.clientSigner, err = ssh.NewSignerFromKey(priv); err != nil {
		return err
	}
	p.authorizedKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(p.clientSigner.PublicKey())))

	_, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(hpriv, "")
	if err != nil {
		return err
	}
	hsigner, err := ssh.NewSignerFromKey(hpriv)
	if err != nil {
		return err
	}
	p.hostKey = clouds.HostKey{
		PrivatePEM: secret.New(string(pem.EncodeToMemory(block))),
		Public:     strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hsigner.PublicKey()))),
	}
	return nil
}

func (p *pipeline) launch(ctx context.Context) error {
	p.inst = clouds.Instance{Build: p.job.Build}
	console := &lineWriter{log: p.log, stream: StreamConsole}
	defer console.Flush()
	// The build waits in Launch: the request is made, and the instance
	// logged, in functions of their own (see RunJob).
	if err := p.job.Cloud.Launch(ctx, *p.launchRequest(console, p.baseImage, ""), &p.inst); err != nil {
		return err
	}
	p.launched()
	return nil
}

// launchRequest is the request for one of the build's VMs: the build's own
// (role "", from the base image) or the image test's (role "test", from the
// new image: its name, a role tag and its log lines say so).
func (p *pipeline) launchRequest(console io.Writer, image, role string) *clouds.LaunchRequest {
	cs := p.job.Spec.Clouds[p.job.CloudName]
	req := &clouds.LaunchRequest{
		Build:         p.job.Build,
		Name:          resourceName(p.job.Spec.Name, p.job.Build),
		Image:         image,
		Size:          cs.Size,
		User:          cs.SSHUser,
		AuthorizedKey: p.authorizedKey,
		HostKey:       p.hostKey,
		SSHTimeout:    p.job.SSHTimeout,
		Tags: map[string]string{
			clouds.TagBuild:      p.job.Build,
			clouds.TagGenerator:  p.job.Spec.Name,
			clouds.TagImageName:  p.imageName,
			clouds.TagCloud:      p.job.CloudName,
			clouds.TagManagedKey: "true",
		},
		Log:     p.log.logger(StreamImagegen).With("driver", p.job.CloudName),
		Console: console,
	}
	if role != "" {
		req.Name += "-" + role
		req.Tags[clouds.TagRole] = role
		req.Log = req.Log.With("vm", role)
	}
	return req
}

func (p *pipeline) launched() {
	if p.inst.ID != "" {
		p.slog.Info("instance running", "id", p.inst.ID)
	}
}

func (p *pipeline) terminate(ctx context.Context) error {
	if err := p.job.Cloud.Terminate(ctx, &p.inst); err != nil {
		p.res.Leftovers = append(p.res.Leftovers, p.leftovers(ctx)...)
		return err
	}
	return nil
}

// leftovers lists what a failed Terminate left, asking the cloud first and
// falling back to what Launch recorded.
func (p *pipeline) leftovers(ctx context.Context) []clouds.Resource {
	if p.job.Build != "" {
		if rs, err := p.job.Cloud.Leftovers(ctx, p.job.Build); err == nil {
			return rs
		}
	}
	return append([]clouds.Resource(nil), p.inst.Resources...)
}

func (p *pipeline) waitSSH(ctx context.Context) error {
	if p.inst.SSH == nil {
		p.slog.Info("the cloud gives no SSH endpoint: the script is not run (simulated cloud)")
		return nil
	}
	c, err := p.connect(ctx, &p.inst)
	if err != nil {
		return err
	}
	p.client = c
	return nil
}

// connect waits for SSH on inst, with its host keys pinned.
func (p *pipeline) connect(ctx context.Context, inst *clouds.Instance) (*sshexec.Client, error) {
	ep := inst.SSH
	user := p.job.Spec.Clouds[p.job.CloudName].SSHUser
	if ep.User != "" {
		user = ep.User
	}
	signer := p.clientSigner
	if ep.Signer != nil {
		signer = ep.Signer
	}
	if err := p.pinHostKeys(inst.ID, ep); err != nil {
		return nil, err
	}
	lastReport := time.Duration(0)
	c, err := sshexec.Connect(ctx, sshexec.Config{
		Addr:          ep.Addr,
		User:          user,
		Signer:        signer,
		HostKeys:      ep.HostKeys,
		HostKeySource: ep.HostKeySource,
		TrustFirstUse: len(ep.HostKeys) == 0 && ep.HostKeyPolicy.TrustsFirstUse(),
		Timeout:       p.job.SSHTimeout,
		Log:           p.slog,
		Progress: func(elapsed time.Duration, lastErr error) {
			// Every 10 s is often enough for a person watching.
			if elapsed-lastReport >= 10*time.Second {
				lastReport = elapsed
				p.slog.Info(fmt.Sprintf("waiting for SSH (%s)", elapsed.Round(time.Second)), "last_error", lastErr)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// pinHostKeys enforces the cloud's host_key policy on the endpoint Launch
// returned, and says in the build log which keys are pinned and where they
// came from. Without keys only host_key: first-use may connect: a driver that
// learned nothing under any other policy (or none) is refused here, so no
// cloud falls back to trusting the first key seen.
func (p *pipeline) pinHostKeys(instID string, ep *clouds.Endpoint) error {
	source := orDefault(ep.HostKeySource, "the driver")
	if len(ep.HostKeys) == 0 {
		if !ep.HostKeyPolicy.TrustsFirstUse() {
			return fmt.Errorf("%w to pin for instance %s at %s: the cloud gave none, and the first key seen is trusted only under host_key: first-use",
				clouds.ErrNoHostKey, orDefault(instID, "?"), ep.Addr)
		}
		p.slog.Warn("no SSH host key is known for this instance: the first key the server presents will be trusted (host_key: first-use; not recommended)",
			"source", clouds.SourceFirstUse)
		return nil
	}
	if ep.HostKeyPolicy == clouds.HostKeyRequire && ep.HostKeySource != clouds.SourceInjected && ep.HostKeySource != clouds.SourceConfig {
		return fmt.Errorf("%w known before first contact for instance %s: host_key: require, but the key came from %s", clouds.ErrNoHostKey, orDefault(instID, "?"), source)
	}
	fps := make([]string, 0, len(ep.HostKeys))
	for _, line := range ep.HostKeys {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("host key from %s: %w", source, err)
		}
		fps = append(fps, k.Type()+" "+ssh.FingerprintSHA256(k))
	}
	msg := "pinning the SSH host key"
	if len(fps) > 1 {
		msg = fmt.Sprintf("pinning %d SSH host keys (the server must present one)", len(fps))
	}
	p.slog.Info(msg, "source", source, "host_key", strings.Join(fps, ", "))
	return nil
}

func (p *pipeline) closeSSH(context.Context) error {
	if p.client == nil {
		return nil
	}
	// A close error (the guest already went away) leaves nothing behind.
	_ = p.client.Close()
	p.client = nil
	return nil
}

func (p *pipeline) runScript(ctx context.Context) error {
	if p.client == nil {
		return nil
	}
	// Named per build and cloud: two clouds of one build may reach the same host
	// (two ssh clouds naming one machine), and must not share the script file.
	code, err := p.client.RunScriptTo(ctx, p.job.Build+"-"+p.job.CloudName, p.job.Spec.Script, p.scriptOutput())
	p.res.ExitCode = code
	var ee *sshexec.ExitError
	if errors.As(err, &ee) {
		// Redact in the error itself too: Result.Err reaches callers' logs.
		for i, l := range ee.Tail {
			ee.Tail[i] = p.log.redact.Redact(l)
		}
		p.res.LogTail = ee.Tail
	}
	if err == nil {
		p.slog.Info("the script succeeded")
	}
	return err
}

// scriptOutput streams a command's output into the build log a read at a
// time: sshexec redacts it as a stream (a secret split between two reads, or
// cut with a long line, is still whole there), and the observer gets each
// read's lines as one batch.
func (p *pipeline) scriptOutput() sshexec.Output {
	return sshexec.Output{
		Redact: p.log.redact,
		Batch:  func(b sshexec.Batch) { p.log.redactedLines(b.Time, b.Stream, b.Lines) },
	}
}

func (p *pipeline) stop(ctx context.Context) error {
	if p.client != nil && p.job.Cloud.Features().PoweroffOverSSH {
		// Best effort: the connection drops as the guest goes down, and Stop
		// forces it off after its own timeout anyway.
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := p.client.RunTo(pctx, "sudo -n poweroff || poweroff", p.scriptOutput())
		cancel()
		p.slog.Info("asked the guest to power off", "result", errString(err))
		_ = p.closeSSH(ctx)
	}
	return p.job.Cloud.Stop(ctx, &p.inst)
}

func (p *pipeline) snapshot(ctx context.Context) error {
	tags := map[string]string{
		clouds.TagRepo:      p.job.Repo,
		clouds.TagCommit:    p.job.Commit,
		clouds.TagGenerator: p.job.Spec.Name,
		clouds.TagScriptSHA: p.job.Spec.Digest,
		clouds.TagBaseImage: p.baseImage,
		clouds.TagBuild:     p.job.Build,
		clouds.TagBranch:    p.job.Branch,
	}
	p.manifestTags(tags)
	req := clouds.SnapshotRequest{Name: p.imageName, Tags: tags, Log: p.log.logger(StreamImagegen).With("driver", p.job.CloudName)}
	if err := p.job.Cloud.Snapshot(ctx, &p.inst, req, &p.img); err != nil {
		return err
	}
	if p.img.ID == "" {
		return errors.New("the cloud returned no image id")
	}
	if p.img.Name == "" {
		p.img.Name = p.imageName
	}
	if err := verifyTags(p.img.Tags, tags); err != nil {
		return err
	}
	if err := p.attest(ctx); err != nil {
		return fmt.Errorf("provenance: %w", err)
	}
	p.imageReady = true
	p.slog.Info("image saved", "id", p.img.ID, "name", p.img.Name)
	return nil
}

// verifyTags checks that the image carries every provenance tag: an image
// without them breaks the "which change made this image" promise.
func verifyTags(got, want map[string]string) error {
	var bad []string
	for k, v := range want {
		if v == "" {
			continue // nothing to record (no commit for a local build)
		}
		if g, ok := got[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s missing", k))
		} else if g != v {
			bad = append(bad, fmt.Sprintf("%s=%q, want %q", k, g, v))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the image's provenance tags are wrong: %s", strings.Join(slices.Sorted(slices.Values(bad)), "; "))
	}
	return nil
}

func (p *pipeline) deleteImage(ctx context.Context) error {
	if p.succeeded || p.img.ID == "" {
		return nil
	}
	if p.keepImage {
		p.slog.Info("keeping the image whose test failed (keep_failed: true)", "id", p.img.ID)
		return nil
	}
	p.slog.Info("deleting the unfinished image", "id", p.img.ID)
	if err := p.job.Cloud.DeleteImage(ctx, &p.img); err != nil {
		p.res.Leftovers = append(p.res.Leftovers, clouds.Resource{Kind: clouds.KindImage, ID: p.img.ID, Name: p.img.Name, Build: p.job.Build})
		p.res.Leftovers = append(p.res.Leftovers, p.img.Resources...)
		return err
	}
	return nil
}

// resourceName names a build's cloud resources: short, and unique per build.
func resourceName(generator, build string) string {
	return "imagegen-" + generator + "-" + build
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
