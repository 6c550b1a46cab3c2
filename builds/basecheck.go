package builds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
)

// The base check: a generator built with rebuild: {on_base_change: true}
// is watched (one BaseWatch per generator × branch, recorded when a build
// publishes an image). Every base_check_interval one worker — the queue's
// periodic task runs it, and a Redis lock held for most of the interval
// keeps the others out — resolves each watched generator's image filters
// again. When one finds another image than the newest published image of
// that cloud and branch was built on, the generator is rebuilt at its
// branch's head, once for that set of new base images: its build id derives
// from them, so two checks racing make one build; and the check run says
// "base image changed: OLD → NEW".

// BaseChecker is the base check.
type BaseChecker struct {
	d  Deps
	pl *Planner
}

// NewBaseChecker returns a BaseChecker; it needs d.Config, d.Store,
// d.GitHub and d.Queue (it starts builds as a push would).
func NewBaseChecker(d Deps) *BaseChecker {
	d = d.withDefaults()
	return &BaseChecker{d: d, pl: NewPlanner(d)}
}

// baseCheckLock makes one worker check per interval, however many run and
// however many periodic tasks their schedulers enqueue.
const baseCheckLock = "basecheck"

// BaseCheckReport says what one check did.
type BaseCheckReport struct {
	Watches int          // generator × branch watched
	Changed []BaseChange // new base images found
	Rebuilt []string     // the builds started
	Errors  []error      // what could not be resolved or started (tried again next time)
}

// BaseChange is a cloud whose base image filter finds a newer image.
type BaseChange struct {
	Cloud, Old, New string
}

// Run is the periodic task: a check, unless another worker made one
// within the interval. It returns an error only when Redis is away.
func (c *BaseChecker) Run(ctx context.Context) error {
	log := c.d.Logger.With("component", "basecheck")
	iv := c.d.Config.BaseCheckInterval
	ok, err := c.d.Store.TryLock(ctx, baseCheckLock, max(iv*9/10, time.Second))
	if err != nil {
		return err
	}
	if !ok {
		log.Debug("base check skipped: another worker made it within base_check_interval")
		return nil
	}
	rep, err := c.Check(ctx)
	if err != nil {
		return err
	}
	if len(rep.Changed)+len(rep.Errors) > 0 {
		log.Info("base images checked", "watches", rep.Watches, "changed", len(rep.Changed), "rebuilt", rep.Rebuilt, "errors", errors.Join(rep.Errors...))
	}
	return nil
}

// Check resolves every watched generator's image filters now and rebuilds
// those whose base image changed.
func (c *BaseChecker) Check(ctx context.Context) (BaseCheckReport, error) {
	var rep BaseCheckReport
	ws, err := c.d.Store.BaseWatches(ctx)
	if err != nil {
		return rep, err
	}
	slices.SortFunc(ws, func(a, b BaseWatch) int {
		return strings.Compare(a.Repo+"\x00"+a.Generator+"\x00"+a.Branch, b.Repo+"\x00"+b.Generator+"\x00"+b.Branch)
	})
	rep.Watches = len(ws)
	opened := map[string]clouds.Cloud{}
	for _, w := range ws {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if err := c.checkOne(ctx, w, opened, &rep); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("%s %s@%s: %w", w.Repo, w.Generator, w.Branch, err))
		}
	}
	return rep, nil
}

// checkOne checks one watch.
func (c *BaseChecker) checkOne(ctx context.Context, w BaseWatch, opened map[string]clouds.Cloud, rep *BaseCheckReport) error {
	log := c.d.Logger.With("component", "basecheck", "repo", w.Repo, "generator", w.Generator, "branch", w.Branch)
	_, sp, err := c.d.Store.Get(ctx, w.Build)
	if errors.Is(err, ErrNotFound) || err == nil && (sp == nil || !sp.Rebuild.OnBaseChange || !sp.HasFilter()) {
		log.Info("no longer watched: its last build is gone, or its spec no longer asks for rebuilds")
		return c.d.Store.DropBaseWatch(ctx, w.Repo, w.Generator, w.Branch)
	}
	if err != nil {
		return err
	}
	lineage, err := c.d.Store.Images(ctx, w.Repo, w.Generator)
	if err != nil {
		return err
	}
	var changes []BaseChange
	var errs []error
	for _, name := range sp.CloudNames() {
		cs := sp.Clouds[name]
		old := lastBase(lineage, name, w.Branch)
		entry := c.d.Config.Clouds[name]
		if cs.Filter == nil || old == "" || entry == nil || entry.AsksPassword() {
			continue // an id; never built here; or a cloud the check cannot open
		}
		cl := opened[name]
		if cl == nil {
			if cl, err = entry.Open(ctx, clouds.Credentials{}); err != nil {
				errs = append(errs, fmt.Errorf("open cloud %s: %w", name, err))
				continue
			}
			opened[name] = cl
		}
		img, err := clouds.ResolveImage(ctx, cl, builder.CloudFilter(cs.Filter))
		if err != nil {
			errs = append(errs, fmt.Errorf("cloud %s: %w", name, err))
			continue
		}
		if img.ID != old {
			changes = append(changes, BaseChange{Cloud: name, Old: old, New: img.ID})
		}
	}
	if len(changes) == 0 {
		return errors.Join(errs...)
	}
	rep.Changed = append(rep.Changed, changes...)
	key := baseKey(w, changes)
	if key == w.Tried {
		log.Debug("base image changed; its rebuild was started before", "changes", changes)
		return errors.Join(errs...)
	}
	id, err := c.rebuild(ctx, w, changes, key)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if id != "" {
		rep.Rebuilt = append(rep.Rebuilt, id)
	}
	return errors.Join(errs...)
}

