package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
)

// The sweep is the safety net under the build task's own cleanup. A worker
// killed outright (SIGKILL, OOM, a lost node) runs no cleanup, and asynq's
// recoverer re-queues its task only after the lease expires — or archives it,
// without calling the error handler, when the retries are spent. So the sweep
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

// sweepSeenKey remembers when the sweep first saw a resource of an unknown
// build, so it is removed only once it has been orphaned for a while.
const sweepSeenKey = prefix + "sweep:seen"

// sweepLockKey makes one worker sweep per interval, however many run.
const sweepLockKey = prefix + "lock:sweep"

// lostWindow bounds how far back the sweep looks for builds whose task was
// lost: a build task older than this has long ended, one way or another.
const lostWindow = 7 * 24 * time.Hour

// orphanAge is how long a resource of a build no record knows must have been
// seen before it is removed: longer than any build of any deployment lasts.
func (s *Service) orphanAge() time.Duration { return s.buildTimeout() }

// Sweep runs one sweep now: lost tasks first (so their clouds turn final),
// then the resources of builds that are over.
func (s *Service) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	if err := s.sweepLost(ctx, &rep); err != nil {
		return rep, err
	}
	names := make([]string, 0, len(s.cfg.Clouds))
	for name := range s.cfg.Clouds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		entry := s.cfg.Clouds[name]
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

func (s *Service) sweepCloud(ctx context.Context, name string, cl clouds.Cloud, rep *SweepReport) {
	log := s.log.With("component", "sweep", "cloud", name)
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
		s.rdb.HDel(ctx, sweepSeenKey, field)
		rep.Removed = append(rep.Removed, r)
		log.Info("swept a leftover", "build", r.Build, "kind", r.Kind, "id", r.ID)
	}
}

// sweepImages removes the images of a build whose record says that cloud's
// part is over and names another image or none: an attempt killed after its
// snapshot left it, and the retry made another or failed. An image of a build
// no record knows is kept: records expire, images are the product.
func (s *Service) sweepImages(ctx context.Context, name string, cl clouds.Cloud, l clouds.ImageLister, rep *SweepReport) {
	imgs, err := l.BuildImages(ctx, "")
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("list images on %s: %w", name, err))
		return
	}
	for _, img := range imgs {
		id := img.Tags[clouds.TagBuild]
		b, _, err := s.store.Get(ctx, id)
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
		s.log.Info("swept an image no build record names", "component", "sweep", "cloud", name, "build", id, "image", img.ID)
	}
}

// buildOver says whether no cloud of the build can still be running: the
// record says every cloud is final or waiting for a password. An unknown
// build is not over here; unknownFor ages it.
func (s *Service) buildOver(ctx context.Context, id string) (bool, error) {
	b, _, err := s.store.Get(ctx, id)
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
func (s *Service) unknownFor(ctx context.Context, build, field string, now time.Time) (time.Duration, error) {
	_, _, err := s.store.Get(ctx, build)
	if err == nil {
		s.rdb.HDel(ctx, sweepSeenKey, field)
		return 0, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	if err := s.rdb.HSetNX(ctx, sweepSeenKey, field, now.Unix()).Err(); err != nil {
		return 0, fmt.Errorf("sweep: remember %s: %w", build, err)
	}
	s.rdb.Expire(ctx, sweepSeenKey, 2*s.orphanAge()+24*time.Hour)
	v, err := s.rdb.HGet(ctx, sweepSeenKey, field).Result()
	if err != nil {
		return 0, fmt.Errorf("sweep: read %s: %w", build, err)
	}
	first, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sweep: %s: %w", build, err)
	}
	return now.Sub(time.Unix(first, 0)), nil
}

// sweepLost reports failed every queued or running cloud whose build task is
// archived (its retries spent: asynq's recoverer archives a task whose worker
// died without calling the error handler) or gone.
func (s *Service) sweepLost(ctx context.Context, rep *SweepReport) error {
	min := time.Now().Add(-lostWindow).UnixNano()
	ids, err := s.rdb.ZRangeByScore(ctx, buildsIndex, &redis.ZRangeBy{Min: strconv.FormatInt(min, 10), Max: "+inf"}).Result()
	if err != nil {
		return fmt.Errorf("sweep: list builds: %w", err)
	}
	grace := s.cfg.Build.SweepInterval
	for _, id := range ids {
		b, _, err := s.store.Get(ctx, id)
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
			cause, lost := s.taskLost(b, name, grace)
			if !lost {
				continue
			}
			// Read again: the task may have finished (and its record turned
			// final) between the first read and the task lookup.
			if nb, _, err := s.store.Get(ctx, id); err != nil || nb.Clouds[name] == nil || nb.Clouds[name].State.Final() {
				continue
			}
			s.log.Error("build task lost; reporting the build failed", "component", "sweep", "build", id, "cloud", name, "err", cause)
			if err := s.failLost(ctx, id, name, errors.New(cause)); err != nil {
				rep.Errors = append(rep.Errors, err)
				continue
			}
			rep.Lost = append(rep.Lost, id+"/"+name)
		}
	}
	return nil
}

// taskLost looks up the cloud's build task: archived or absent (and no plan
// of the build that could still enqueue it) means it will never run again.
func (s *Service) taskLost(b *Build, cloud string, grace time.Duration) (cause string, lost bool) {
	info, err := s.inspector.GetTaskInfo(QueueName, "build:"+b.ID+":"+cloud)
	switch {
	case err == nil && info.State == asynq.TaskStateArchived:
		_ = s.inspector.DeleteTask(QueueName, info.ID) // it may hold a sealed password
		return fmt.Sprintf("gave up after %d attempts: %s", info.Retried+1, info.LastErr), true
	case err == nil:
		return "", false
	case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
		return "", false // Redis trouble: decide next time
	}
	if b.Delivery != "" {
		if _, err := s.inspector.GetTaskInfo(QueueName, "plan:"+b.Delivery); err == nil {
			return "", false // the plan is still running: it enqueues the task
		}
	}
	if time.Since(b.Clouds[cloud].Queued) < grace {
		return "", false // a re-run enqueues right after recording
	}
	return "its task was lost (Redis lost data, or the task was deleted)", true
}

// failLost is failCloud, returning the report's error so the sweep counts it.
func (s *Service) failLost(ctx context.Context, build, cloud string, cause error) error {
	b, _, err := s.store.Get(ctx, build)
	if err != nil {
		return err
	}
	s.finish(ctx, build, cloud, builder.Result{Cloud: cloud, State: builder.StateFailed, Error: cause.Error(), ExitCode: -1})
	gh, err := s.gh.Repo(ctx, b.Installation)
	if err != nil {
		return fmt.Errorf("report lost build %s/%s: %w", build, cloud, err)
	}
	if err := s.report(ctx, gh, build, cloud); err != nil {
		return fmt.Errorf("report lost build %s/%s: %w", build, cloud, err)
	}
	return nil
}

// sweepLoop sweeps every interval, once across all workers (a Redis lock
// held for most of the interval), until the worker stops.
func (s *Service) sweepLoop(ctx context.Context, interval time.Duration) {
	log := s.log.With("component", "sweep")
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
		ok, err := s.rdb.SetNX(ctx, sweepLockKey, NewID(), interval*9/10).Result()
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
