package builds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/internal/secret"
)

// Reruns starts builds again: from the API, the build pages, and a check
// run's or check suite's re-run buttons.
type Reruns struct{ d Deps }

// NewReruns returns Reruns; it needs d.Config, d.Store and d.Queue.
func NewReruns(d Deps) *Reruns { return &Reruns{d: d.withDefaults()} }

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
	// RecordDenied puts the clouds whose allow rule refuses the build in
	// the new build, failed with the reason, as a push's plan does (a
	// button's re-run, whose check run then says why); without it such a
	// cloud refuses the whole request with a DeniedError (the API).
	RecordDenied bool
	// Key, when set, names the request (a webhook delivery's id): the new
	// build's id derives from it and the old build's, so the same request
	// retried makes its build once.
	Key string
	// Repo and SHA, when set, are what the build must belong to: the
	// repository (owner/name) and commit a webhook event names. A build of
	// another is refused with a ForeignError.
	Repo, SHA string
}

// RequestError is a re-run request that cannot be served as asked.
type RequestError struct{ Msg string }

// ForeignError refuses a re-run of a build that is not of the repository
// (or commit) the request came from.
type ForeignError struct{ Msg string }

func (e *ForeignError) Error() string { return e.Msg }

func (e *RequestError) Error() string { return e.Msg }

// planID makes a plan's build id from its delivery and generator, so a plan
// retried after a crash finds the build it already recorded.
func planID(delivery, generator string) string {
	h := sha256.Sum256([]byte(delivery + "\x00" + generator))
	return hex.EncodeToString(h[:8])
}

// rerunID is the id of the build a keyed re-run of build old makes.
func rerunID(key, old string) string { return planID("rerun\x00"+key, old) }

