package builds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
)

// The image lifecycle: an image counts once its build succeeded and its
// test (if the spec has one) passed; it then enters its generator's lineage
// with its branch, channel and test result, where Latest finds the newest
// good one (GET /api/v1/latest). Retention (retention.go) deletes older
// ones; the base check (basecheck.go) rebuilds a generator when a base image
// filter finds a newer image.

// LifecycleStore is what the lifecycle keeps besides build records and
// lineage; package store implements it.
type LifecycleStore interface {
	// WatchBase records (or replaces) the generator × branch whose base
	// images the base check resolves again; Tried is kept from the record
	// it replaces when w.Tried is empty.
	WatchBase(ctx context.Context, w BaseWatch) error
	// BaseWatches returns every watch.
	BaseWatches(ctx context.Context) ([]BaseWatch, error)
	// DropBaseWatch removes the watch of repo × generator × branch.
	DropBaseWatch(ctx context.Context, repo, generator, branch string) error

	// AddPendingPrune records a retention whose deletes did not all go
	// through, for the sweep to run again (replacing one of the same
	// cloud × repo × generator × branch).
	AddPendingPrune(ctx context.Context, p PendingPrune) error
	// PendingPrunes returns them.
	PendingPrunes(ctx context.Context) ([]PendingPrune, error)
	// DropPendingPrune forgets one, once its deletes went through.
	DropPendingPrune(ctx context.Context, p PendingPrune) error
}

// BaseWatch is a generator × branch built with rebuild: {on_base_change:
// true}: the base check resolves the image filters of Build's spec again.
type BaseWatch struct {
	Repo         string    `json:"repo"`
	Generator    string    `json:"generator"`
	Branch       string    `json:"branch"`
	SpecFile     string    `json:"spec_file"`
	Installation int64     `json:"installation,omitempty"`
	Build        string    `json:"build"`           // the last build that published an image
	Tried        string    `json:"tried,omitempty"` // the base images a rebuild was started for (baseKey)
	Updated      time.Time `json:"updated"`
}

// PendingPrune is a retention to run again: some deletes failed.
type PendingPrune struct {
	Cloud     string    `json:"cloud"`
	Repo      string    `json:"repo"`
	Generator string    `json:"generator"`
	Branch    string    `json:"branch"`
	Keep      int       `json:"keep"`
	Build     string    `json:"build"`  // the build whose publishing ran it
	Errors    []string  `json:"errors"` // what failed, last time
	Since     time.Time `json:"since"`
}

// BranchReader is a RepoClient that can read a branch's head; package
// github implements it. The base check rebuilds a generator at its
// branch's head.
type BranchReader interface {
	BranchHead(ctx context.Context, repo, branch string) (string, error)
}

// branchOf is the branch of a ref: refs/heads/main → main; "" for anything else.
func branchOf(ref string) string {
	b, ok := strings.CutPrefix(ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}

// addToLineage records a cloud's published image in its generator's
// lineage, with its branch, channel and test result, and keeps the
// generator's base watch in step with its spec.
func addToLineage(ctx context.Context, d Deps, b *Build, sp *spec.Spec, rec *CloudRecord) error {
	branch := branchOf(b.Ref)
	e := LineageEntry{
		Build: b.ID, Repo: b.Repo, Generator: b.Generator, Cloud: rec.Cloud, Commit: b.Commit, Ref: b.Ref, Digest: b.Digest,
		BaseImage: rec.BaseImage, ImageID: rec.ImageID, ImageName: rec.ImageName, Created: rec.Finished, Branch: branch,
	}
	if rec.Test != nil {
		e.Tested = rec.Test.Result
	}
	if sp != nil && sp.ChannelMovesOn(branch) {
		e.Channel = sp.Channel
	}
	err := d.Store.AddImage(ctx, e)
	if sp == nil || branch == "" {
		return err
	}
	switch {
	case sp.Rebuild.OnBaseChange && sp.HasFilter():
		err = errors.Join(err, d.Store.WatchBase(ctx, BaseWatch{Repo: b.Repo, Generator: b.Generator, Branch: branch,
			SpecFile: b.SpecFile, Installation: b.Installation, Build: b.ID, Updated: time.Now().UTC()}))
	default:
		err = errors.Join(err, d.Store.DropBaseWatch(ctx, b.Repo, b.Generator, branch))
	}
	return err
}

// LatestQuery asks for the newest good image of a generator on a cloud.
type LatestQuery struct {
	Repo, Generator, Cloud string
	Branch                 string // "": any branch the generator builds
	Channel                string // "": no channel; else the newest image that moved it
}

// Latest returns the newest image of q's generator on q.Cloud that counts:
// its build succeeded, and its test passed when the spec has one (an image
// whose test failed never enters the lineage). ErrNotFound when there is none.
func Latest(ctx context.Context, st Store, q LatestQuery) (*LineageEntry, error) {
	imgs, err := st.Images(ctx, q.Repo, q.Generator)
	if err != nil {
		return nil, err
	}
	for _, e := range imgs { // newest first
		if e.Cloud != q.Cloud || e.ImageID == "" || e.Tested == "failed" ||
			(q.Branch != "" && e.Branch != q.Branch) || (q.Channel != "" && e.Channel != q.Channel) {
			continue
		}
		return &e, nil
	}
	return nil, fmt.Errorf("%s: %w", q.NotFound(), ErrNotFound)
}

// NotFound says that no image answers q.
func (q LatestQuery) NotFound() string {
	what := fmt.Sprintf("no image of generator %q of %s on cloud %q", q.Generator, q.Repo, q.Cloud)
	if q.Branch != "" {
		what += fmt.Sprintf(" from branch %q", q.Branch)
	}
	if q.Channel != "" {
		what += fmt.Sprintf(" in channel %q", q.Channel)
	}
	return what + " has succeeded (and passed its test, if it has one)"
}

// channelTargets are the images channels point at: for each cloud and
// channel, the newest lineage entry that moved it.
func channelTargets(lineage []LineageEntry) map[string]bool {
	seen := map[string]bool{}
	out := map[string]bool{}
	for _, e := range lineage { // newest first
		if e.Channel == "" || seen[e.Cloud+"\x00"+e.Channel] {
			continue
		}
		seen[e.Cloud+"\x00"+e.Channel] = true
		out[e.Cloud+"\x00"+e.ImageID] = true
	}
	return out
}

// isTestPhase says whether phase is part of the test stage.
func isTestPhase(p builder.Phase) bool {
	return p == builder.PhaseTestLaunch || p == builder.PhaseTestSSH || p == builder.PhaseTest
}