// lastBase is the base image of the newest image published on cloud from branch.
func lastBase(lineage []LineageEntry, cloud, branch string) string {
	for _, e := range lineage { // newest first
		if e.Cloud == cloud && e.Branch == branch {
			return e.BaseImage
		}
	}
	return ""
}

// baseKey names a set of new base images of one watch: the rebuild's id
// derives from it, and the watch remembers it, so it is rebuilt once.
func baseKey(w BaseWatch, changes []BaseChange) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", w.Repo, w.Generator, w.Branch)
	for _, ch := range changes {
		fmt.Fprintf(h, "\x00%s\x00%s", ch.Cloud, ch.New)
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// BaseTrigger says why a generator is rebuilt: "base image changed: OLD →
// NEW (cloud)", the clouds joined with "; ".
func BaseTrigger(changes []BaseChange) string {
	parts := make([]string, len(changes))
	for i, ch := range changes {
		parts[i] = fmt.Sprintf("%s → %s (%s)", ch.Old, ch.New, ch.Cloud)
	}
	return "base image changed: " + strings.Join(parts, "; ")
}

// rebuild builds w's generator at its branch's head, as a push of it would
// (the same build record, statuses and check run), with the new base images
// as the reason. It returns the build's id; "" when the spec at the head no
// longer asks for it.
func (c *BaseChecker) rebuild(ctx context.Context, w BaseWatch, changes []BaseChange, key string) (string, error) {
	log := c.d.Logger.With("component", "basecheck", "repo", w.Repo, "generator", w.Generator, "branch", w.Branch)
	gh, err := c.d.GitHub.Repo(ctx, w.Installation)
	if err != nil {
		return "", fmt.Errorf("github client: %w", err)
	}
	br, ok := gh.(BranchReader)
	if !ok {
		return "", errors.New("this GitHub client cannot read a branch's head")
	}
	head, err := br.BranchHead(ctx, w.Repo, w.Branch)
	if err != nil {
		return "", err
	}
	known := map[string]bool{}
	for name, e := range c.d.Config.Clouds {
		known[name] = e.Type != "ssh"
	}
	sp, err := spec.Parse(gh.FS(ctx, w.Repo, head), w.SpecFile, spec.Options{Clouds: known})
	var serrs spec.Errors
	switch {
	case errors.As(err, &serrs):
		// The push that made it so reported the errors; nothing to build.
		log.Warn("base image changed, but the spec at the branch's head is invalid: not rebuilt", "sha", head, "err", err)
		return "", c.d.Store.WatchBase(ctx, withTried(w, key))
	case err != nil:
		return "", fmt.Errorf("read %s at %s: %w", w.SpecFile, head, err)
	case sp.Name != w.Generator || !sp.Rebuild.OnBaseChange:
		log.Info("base image changed, but the spec at the branch's head no longer asks for rebuilds", "sha", head)
		return "", c.d.Store.DropBaseWatch(ctx, w.Repo, w.Generator, w.Branch)
	}
	p := Push{
		Delivery:     "base-" + key,
		Repo:         w.Repo,
		Installation: w.Installation,
		Ref:          "refs/heads/" + w.Branch,
		After:        head,
		Trigger:      BaseTrigger(changes),
	}
	log.Info("base image changed: rebuilding at the branch's head", "sha", head, "changes", p.Trigger)
	if err := c.pl.startBuild(ctx, gh, p, sp); err != nil {
		return "", err
	}
	return planID(p.Delivery, sp.Name), c.d.Store.WatchBase(ctx, withTried(w, key))
}

func withTried(w BaseWatch, key string) BaseWatch {
	w.Tried, w.Updated = key, time.Now().UTC()
	return w
}
