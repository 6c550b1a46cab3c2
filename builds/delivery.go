package builds

import (
	"context"
	"errors"
	"fmt"
)

// Event is what a webhook delivery asks of the core: a Push, a
// CheckRunRerun or a CheckSuiteRerun. Package github makes them
// (github.ParseDelivery).
type Event interface{ isEvent() }

// Push is what planning needs from a push event, free of GitHub's types.
type Push struct {
	Delivery      string // X-GitHub-Delivery: build ids derive from it
	Repo          string // owner/name
	Installation  int64
	Ref           string // refs/heads/main
	Before        string
	After         string
	Created       bool
	Deleted       bool
	Forced        bool
	DefaultBranch string
	Changed       []string // files added, modified or removed by the push's commits
	// Incomplete says Changed may miss files (GitHub lists at most 20 commits
	// in a push; a forced push's commits say little; more than
	// MaxChangedFiles files or MaxChangedBytes bytes of names, when Changed
	// is left empty), so the planner asks the compare API instead.
	Incomplete bool
}

// The bounds of Push.Changed: a push is stored in the queue as its Push, so
// a push listing more files (a signed payload may list any number) is kept
// as Incomplete, with no files, and planned from the compare API.
const (
	MaxChangedFiles = 3000
	MaxChangedBytes = 256 << 10 // of file names, together
)

// CheckRunRerun is a check run's "Re-run" button: build Build again. The
// build must be one of Repo's, made for commit SHA: the external id alone
// is not trusted to name a build of the repository the event comes from.
type CheckRunRerun struct {
	Build string // the check run's external id
	Repo  string // owner/name: the repository the event comes from
	SHA   string // the check run's head commit
}

// CheckSuiteRerun is a check suite's "Re-run all checks": the newest build
// of each generator made for commit SHA of Repo again.
type CheckSuiteRerun struct {
	Repo string // owner/name
	SHA  string
}

func (Push) isEvent()            {}
func (CheckRunRerun) isEvent()   {}
func (CheckSuiteRerun) isEvent() {}

// ParseFunc decodes a delivery's payload: an Event, nil for a delivery that
// asks nothing of imagegen, or an error when the payload cannot be decoded.
type ParseFunc func(event string, payload []byte) (Event, error)

// Deliveries turns webhook deliveries into work: a push is planned, a
// re-run button re-runs. It runs in the delivery's queue task.
type Deliveries struct {
	parse   ParseFunc
	planner *Planner
	reruns  *Reruns
}

// NewDeliveries returns the handler of deliveries parsed by parse.
func NewDeliveries(parse ParseFunc, p *Planner, r *Reruns) *Deliveries {
	return &Deliveries{parse: parse, planner: p, reruns: r}
}

// Handle does what delivery id (of GitHub event event) asks, its payload
// parsed here: the delivery tasks of versions that stored the raw payload.
func (d *Deliveries) Handle(ctx context.Context, id, event string, payload []byte) error {
	ev, err := d.parse(event, payload)
	if err != nil {
		return fmt.Errorf("delivery %s: %w: %w", id, err, ErrNoRetry)
	}
	return d.HandleEvent(ctx, id, ev)
}

// HandleEvent does what delivery id asks, as the webhook parsed it (nil:
// nothing). A push is planned here, in the delivery's task, rather than in a
// task of its own: each hop through the queue waits on the worker's poll.
// The work is keyed by the delivery (build ids derive from it), so a
// delivery handled again after an error or a crash finds what it recorded
// and made before.
func (d *Deliveries) HandleEvent(ctx context.Context, id string, ev Event) error {
	if repo, ok := EventRepo(ev); ok && !d.planner.d.Config.GitHub.AcceptsRepo(repo) {
		// The webhook ignores these already; a delivery queued before the
		// config changed, or by a serve with another config, is ignored here.
		d.planner.d.Logger.Info("delivery ignored: repository not allowed (github.allow_repos)", "delivery", id, "repo", repo)
		return nil
	}
	switch ev := ev.(type) {
	case Push:
		ev.Delivery = id
		return d.planner.Plan(ctx, ev)
	case CheckRunRerun:
		// Keyed by the delivery: a retried task re-runs the build once.
		_, err := d.reruns.Rerun(ctx, ev.Build, RerunRequest{SkipPasswordClouds: true, RecordDenied: true, Key: id, Repo: ev.Repo, SHA: ev.SHA})
		var rerr *RequestError
		var ferr *ForeignError
		switch {
		case errors.As(err, &ferr):
			d.reruns.d.Logger.Warn("check run re-run refused: the build is not the event's", "delivery", id,
				"build", ev.Build, "repo", ev.Repo, "sha", ev.SHA, "reason", ferr.Msg)
			return nil
		case errors.Is(err, ErrNotFound) || errors.As(err, &rerr):
			// Not ours, expired, or nothing that can run: nothing to retry.
			d.reruns.d.Logger.Info("check run re-run: nothing re-run", "delivery", id, "build", ev.Build, "repo", ev.Repo, "err", err)
			return nil
		}
		return err
	case CheckSuiteRerun:
		_, err := d.reruns.RerunCommit(ctx, ev.Repo, ev.SHA, id)
		return err
	}
	return nil
}

// EventRepo is the repository (owner/name) event ev is about; false for an
// event about none.
func EventRepo(ev Event) (string, bool) {
	switch ev := ev.(type) {
	case Push:
		return ev.Repo, true
	case CheckRunRerun:
		return ev.Repo, true
	case CheckSuiteRerun:
		return ev.Repo, true
	}
	return "", false
}
