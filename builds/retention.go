package builds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
)

// Retention (the spec's keep: N): once a new image is published, the
// images of the same repository × generator × cloud × branch beyond the
// newest N are deleted. Only images whose imagegen tags name that
// repository and generator are candidates, and of those never one a build
// still in progress may use, one a recent build took as its base image, one
// a channel points at, one whose test failed and was kept on purpose, nor
// one whose build record says it is not that build's published image (an
// orphan is the sweep's). A failed delete is reported and retried by the
// sweep; it never fails the build.

// RetentionPlan is what retention does on one cloud for one generator and branch.
type RetentionPlan struct {
	Cloud, Repo, Generator, Branch string
	Keep                           int
	Kept                           []PlannedImage // newest first
	Delete                         []PlannedImage // newest first
}

// PlannedImage is one image of a plan and why it is kept or deleted.
type PlannedImage struct {
	Image  clouds.Image `json:"image"`
	Build  string       `json:"build,omitempty"`
	Reason string       `json:"reason"`
}

// retentionWindow is how far back builds are read for the images they use
// as base images (a build queued, waiting for a password, or about to be
// re-run may take one): as far as the sweep looks for lost builds.
const retentionWindow = lostWindow

// Retention plans and applies keep: on one cloud.
type Retention struct {
	d Deps
}

// NewRetention returns a Retention; it needs d.Store (and d.Config for the sweep).
func NewRetention(d Deps) *Retention { return &Retention{d: d.withDefaults()} }

// protections are the images retention never deletes, across generators.
type protections struct {
	base     map[string]string // image id → the build that used it as its base image
	inUse    map[string]string // image id → the build, still in progress, that made or uses it
	channels map[string]bool   // cloud \x00 image id → a channel points at it
}

// protections reads which images builds use: as base images (every build
// of the window) and as their product while in progress.
func (r *Retention) protections(ctx context.Context, cloud string, lineage []LineageEntry) (protections, error) {
	p := protections{base: map[string]string{}, inUse: map[string]string{}, channels: channelTargets(lineage)}
	ids, err := r.d.Store.BuildsSince(ctx, time.Now().Add(-retentionWindow))
	if err != nil {
		return p, fmt.Errorf("list recent builds: %w", err)
	}
	for _, id := range ids {
		b, _, err := r.d.Store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return p, err
		}
		c := b.Clouds[cloud]
		if c == nil {
			continue
		}
		if c.BaseImage != "" {
			p.base[c.BaseImage] = b.ID
		}
		if !c.State.Final() && c.ImageID != "" {
			p.inUse[c.ImageID] = b.ID
		}
	}
	return p, nil
}

// recordCache reads each build record once per plan.
type recordCache struct {
	st   Store
	recs map[string]*Build
}

func (rc *recordCache) get(ctx context.Context, id string) (*Build, error) {
	if b, ok := rc.recs[id]; ok {
		return b, nil
	}
	b, _, err := rc.st.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		b, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	rc.recs[id] = b
	return b, nil
}

// Plan decides what keep: N deletes among imgs, the images cloud lists
// (clouds.ImageLister's BuildImages), for repo × generator × branch.
func (r *Retention) Plan(ctx context.Context, cloud string, imgs []clouds.Image, repo, generator, branch string, keep int) (RetentionPlan, error) {
	plan := RetentionPlan{Cloud: cloud, Repo: repo, Generator: generator, Branch: branch, Keep: keep}
	lineage, err := r.d.Store.Images(ctx, repo, generator)
	if err != nil {
		return plan, err
	}
	prot, err := r.protections(ctx, cloud, lineage)
	if err != nil {
		return plan, err
	}
	rc := &recordCache{st: r.d.Store, recs: map[string]*Build{}}
	type cand struct {
		PlannedImage
		when time.Time
	}
	var cands []cand
	for _, img := range imgs {
		if img.Tags[clouds.TagRepo] != repo || img.Tags[clouds.TagGenerator] != generator {
			continue // another repository's or generator's, whatever its name
		}
		build := img.Tags[clouds.TagBuild]
		b, err := rc.get(ctx, build)
		if err != nil {
			return plan, err
		}
		imgBranch, when := img.Tags[clouds.TagBranch], img.Created
		if b != nil {
			c := b.Clouds[cloud]
			if c == nil || c.State != builder.StateSucceeded || c.ImageID != img.ID {
				continue // not this build's published image here: in progress, kept failed, or an orphan
			}
			if imgBranch == "" {
				imgBranch = branchOf(b.Ref)
			}
			if when.IsZero() {
				when = c.Finished
			}
		}
		if imgBranch != branch || img.Tags[clouds.TagTested] == clouds.TestedFailed {
			continue
		}
		cands = append(cands, cand{PlannedImage{Image: img, Build: build}, when})
	}
	// Newest first; an image whose date is unknown counts as newest (kept).
	slices.SortStableFunc(cands, func(a, b cand) int {
		switch {
		case a.when.IsZero() != b.when.IsZero():
			if a.when.IsZero() {
				return -1
			}
			return 1
		case !a.when.Equal(b.when):
			return b.when.Compare(a.when)
		}
		return cmp.Compare(b.Image.Name, a.Image.Name)
	})
	for i, c := range cands {
		pi := c.PlannedImage
		switch {
		case i < keep:
			pi.Reason = fmt.Sprintf("one of the newest %d (keep: %d)", keep, keep)
		case prot.channels[cloud+"\x00"+pi.Image.ID]:
			pi.Reason = "a channel points at it"
		case prot.inUse[pi.Image.ID] != "":
			pi.Reason = "build " + prot.inUse[pi.Image.ID] + " is still using it"
		case prot.base[pi.Image.ID] != "":
			pi.Reason = "build " + prot.base[pi.Image.ID] + " took it as its base image"
		default:
			pi.Reason = fmt.Sprintf("older than the newest %d (keep: %d)", keep, keep)
			plan.Delete = append(plan.Delete, pi)
			continue
		}
		plan.Kept = append(plan.Kept, pi)
	}
	return plan, nil
}

