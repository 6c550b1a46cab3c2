package builder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/sshexec"
)

// The test stage: once the image is saved, a fresh VM is booted from it, the
// spec's test script runs there as the build script did (bash -e, streamed
// to the build log, redacted), and the VM is removed on every path, like the
// build's own. The result is tagged on the image (imagegen:tested); a failed
// test fails the cloud, and the image is deleted by the snapshot step's
// cleanup unless keep_failed keeps it.

// testSteps are the test stage's steps, run after the snapshot.
func (p *pipeline) testSteps() []step {
	return []step{
		{PhaseTestLaunch, p.launchTest, p.terminateTest},
		{PhaseTestSSH, p.waitTestSSH, p.closeTestSSH},
		{PhaseTest, p.runTest, nil},
	}
}

// launchTest boots a VM from the new image, with the build's keys.
func (p *pipeline) launchTest(ctx context.Context) error {
	p.testInst = clouds.Instance{Build: p.job.Build}
	console := &lineWriter{log: p.log, stream: StreamConsole}
	defer console.Flush()
	req := p.launchRequest(console, p.img.ID, "test")
	p.slog.Info("testing the new image on a fresh VM booted from it", "image", p.img.ID)
	if err := p.job.Cloud.Launch(ctx, *req, &p.testInst); err != nil {
		return err
	}
	if p.testInst.ID != "" {
		p.slog.Info("test instance running", "id", p.testInst.ID)
	}
	return nil
}

// terminateTest removes the test VM and all it made.
func (p *pipeline) terminateTest(ctx context.Context) error {
	if err := p.job.Cloud.Terminate(ctx, &p.testInst); err != nil {
		p.res.Leftovers = append(p.res.Leftovers, p.testInst.Resources...)
		return err
	}
	return nil
}

func (p *pipeline) waitTestSSH(ctx context.Context) error {
	if p.testInst.SSH == nil {
		return nil
	}
	c, err := p.connect(ctx, &p.testInst)
	if err != nil {
		return err
	}
	p.testClient = c
	return nil
}

func (p *pipeline) closeTestSSH(context.Context) error {
	if p.testClient != nil {
		_ = p.testClient.Close()
		p.testClient = nil
	}
	return nil
}

// TestError is a test that failed: the script's exit (an *sshexec.ExitError)
// or its timeout.
type TestError struct {
	Err      error
	Timeout  time.Duration // set when test_timeout ended it
	ExitCode int
}

func (e *TestError) Error() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("the test did not finish within %s (test_timeout)", e.Timeout)
	}
	var ee *sshexec.ExitError
	if errors.As(e.Err, &ee) {
		return "the test " + strings.TrimPrefix(ee.Error(), "the script ")
	}
	return "the test failed: " + e.Err.Error()
}

func (e *TestError) Unwrap() error { return e.Err }

// runTest runs the test script on the test VM and tags the image with the result.
func (p *pipeline) runTest(ctx context.Context) error {
	start := p.now()
	tr := &TestResult{ExitCode: -1}
	p.res.Test = tr
	if p.testClient == nil {
		p.slog.Warn("the cloud gives no SSH endpoint: the test is not run (simulated cloud); the image is tagged imagegen:tested=skipped")
		tr.Result = clouds.TestedSkipped
		tr.Tagged = p.tagTested(ctx, clouds.TestedSkipped)
		return nil
	}
	limit := p.job.Spec.TestTimeoutOrDefault()
	tctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	code, err := p.testClient.RunScriptTo(tctx, p.job.Build+"-"+p.job.CloudName+"-test", p.job.Spec.Test, p.scriptOutput())
	tr.ExitCode, tr.Duration = code, p.now().Sub(start)
	if err == nil {
		tr.Result = clouds.TestedPassed
		p.slog.Info("the test passed", "duration", tr.Duration.Round(time.Millisecond).String())
		tr.Tagged = p.tagTested(ctx, clouds.TestedPassed)
		return nil
	}
	if ctx.Err() != nil {
		// The build itself was stopped (canceled, build.timeout): not a verdict.
		p.res.Test = nil
		return err
	}
	terr := &TestError{Err: err, ExitCode: code}
	var ee *sshexec.ExitError
	switch {
	case errors.As(err, &ee):
		for i, l := range ee.Tail {
			ee.Tail[i] = p.log.redact.Redact(l)
		}
		p.res.LogTail = ee.Tail
	case tctx.Err() != nil:
		terr.Timeout = limit
	}
	tr.Result = clouds.TestedFailed
	if p.job.Spec.KeepFailed {
		p.keepImage, tr.Kept = true, true
		tr.Tagged = p.tagTested(ctx, clouds.TestedFailed)
	}
	return terr
}

// tagTested tells the cloud the test's result, when it can be told: the
// record keeps it either way, and a cloud that cannot tag images is said so
// in the build log, not failed for it.
func (p *pipeline) tagTested(ctx context.Context, result string) bool {
	tagger, ok := p.job.Cloud.(clouds.ImageTagger)
	if !ok {
		p.slog.Warn("this cloud cannot tag an existing image: the test's result is in imagegen's record only", "tested", result)
		return false
	}
	tags := map[string]string{clouds.TagTested: result}
	if err := tagger.TagImage(ctx, p.img.ID, tags); err != nil {
		p.slog.Warn("could not tag the image with the test's result", "tested", result, "err", err)
		return false
	}
	if p.img.Tags == nil {
		p.img.Tags = map[string]string{}
	} else {
		p.img.Tags = maps.Clone(p.img.Tags)
	}
	maps.Copy(p.img.Tags, tags)
	p.slog.Info("image tagged", clouds.TagTested, result)
	return true
}

// resolveBase finds the base image a filter names, as the cloud has it now.
func (p *pipeline) resolveBase(ctx context.Context) error {
	f := p.job.Spec.Clouds[p.job.CloudName].Filter
	img, err := clouds.ResolveImage(ctx, p.job.Cloud, CloudFilter(f))
	if err != nil {
		return err
	}
	p.baseImage, p.res.BaseImage = img.ID, img.ID
	p.slog.Info("base image found by the filter", "image", img.ID, "name", img.Name, "filter", f.String())
	return nil
}

// CloudFilter is the spec's image filter as the clouds take it.
func CloudFilter(f *spec.ImageFilter) clouds.ImageFilter {
	if f == nil {
		return clouds.ImageFilter{}
	}
	return clouds.ImageFilter{Name: f.Name, Owner: f.Owner, Tags: maps.Clone(f.Tags), Visibility: f.Visibility, MostRecent: f.MostRecent}
}
