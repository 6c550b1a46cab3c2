package builds

import (
	"context"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/manifest"
)

// recordResult records what became of a cloud's part of a build: its
// record, its image in the generator's lineage, and the metrics. meta is the
// build as the caller read it (its repo, generator, commit and digest go
// into the lineage); with only its ID set, the build is read when an image
// needs it.
func recordResult(ctx context.Context, d Deps, meta *Build, cloud string, res builder.Result) {
	build := meta.ID
	now := time.Now().UTC()
	// The manifest is stored before the record says the cloud is done, so
	// whoever sees the build final (the check run's drift) finds it.
	mf := storeManifest(ctx, d, build, cloud, res.Manifest)
	rec, err := d.Store.UpdateCloud(ctx, build, cloud, func(c *CloudRecord) {
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
		c.Test = res.Test
		c.ManifestSHA256, c.ManifestPackages, c.ManifestPartial, c.ManifestError = mf.sha256, mf.packages, mf.partial, mf.err
	})
	if err != nil {
		d.Logger.Error("record result", "build", build, "cloud", cloud, "err", err)
		return
	}
	if d.Metrics != nil {
		d.Metrics.Builds.WithLabelValues(cloud, string(rec.State)).Inc()
		d.Metrics.Duration.WithLabelValues(cloud, string(rec.State)).Observe(rec.Duration(now).Seconds())
	}
	if rec.State != builder.StateSucceeded || rec.ImageID == "" {
		return
	}
	// The spec says the image's channel and whether its base is watched.
	b, sp, err := d.Store.Get(ctx, build)
	if err != nil {
		d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
		return
	}
	if err := addToLineage(ctx, d, b, sp, rec); err != nil {
		d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
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
	recordResult(ctx, d, &Build{ID: b.ID}, cloud, builder.Result{Cloud: cloud, State: builder.StateFailed, Error: cause.Error(), ExitCode: -1})
	gh, err := d.GitHub.Repo(ctx, b.Installation)
	if err != nil {
		return err
	}
	return rep.Report(ctx, gh, b.ID, cloud)
}