// Apply deletes what plan says, and returns what it deleted and the
// errors of what it could not. The build record of each deleted image, while
// kept, says when it was removed and by whom (by), so that its story does.
func (r *Retention) Apply(ctx context.Context, cl clouds.Cloud, plan RetentionPlan, by string) ([]PrunedImage, []string) {
	var done []PrunedImage
	var errs []string
	for _, pi := range plan.Delete {
		img := pi.Image
		if err := cl.DeleteImage(ctx, &img); err != nil {
			errs = append(errs, fmt.Sprintf("delete %s (%s): %v", img.ID, img.Name, err))
			continue
		}
		done = append(done, PrunedImage{ID: img.ID, Name: img.Name})
		r.recordRemoval(ctx, plan.Cloud, img, by)
		r.d.Logger.Info("retention deleted an image", "cloud", plan.Cloud, "repo", plan.Repo, "generator", plan.Generator,
			"branch", plan.Branch, "keep", plan.Keep, "image", img.ID, "name", img.Name)
	}
	return done, errs
}

// recordRemoval marks a deleted image's part of its build as removed; a
// record that has expired is left alone.
func (r *Retention) recordRemoval(ctx context.Context, cloud string, img clouds.Image, by string) {
	build := img.Tags[clouds.TagBuild]
	if build == "" {
		return
	}
	rm := &Removal{At: time.Now().UTC(), By: by}
	_, err := r.d.Store.UpdateCloud(ctx, build, cloud, func(c *CloudRecord) {
		if c.ImageID == img.ID {
			c.Removed = rm
		}
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		r.d.Logger.Warn("record that retention removed an image", "cloud", cloud, "image", img.ID, "build", build, "err", err)
	}
}

// Run lists cl's images, plans and applies keep for repo × generator ×
// branch, and records a retention with failures for the sweep.
func (r *Retention) Run(ctx context.Context, cloud string, cl clouds.Cloud, p PendingPrune) ([]PrunedImage, []string) {
	lister, ok := cl.(clouds.ImageLister)
	if !ok {
		return nil, []string{"this cloud cannot list its images, so keep: is not applied here"}
	}
	imgs, err := lister.BuildImages(ctx, "")
	var plan RetentionPlan
	if err == nil {
		plan, err = r.Plan(ctx, cloud, imgs, p.Repo, p.Generator, p.Branch, p.Keep)
	}
	var done []PrunedImage
	var errs []string
	if err != nil {
		errs = []string{"plan: " + err.Error()}
	} else {
		by := fmt.Sprintf("retention (keep: %d)", p.Keep)
		if p.Build != "" {
			by += " when build " + p.Build + " published"
		}
		done, errs = r.Apply(ctx, cl, plan, by)
	}
	p.Cloud, p.Errors = cloud, errs
	if len(errs) > 0 {
		if p.Since.IsZero() {
			p.Since = time.Now().UTC()
		}
		if err := r.d.Store.AddPendingPrune(ctx, p); err != nil {
			r.d.Logger.Error("record a retention to retry", "cloud", cloud, "err", err)
		}
	} else if err := r.d.Store.DropPendingPrune(ctx, p); err != nil {
		r.d.Logger.Warn("forget a retention retried", "cloud", cloud, "err", err)
	}
	return done, errs
}

// retentionTimeout bounds a build's own retention.
const retentionTimeout = 5 * time.Minute

// retain runs keep: after a cloud's part published its image, and records
// what it removed on the cloud's record (the check run lists it).
func (ru *run) retain(ctx context.Context, cl clouds.Cloud, res builder.Result) {
	if res.State != builder.StateSucceeded || res.Image == nil || ru.sp.Keep <= 0 {
		return
	}
	branch := branchOf(ru.b.Ref)
	if branch == "" {
		return
	}
	// Bounded: the final status waits for it; what is left, the sweep does.
	ctx, cancel := context.WithTimeout(ctx, retentionTimeout)
	defer cancel()
	done, errs := NewRetention(ru.d).Run(ctx, ru.req.Cloud, cl, PendingPrune{
		Repo: ru.b.Repo, Generator: ru.b.Generator, Branch: branch, Keep: ru.sp.Keep, Build: ru.b.ID})
	if len(done)+len(errs) == 0 {
		return
	}
	for _, e := range errs {
		ru.log.Warn("retention could not delete an older image; the sweep tries again", "err", e)
	}
	if _, err := ru.d.Store.UpdateCloud(ctx, ru.b.ID, ru.req.Cloud, func(c *CloudRecord) {
		c.Pruned, c.PruneErrors = done, errs
	}); err != nil {
		ru.log.Error("record retention", "err", err)
	}
}

// sweepPrunes runs again the retentions whose deletes failed.
func (s *Sweeper) sweepPrunes(ctx context.Context, rep *SweepReport) {
	ps, err := s.d.Store.PendingPrunes(ctx)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return
	}
	ret := NewRetention(s.d)
	for _, p := range ps {
		entry := s.d.Config.Clouds[p.Cloud]
		if entry == nil {
			_ = s.d.Store.DropPendingPrune(ctx, p) // the cloud left the config
			continue
		}
		if entry.AsksPassword() {
			continue
		}
		cl, err := entry.Open(ctx, clouds.Credentials{})
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("open cloud %s: %w", p.Cloud, err))
			continue
		}
		done, errs := ret.Run(ctx, p.Cloud, cl, p)
		for _, d := range done {
			rep.Removed = append(rep.Removed, clouds.Resource{Kind: clouds.KindImage, ID: d.ID, Name: d.Name})
		}
		if len(errs) > 0 {
			rep.Errors = append(rep.Errors, fmt.Errorf("retention of %s/%s on %s: %s", p.Repo, p.Generator, p.Cloud, strings.Join(errs, "; ")))
		}
	}
}

