package builds

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/manifest"
)

// recordResult records what became of a cloud's part of a build: its
// record, its image in the generator's lineage, and the metrics. meta is the
// build as the caller read it (its repo, generator, commit and digest go
// into the lineage); with only its ID set, the build is read when an image
// needs it.
//
// The record is written until it holds, for up to recordRetry: a result lost
// to a Redis that was away for a moment must not be reported as if it had
// been recorded (the task would end, its cloud left "running" until the sweep
// called its task lost, a success reported as a failure; found by the chaos
// suite's Redis black hole). What cannot be recorded is an error: the caller
// returns it, and the queue runs the task again.
func recordResult(ctx context.Context, d Deps, meta *Build, cloud string, res builder.Result) error {
	build := meta.ID
	now := time.Now().UTC()
	// The manifest is stored before the record says the cloud is done, so
	// whoever sees the build final (the check run's drift) finds it.
	mf := storeManifest(ctx, d, build, cloud, res.Manifest)
	digest := storeProvenance(ctx, d, build, cloud, res)
	var rec *CloudRecord
	err := retryStore(ctx, func() (err error) {
		rec, err = d.Store.UpdateCloud(ctx, build, cloud, func(c *CloudRecord) {
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
			c.ManifestSHA256, c.ManifestPackages, c.ManifestPartial, c.ManifestError = mf.sha256, mf.packages, mf.partial, mf.err
			c.ProvenanceSHA256 = digest
		})
		return err
	})
	if err != nil {
		d.Logger.Error("record result", "build", build, "cloud", cloud, "err", err)
		return fmt.Errorf("record the result of %s on %s: %w", build, cloud, err)
	}
	if d.Metrics != nil {
		d.Metrics.Builds.WithLabelValues(cloud, string(rec.State)).Inc()
		d.Metrics.Duration.WithLabelValues(cloud, string(rec.State)).Observe(rec.Duration(now).Seconds())
	}
	if rec.State != builder.StateSucceeded || rec.ImageID == "" {
		return nil
	}
	b := meta
	if b.Repo == "" {
		if b, _, err = d.Store.Get(ctx, build); err != nil {
			// The result is recorded; only the lineage entry is missing.
			d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
			return nil
		}
	}
	if err := d.Store.AddImage(ctx, LineageEntry{
		Build: build, Repo: b.Repo, Generator: b.Generator, Cloud: cloud, Commit: b.Commit, Ref: b.Ref, Digest: b.Digest,
		BaseImage: rec.BaseImage, ImageID: rec.ImageID, ImageName: rec.ImageName, Created: rec.Finished,
	}); err != nil {
		d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
	}
	return nil
}

// recordRetry is how long recordResult keeps trying to write a result.
var recordRetry = time.Minute

// retryStore runs fn until it succeeds, ctx ends or recordRetry passes,
// waiting longer between tries (up to 5 s). A missing build is not retried.
func retryStore(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(recordRetry)
	wait := 250 * time.Millisecond
	for {
		err := fn()
		if err == nil || errors.Is(err, ErrNotFound) || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// manifestFields are what a cloud's record says of its manifest.
type manifestFields struct {
	sha256   string
	packages int
	partial  bool
	err      string
}

// storeManifest stores a result's manifest with the build's record, and
// returns what the cloud's record says of it. A manifest that cannot be
// stored is logged and recorded as missing: the build itself stands.
func storeManifest(ctx context.Context, d Deps, build, cloud string, mr *builder.ManifestResult) manifestFields {
	switch {
	case mr == nil:
		return manifestFields{}
	case mr.Document == nil:
		return manifestFields{err: mr.Error}
	}
	gz, err := manifest.Compress(mr.Document)
	if err == nil {
		err = d.Store.SaveManifest(ctx, build, cloud, gz)
	}
	if err != nil {
		d.Logger.Error("store manifest", "build", build, "cloud", cloud, "err", err)
		return manifestFields{err: "the manifest could not be stored: " + err.Error()}
	}
	return manifestFields{sha256: mr.SHA256, packages: mr.Packages, partial: mr.Partial}
}

func orNow(t, now time.Time) time.Time {
	if t.IsZero() {
		return now
	}
	return t.UTC()
}

// failAndReport records the cloud's part of build b failed for cause, its
// task being over (given up, or lost), and reports it.
func failAndReport(ctx context.Context, d Deps, rep *Reporter, b *Build, cloud string, cause error) error {
	if err := recordResult(ctx, d, &Build{ID: b.ID}, cloud, builder.Result{Cloud: cloud, State: builder.StateFailed, Error: cause.Error(), ExitCode: -1}); err != nil {
		return err
	}
	gh, err := d.GitHub.Repo(ctx, b.Installation)
	if err != nil {
		return err
	}
	return rep.Report(ctx, gh, b.ID, cloud)
}