// RerunCommit serves a check suite's "Re-run all checks": it re-runs the
// newest build of each generator made for commit sha of repo (among the
// repo's 500 newest builds), leaving out the clouds that ask for a password.
// key names the request (the delivery): retried, it re-runs nothing twice.
// It returns the new builds' ids.
func (r *Reruns) RerunCommit(ctx context.Context, repo, sha, key string) ([]string, error) {
	bs, err := r.d.Store.List(ctx, ListOptions{Repo: repo, Limit: 500})
	if err != nil {
		return nil, err
	}
	done := map[string]bool{} // generators seen, newest build first
	var ids []string
	for _, b := range bs {
		if b.Repo != repo || b.Commit != sha || done[b.Generator] {
			continue
		}
		done[b.Generator] = true
		if b.RerunOf != "" && b.ID == rerunID(key, b.RerunOf) {
			// This request's own re-run, made before it was retried.
			ids = append(ids, b.ID)
			continue
		}
		id, err := r.Rerun(ctx, b.ID, RerunRequest{SkipPasswordClouds: true, RecordDenied: true, Key: key, Repo: repo, SHA: sha})
		var rerr *RequestError
		switch {
		case errors.As(err, &rerr):
			r.d.Logger.Info("check suite re-run: build not re-run", "build", b.ID, "reason", rerr.Msg)
			continue
		case errors.As(err, new(*ForeignError)):
			r.d.Logger.Warn("check suite re-run refused", "build", b.ID, "repo", repo, "sha", sha, "reason", err.Error())
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

// Rerun records a new build of the same generator at the same commit, for the
// asked clouds, and enqueues them; passwords travel sealed in their tasks
// and are stored nowhere. It returns the new build's id ("" when nothing was
// left to re-run).
func (r *Reruns) Rerun(ctx context.Context, id string, req RerunRequest) (string, error) {
	old, sp, err := r.d.Store.Get(ctx, id)
	if err != nil {
		return "", err
	}
	switch {
	case req.Repo != "" && old.Repo != req.Repo:
		return "", &ForeignError{fmt.Sprintf("build %s belongs to repository %s, not %s", id, old.Repo, req.Repo)}
	case req.SHA != "" && old.Commit != req.SHA:
		return "", &ForeignError{fmt.Sprintf("build %s was made for commit %s, not %s", id, shortSHA(old.Commit), shortSHA(req.SHA))}
	}
	if sp == nil {
		return "", fmt.Errorf("build %s has no stored spec", id)
	}
	picked, refused, err := r.pick(old, sp, req)
	if err != nil || len(picked)+len(refused) == 0 {
		return "", err
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
			Queued: now, AsksPassword: r.d.Config.Clouds[name].AsksPassword()}
	}
	for name, why := range refused {
		nb.Clouds[name] = &CloudRecord{Cloud: name, State: builder.StateFailed, BaseImage: sp.Clouds[name].Image,
			Queued: now, Finished: now, Error: why}
	}
	// Not created: the same keyed request ran before; what follows is
	// idempotent (task ids), so its tasks are queued if they were not.
	if _, err := r.d.Store.Create(ctx, nb, sp); err != nil {
		return "", err
	}
	for _, name := range picked {
		// The old build's waiting cloud is done with: it now lives in the new build.
		if old.Clouds[name].State == builder.StateWaiting {
			if _, err := r.d.Store.UpdateCloud(ctx, old.ID, name, func(c *CloudRecord) {
				c.State, c.Error, c.Finished = builder.StateCanceled, "re-run as build "+nb.ID, now
			}); err != nil {
				return "", err
			}
		}
		if err := r.d.Queue.EnqueueBuild(ctx, nb.ID, name, req.Passwords[name]); err != nil {
			return "", err
		}
	}
	r.d.Logger.Info("re-run enqueued", "build", nb.ID, "rerun_of", old.ID, "generator", nb.Generator, "repo", nb.Repo, "sha", nb.Commit, "clouds", picked)
	if len(refused) > 0 {
		if err := r.reportRefused(ctx, nb, refused); err != nil {
			return "", err
		}
	}
	return nb.ID, nil
}

// reportRefused reports the clouds of re-run nb that its allow rules
// refused: no task will (a cloud queued reports itself when it starts).
func (r *Reruns) reportRefused(ctx context.Context, nb *Build, refused map[string]string) error {
	names := slices.Sorted(maps.Keys(refused))
	for _, name := range names {
		r.d.Logger.Warn("re-run: cloud refused by its allow rule: nothing launched", "build", nb.ID, "rerun_of", nb.RerunOf,
			"cloud", name, "repo", nb.Repo, "ref", nb.Ref, "reason", refused[name])
	}
	if r.d.GitHub == nil {
		return nil
	}
	gh, err := r.d.GitHub.Repo(ctx, nb.Installation)
	if err != nil {
		return fmt.Errorf("github client: %w", err)
	}
	return NewReporter(r.d).Report(ctx, gh, nb.ID, names...)
}

// pick returns the clouds of build old that req re-runs, and with
// req.RecordDenied those its allow rules refuse (with why), or a
// RequestError saying why req cannot be served as asked, or a DeniedError.
func (r *Reruns) pick(old *Build, sp *spec.Spec, req RerunRequest) (picked []string, refused map[string]string, err error) {
	names := req.Clouds
	if len(names) == 0 {
		names = old.CloudNames()
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	if len(names) > len(r.d.Config.Clouds) {
		return nil, nil, &RequestError{fmt.Sprintf("%d clouds asked for; this server has %d", len(names), len(r.d.Config.Clouds))}
	}
	for name, pw := range req.Passwords {
		if !slices.Contains(names, name) {
			return nil, nil, &RequestError{fmt.Sprintf("a password was given for cloud %q, which is not re-run", name)}
		}
		if err := secret.Validate(pw); err != nil {
			return nil, nil, &RequestError{fmt.Sprintf("the password for cloud %q: %v", name, err)}
		}
	}
	var missing, denials []string
	for _, name := range names {
		if _, ok := sp.Clouds[name]; !ok || old.Clouds[name] == nil {
			return nil, nil, &RequestError{fmt.Sprintf("build %s has no cloud %q (it has: %s)", old.ID, name, strings.Join(old.CloudNames(), ", "))}
		}
		entry := r.d.Config.Clouds[name]
		if entry == nil {
			return nil, nil, &RequestError{fmt.Sprintf("cloud %q is not in this server's config", name)}
		}
		if entry.AsksPassword() && req.SkipPasswordClouds {
			continue
		}
		if why := denied(r.d.Config, name, old.Repo, old.Ref); why != "" {
			if req.RecordDenied {
				if refused == nil {
					refused = map[string]string{}
				}
				refused[name] = why
			}
			denials = append(denials, why)
			continue
		}
		if entry.AsksPassword() {
			if req.Passwords[name].IsZero() {
				missing = append(missing, name)
				continue
			}
		} else if !req.Passwords[name].IsZero() {
			return nil, nil, &RequestError{fmt.Sprintf("cloud %q does not ask for a password", name)}
		}
		picked = append(picked, name)
	}
	if len(denials) > 0 && !req.RecordDenied {
		return nil, nil, &DeniedError{strings.Join(denials, "; ")}
	}
	if len(missing) > 0 {
		return nil, nil, &RequestError{fmt.Sprintf("cloud(s) %s need a password (\"passwords\": {%q: \"...\"})", strings.Join(missing, ", "), missing[0])}
	}
	return picked, refused, nil
}
