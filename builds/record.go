package builds

import (
	"context"
	"time"

	"github.com/imagegen/imagegen/builder"
)

// recordResult records what became of a cloud's part of a build: its
// record, its image in the generator's lineage, and the metrics. meta is the
// build as the caller read it (its repo, generator, commit and digest go
// into the lineage); with only its ID set, the build is read when an image
// needs it.
func recordResult(ctx context.Context, d Deps, meta *Build, cloud string, res builder.Result) {
	build := meta.ID
	now := time.Now().UTC()
	digest := storeProvenance(ctx, d, build, cloud, res)
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
		c.ProvenanceSHA256 = digest
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
	b := meta
	if b.Repo == "" {
		if b, _, err = d.Store.Get(ctx, build); err != nil {
			d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
			return
		}
	}
	if err := d.Store.AddImage(ctx, LineageEntry{
		Build: build, Repo: b.Repo, Generator: b.Generator, Cloud: cloud, Commit: b.Commit, Ref: b.Ref, Digest: b.Digest,
		BaseImage: rec.BaseImage, ImageID: rec.ImageID, ImageName: rec.ImageName, Created: rec.Finished,
	}); err != nil {
		d.Logger.Error("record image", "build", build, "cloud", cloud, "err", err)
	}
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