// PlanAll plans keep: for every repository × generator × branch whose
// images cloud lists: imgs are the cloud's imagegen images (BuildImages);
// each generator's keep is its newest build's spec's. Generators whose spec
// has no keep: (or whose records are gone) keep everything and are left out.
func (r *Retention) PlanAll(ctx context.Context, cloud string, imgs []clouds.Image) ([]RetentionPlan, error) {
	type group struct{ repo, gen, branch string }
	rc := &recordCache{st: r.d.Store, recs: map[string]*Build{}}
	seen := map[group]bool{}
	var groups []group
	for _, img := range imgs {
		g := group{img.Tags[clouds.TagRepo], img.Tags[clouds.TagGenerator], img.Tags[clouds.TagBranch]}
		if g.repo == "" || g.gen == "" {
			continue
		}
		if g.branch == "" {
			b, err := rc.get(ctx, img.Tags[clouds.TagBuild])
			if err != nil {
				return nil, err
			}
			if b == nil || branchOf(b.Ref) == "" {
				continue // no branch known: never a candidate
			}
			g.branch = branchOf(b.Ref)
		}
		if !seen[g] {
			seen[g] = true
			groups = append(groups, g)
		}
	}
	slices.SortFunc(groups, func(a, b group) int {
		return cmp.Compare(a.repo+"\x00"+a.gen+"\x00"+a.branch, b.repo+"\x00"+b.gen+"\x00"+b.branch)
	})
	keeps := map[string]int{}
	var plans []RetentionPlan
	for _, g := range groups {
		k, ok := keeps[g.repo+"\x00"+g.gen]
		if !ok {
			var err error
			if k, err = r.keepOf(ctx, g.repo, g.gen); err != nil {
				return nil, err
			}
			keeps[g.repo+"\x00"+g.gen] = k
		}
		if k <= 0 {
			continue
		}
		p, err := r.Plan(ctx, cloud, imgs, g.repo, g.gen, g.branch, k)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// keepOf is the keep: of the spec of repo × generator's newest build; 0
// when it has none, or no build is recorded.
func (r *Retention) keepOf(ctx context.Context, repo, generator string) (int, error) {
	bs, err := r.d.Store.List(ctx, ListOptions{Repo: repo, Generator: generator, Limit: 1})
	if err != nil || len(bs) == 0 {
		return 0, err
	}
	_, sp, err := r.d.Store.Get(ctx, bs[0].ID)
	if errors.Is(err, ErrNotFound) || sp == nil {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return sp.Keep, nil
}
