package builds

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
)

// The sweep is the safety net under the build task's own cleanup. A worker
// killed outright (SIGKILL, OOM, a lost node) runs no cleanup, and the queue
// runs its task again only after the task's lease expires — or archives it,
// without a word to the Runner (GaveUp), when its retries are spent. So the sweep
//   - reports failed every queued or running cloud whose task is archived or
//     gone (else its commit status would stay pending forever), and
//   - removes every resource tagged imagegen:build whose build is no longer
//     running (final), or which no build record knows for longer than a build
//     can last (records expire; another deployment's builds may share a cloud).

// SweepReport says what one sweep did.
type SweepReport struct {
	Listed  int               // resources tagged imagegen:build found in the clouds
	Removed []clouds.Resource // removed: their build was over
	Kept    int               // left: their build still runs, or is unknown but young
	Lost    []string          // "build/cloud" reported failed because its task was archived or gone
	Errors  []error           // what could not be listed, removed or reported (retried next sweep)
}

// Sweeper is the sweep: see SweepReport.
type Sweeper struct {
	d     Deps
	tasks Tasks
	rep   *Reporter
}

// NewSweeper returns a Sweeper; it needs d.Config, d.Store and d.GitHub, and
// the queue's tasks.
func NewSweeper(d Deps, tasks Tasks) *Sweeper {
	d = d.withDefaults()
	return &Sweeper{d: d, tasks: tasks, rep: NewReporter(d)}
}

// sweepLock makes one worker sweep per interval, however many run.
const sweepLock = "sweep"

// lostWindow bounds how far back the sweep looks for builds whose task was
// lost: a build task older than this has long ended, one way or another.
const lostWindow = 7 * 24 * time.Hour

// orphanAge is how long a resource of a build no record knows must have been
// seen before it is removed: longer than any build of any deployment lasts.
func (s *Sweeper) orphanAge() time.Duration { return TaskTimeout(s.d.Config) }

// Sweep runs one sweep now: lost tasks first (so their clouds turn final),
// then the resources of builds that are over.
func (s *Sweeper) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	if err := s.sweepLost(ctx, &rep); err != nil {
		return rep, err
	}
	names := make([]string, 0, len(s.d.Config.Clouds))
	for name := range s.d.Config.Clouds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		entry := s.d.Config.Clouds[name]
		if entry.AsksPassword() {
			// No password is stored, so the sweep cannot open this cloud; the
			// build's own cleanup and its retry's leftover removal are all there is.
			continue
		}
		cl, err := entry.Open(ctx, clouds.Credentials{})
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("open cloud %s: %w", name, err))
			continue
		}
		s.sweepCloud(ctx, name, cl, &rep)
		if l, ok := cl.(clouds.ImageLister); ok {
			s.sweepImages(ctx, name, cl, l, &rep)
		}
	}
	return rep, ctx.Err()
}

func (s *Sweeper) sweepCloud(ctx context.Context, name string, cl clouds.Cloud, rep *SweepReport) {
	log := s.d.Logger.With("component", "sweep", "cloud", name)
	rs, err := cl.Leftovers(ctx, "")
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("list leftovers on %s: %w", name, err))
		return
	}
	rep.Listed += len(rs)
	over := map[string]bool{} // build id → over (final, or orphaned long enough)
	now := time.Now()
	for _, r := range rs {
		if r.Build == "" {
			rep.Kept++
			continue
		}
		done, seen := over[r.Build]
		if !seen {
			done, err = s.buildOver(ctx, r.Build)
			if err != nil {
				rep.Errors = append(rep.Errors, err)
				rep.Kept++
				continue
			}
			over[r.Build] = done
		}
		field := name + "\x00" + r.Kind + "\x00" + r.ID
		if !done {
			unknown, err := s.unknownFor(ctx, r.Build, field, now)
			if err != nil {
				rep.Errors = append(rep.Errors, err)
			}
			if unknown < s.orphanAge() {
				rep.Kept++
				continue
			}
		}
		if err := cl.Remove(ctx, r); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("remove %s %s of build %s on %s: %w", r.Kind, r.ID, r.Build, name, err))
			continue
		}
		s.d.Store.ForgetSeen(ctx, field)
		rep.Removed = append(rep.Removed, r)
		log.Info("swept a leftover", "build", r.Build, "kind", r.Kind, "id", r.ID)
	}
}

// sweepImages removes the images of a build whose record says that cloud's
// part is over and names another image or none: an attempt killed after its
// snapshot left it, and the retry made another or failed. An image of a build
// no record knows is kept: records expire, images are the product.
func (s *Sweeper) sweepImages(ctx context.Context, name string, cl clouds.Cloud, l clouds.ImageLister, rep *SweepReport) {
	imgs, err := l.BuildImages(ctx, "")
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("list images on %s: %w", name, err))
		return
	}
	for _, img := range imgs {
		id := img.Tags[clouds.TagBuild]
		b, _, err := s.d.Store.Get(ctx, id)
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				rep.Errors = append(rep.Errors, err)
			}
			continue
		}
		c := b.Clouds[name]
		if c == nil || !c.State.Final() || c.ImageID == img.ID {
			continue
		}
		if err := cl.DeleteImage(ctx, &img); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("delete orphan image %s of build %s on %s: %w", img.ID, id, name, err))
			continue
		}
		r := clouds.Resource{Kind: clouds.KindImage, ID: img.ID, Name: img.Name, Build: id}
		rep.Removed = append(rep.Removed, r)
		s.d.Logger.Info("swept an image no build record names", "component", "sweep", "cloud", name, "build", id, "image", img.ID)
	}
}

