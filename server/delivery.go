package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-github/v60/github"
	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/queue"
)

// HandleDelivery is the worker's handler for delivery tasks: it parses the
// payload with go-github and plans a push or re-runs a build.
//
// A push is planned here, in the delivery's task, rather than in a task of
// its own: each hop through the queue waits on the worker's poll. The plan is
// keyed by the delivery (its build ids derive from it), so a delivery task
// retried after an error or a crash finds what it recorded and made before.
func HandleDelivery(ctx context.Context, q *queue.Service, d queue.Delivery) error {
	ev, err := parseEvent(d.Event, d.Body)
	if err != nil {
		return fmt.Errorf("delivery %s: %v: %w", d.ID, err, asynq.SkipRetry)
	}
	switch ev := ev.(type) {
	case *github.PushEvent:
		return q.Plan(ctx, pushOf(d.ID, ev))
	case *checkRunEvent:
		id := ev.CheckRun.ExternalID
		if ev.Action != "rerequested" || id == "" {
			return nil
		}
		// Keyed by the delivery: a retried task re-runs the build once.
		_, err := q.Rerun(ctx, id, queue.RerunRequest{SkipPasswordClouds: true, Key: d.ID})
		var rerr *queue.RequestError
		switch {
		case errors.Is(err, queue.ErrNotFound), errors.As(err, &rerr):
			// Not ours, expired, or nothing that can run: nothing to retry.
			return nil
		case err != nil:
			return err
		}
		return nil
	case *checkSuiteEvent:
		// "Re-run all checks": the newest build of each generator on that commit.
		if ev.Action != "rerequested" || ev.Repository.FullName == "" || ev.CheckSuite.HeadSHA == "" {
			return nil
		}
		_, err := q.RerunCommit(ctx, ev.Repository.FullName, ev.CheckSuite.HeadSHA, d.ID)
		return err
	}
	return nil
}

// pushOf keeps what planning needs from a push event.
func pushOf(delivery string, ev *github.PushEvent) queue.Push {
	p := queue.Push{
		Delivery:      delivery,
		Repo:          ev.GetRepo().GetFullName(),
		Installation:  ev.GetInstallation().GetID(),
		Ref:           ev.GetRef(),
		Before:        ev.GetBefore(),
		After:         ev.GetAfter(),
		Created:       ev.GetCreated(),
		Deleted:       ev.GetDeleted(),
		Forced:        ev.GetForced(),
		DefaultBranch: ev.GetRepo().GetDefaultBranch(),
	}
	seen := map[string]bool{}
	add := func(files []string) {
		for _, f := range files {
			if !seen[f] {
				seen[f] = true
				p.Changed = append(p.Changed, f)
			}
		}
	}
	for _, c := range ev.Commits {
		add(c.Added)
		add(c.Removed)
		add(c.Modified)
	}
	// GitHub lists at most 20 commits in a push (and a forced push's list says
	// little about what changed since before): ask the compare API then.
	p.Incomplete = len(ev.Commits) >= 20 || (p.Forced && !p.Created)
	return p
}