// buildOver says whether no cloud of the build can still be running: the
// record says every cloud is final or waiting for a password. An unknown
// build is not over here; unknownFor ages it.
func (s *Sweeper) buildOver(ctx context.Context, id string) (bool, error) {
	b, _, err := s.d.Store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, c := range b.Clouds {
		if c.State == builder.StateQueued || c.State == builder.StateRunning {
			return false, nil
		}
	}
	return true, nil
}

// unknownFor returns how long the resource (field) of a build no record
// knows has been seen; 0 when the build is known (running).
func (s *Sweeper) unknownFor(ctx context.Context, build, field string, now time.Time) (time.Duration, error) {
	_, _, err := s.d.Store.Get(ctx, build)
	if err == nil {
		s.d.Store.ForgetSeen(ctx, field)
		return 0, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	first, err := s.d.Store.FirstSeen(ctx, field, now, 2*s.orphanAge()+24*time.Hour)
	if err != nil {
		return 0, fmt.Errorf("sweep: %s: %w", build, err)
	}
	return now.Sub(first), nil
}

// sweepLost reports failed every queued or running cloud whose build task is
// archived (its retries spent: the queue archives the task of a worker that
// died without a word to the Runner) or gone.
func (s *Sweeper) sweepLost(ctx context.Context, rep *SweepReport) error {
	ids, err := s.d.Store.BuildsSince(ctx, time.Now().Add(-lostWindow))
	if err != nil {
		return fmt.Errorf("sweep: list builds: %w", err)
	}
	grace := s.d.Config.Build.SweepInterval
	for _, id := range ids {
		b, _, err := s.d.Store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			rep.Errors = append(rep.Errors, err)
			continue
		}
		for _, name := range b.CloudNames() {
			c := b.Clouds[name]
			if c.State != builder.StateQueued && c.State != builder.StateRunning {
				continue
			}
			cause, lost := s.taskLost(ctx, b, name, grace)
			if !lost {
				continue
			}
			// Read again: the task may have finished (and its record turned
			// final) between the first read and the task lookup.
			if nb, _, err := s.d.Store.Get(ctx, id); err != nil || nb.Clouds[name] == nil || nb.Clouds[name].State.Final() {
				continue
			}
			s.d.Logger.Error("build task lost; reporting the build failed", "component", "sweep", "build", id, "cloud", name, "err", cause)
			if err := s.failLost(ctx, id, name, errors.New(cause)); err != nil {
				rep.Errors = append(rep.Errors, err)
				continue
			}
			rep.Lost = append(rep.Lost, id+"/"+name)
		}
	}
	return nil
}

// taskLost looks up the cloud's build task: archived, or absent for longer
// than a plan or re-run takes to queue it, means it will never run again.
func (s *Sweeper) taskLost(ctx context.Context, b *Build, cloud string, grace time.Duration) (cause string, lost bool) {
	info, err := s.tasks.BuildTask(ctx, b.ID, cloud)
	switch {
	case err != nil:
		return "", false // Redis trouble: decide next time
	case info.State == TaskArchived:
		_ = s.tasks.DeleteBuildTask(ctx, b.ID, cloud) // it may hold a sealed password
		return fmt.Sprintf("gave up after %d attempts: %s", info.Retried+1, info.LastErr), true
	case info.State != TaskGone:
		return "", false
	}
	if time.Since(b.Clouds[cloud].Queued) < grace {
		return "", false // a re-run enqueues right after recording
	}
	if b.Delivery != "" && b.RerunOf == "" {
		// A plan queues a build's tasks after recording it; when Redis
		// failed in between, the delivery's task runs again (retries spread
		// over hours) and queues them then.
		if pending, err := s.tasks.PlanPending(ctx, b.Repo, b.Ref, b.Commit, b.Delivery); err != nil || pending {
			return "", false
		}
	}
	return "its task was lost (Redis lost data, or the task was deleted)", true
}

// failLost records a cloud whose task was lost failed, and reports it.
func (s *Sweeper) failLost(ctx context.Context, build, cloud string, cause error) error {
	b, _, err := s.d.Store.Get(ctx, build)
	if err != nil {
		return err
	}
	if err := failAndReport(ctx, s.d, s.rep, b, cloud, cause); err != nil {
		return fmt.Errorf("report lost build %s/%s: %w", build, cloud, err)
	}
	return nil
}

// Loop sweeps every interval, once across all workers (a lock held for most
// of the interval), until ctx ends.
func (s *Sweeper) Loop(ctx context.Context, interval time.Duration) {
	log := s.d.Logger.With("component", "sweep")
	// The first sweep comes soon: a worker restarting after a crash is when
	// leftovers are likeliest.
	wait := min(interval, 10*time.Second)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = interval
		ok, err := s.d.Store.TryLock(ctx, sweepLock, interval*9/10)
		if err != nil || !ok {
			continue // another worker sweeps this time, or Redis is away
		}
		rep, err := s.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("sweep", "err", err)
		}
		if len(rep.Removed)+len(rep.Lost)+len(rep.Errors) > 0 {
			log.Info("swept", "listed", rep.Listed, "removed", len(rep.Removed), "kept", rep.Kept, "lost", len(rep.Lost), "errors", errors.Join(rep.Errors...))
		}
	}
}
