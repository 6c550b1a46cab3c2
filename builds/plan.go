package builds

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// zeroSHA is the "before" of a push that created the branch.
const zeroSHA = "0000000000000000000000000000000000000000"

// Planner turns a push into builds.
type Planner struct {
	d   Deps
	rep *Reporter
}

// NewPlanner returns a Planner; it needs d.Config, d.Store, d.GitHub and d.Queue.
func NewPlanner(d Deps) *Planner {
	d = d.withDefaults()
	return &Planner{d: d, rep: NewReporter(d)}
}

// Plan decides which generators a push changed and starts their builds:
// records a Build per generator, creates its check run and pending statuses,
// and enqueues one build task per cloud (a password: ask cloud waits instead).
// It is safe to run twice for one push: build ids derive from the delivery.
//
// Every spec file is read and decided on before anything starts, so that a
// generator name two files define builds neither, and a push past
// build.max_generators_per_push builds none: each is reported on the commit
// instead. A push that changes more spec files than that limit (on a
// branch's first push: has more, whatever their branches) is refused before
// any is read.
func (pl *Planner) Plan(ctx context.Context, p Push) error {
	log := pl.d.Logger.With("delivery", p.Delivery, "repo", p.Repo, "sha", p.After, "ref", p.Ref)
	branch, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	switch {
	case p.Deleted || p.After == zeroSHA:
		log.Info("push ignored: branch deleted")
		return nil
	case !ok:
		log.Info("push ignored: not a branch")
		return nil
	}
	gh, err := pl.d.GitHub.Repo(ctx, p.Installation)
	if err != nil {
		return fmt.Errorf("github client: %w", err)
	}
	repo := gh.FS(ctx, p.Repo, p.After)
	files, sizes, err := specFiles(repo)
	if err != nil {
		return fmt.Errorf("list %s at %s: %w", spec.Dir, p.After, err)
	}
	all := p.Created || p.Before == zeroSHA || p.Before == ""
	allWhy := "first push of the branch"
	changed := map[string]bool{}
	if !all {
		names := p.Changed
		if p.Incomplete {
			names, err = gh.ChangedFiles(ctx, p.Repo, p.Before, p.After)
			switch {
			case errors.Is(err, ErrChangesCut):
				all, allWhy = true, "the push changed more files than GitHub's comparison lists"
				log.Info("every generator counts as changed", "why", allWhy)
			case err != nil:
				return fmt.Errorf("compare %s...%s: %w", p.Before, p.After, err)
			}
		}
		for _, n := range names {
			changed[n] = true
		}
	}
	limit := pl.d.Config.Build.MaxGeneratorsPerPush
	if limit <= 0 {
		limit = config.DefaultMaxGeneratorsPerPush
	}
	// Each spec file the push changes may be a build, and costs a read: past
	// the limit, none is read.
	touched := 0
	for _, f := range files {
		if all || changed[f] {
			touched++
		}
	}
	if touched > limit {
		log.Warn("push refused: too many generator specs changed", "specs", touched, "limit", limit)
		return pl.rep.TooManyGenerators(ctx, gh, p, touched, limit, "generator specs")
	}
	// The parser checks cloud names against the config, and needs to know
	// which clouds make images (type ssh does not, so image is optional there).
	known := map[string]bool{}
	for name, e := range pl.d.Config.Clouds {
		known[name] = e.Type != "ssh"
	}
	sc := planScope{all: all, allWhy: allWhy, changed: changed, known: known, sizes: sizes, branch: branch}
	plans := make([]filePlan, len(files))
	err = parallel(len(files), func(i int) error {
		var err error
		plans[i], err = pl.decide(ctx, repo, p, sc, files[i])
		return err
	})
	if err != nil {
		// Any error retries the whole plan, which is idempotent: what an
		// earlier attempt recorded and enqueued is found again, not made twice.
		return err
	}
	var work []func() error
	nbuild := 0
	for _, fp := range plans {
		if fp.errs != nil {
			work = append(work, func() error { return pl.rep.SpecErrors(ctx, gh, p, fp.file, fp.errs) })
		}
	}
	for _, d := range duplicates(plans) {
		log.Warn("generator defined by several spec files: none built", "generator", d.name, "files", d.at, "reported", d.reported)
		if d.reported {
			work = append(work, func() error { return pl.rep.DuplicateName(ctx, gh, p, d.name, d.at) })
		}
	}
	for _, fp := range plans {
		if fp.why != "" && !fp.dup {
			nbuild++
			work = append(work, func() error {
				log.Info("building generator", "file", fp.file, "generator", fp.name, "why", fp.why)
				return pl.startBuild(ctx, gh, p, fp.spec)
			})
		}
	}
	if nbuild > limit {
		log.Warn("push refused: too many generators to build", "generators", nbuild, "limit", limit)
		return pl.rep.TooManyGenerators(ctx, gh, p, nbuild, limit, "generators")
	}
	// The generators of a push are independent: start them at once
	// (bounded), so the last one's builds do not wait for every other's
	// GitHub calls.
	return parallel(len(work), func(i int) error { return work[i]() })
}

// planConcurrency bounds the spec files of one push read, and the
// generators started, at once.
const planConcurrency = 8

// parallel runs fn(0) … fn(n-1), planConcurrency at a time, and joins their errors.
func parallel(n int, fn func(i int) error) error {
	sem := make(chan struct{}, planConcurrency)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// planScope is what a push's plan knows before looking at its spec files.
type planScope struct {
	all     bool             // every generator of the branch is built (first push)
	allWhy  string           // why all is set
	changed map[string]bool  // files the push changed
	known   map[string]bool  // configured clouds: whether each makes images
	sizes   map[string]int64 // spec files' sizes, as listed
	branch  string
}

// filePlan is what a push does with one spec file.
type filePlan struct {
	file    string
	name    string      // its generator; "" when the spec is invalid
	nameAt  string      // where the name is set: file:line:col
	spec    *spec.Spec  // kept only when built (a spec holds its script)
	errs    spec.Errors // its errors, to report (nil when not reported)
	changed bool        // the push changed the file (or builds every generator)
	why     string      // why its generator is built; "" when it is not
	dup     bool        // another spec file defines its generator too
}

// decide reads one spec file of a push and decides whether its generator is
// built, or its errors reported.
func (pl *Planner) decide(ctx context.Context, repo fs.FS, p Push, sc planScope, file string) (filePlan, error) {
	flog := pl.d.Logger.With("delivery", p.Delivery, "repo", p.Repo, "sha", p.After, "ref", p.Ref, "file", file)
	fp := filePlan{file: file, changed: sc.all || sc.changed[file]}
	// Read first, so a GitHub failure is retried rather than reported as
	// an invalid spec.
	var sp *spec.Spec
	data, err := readSpec(repo, file, sc.sizes[file])
	if err == nil {
		sp, err = spec.ParseBytes(repo, file, data, spec.Options{Clouds: sc.known})
	}
	var serrs spec.Errors
	switch {
	case errors.As(err, &serrs):
		if !fp.changed {
			flog.Info("spec invalid but not changed by this push; not reported again")
			return fp, nil
		}
		flog.Warn("spec invalid", "err", err)
		fp.errs = serrs
		return fp, nil
	case err != nil:
		return fp, fmt.Errorf("read %s: %w", file, err)
	}
	fp.name, fp.nameAt = sp.Name, sp.NameAt()
	flog = flog.With("generator", sp.Name)
	branches := sp.Branches
	if len(branches) == 0 {
		branches = []string{p.DefaultBranch}
	}
	if !slices.Contains(branches, sc.branch) {
		flog.Info("generator skipped: branch not in its branches", "branch", sc.branch, "branches", branches)
		return fp, nil
	}
	switch {
	case sc.all:
		fp.why = sc.allWhy
	case sc.changed[file]:
		fp.why = "spec changed"
	case sp.ScriptFile != "" && sc.changed[sp.ScriptFile]:
		fp.why = "script changed"
	default:
		last, ok, err := pl.d.Store.LastClouds(ctx, p.Repo, sp.Name)
		if err != nil {
			return fp, err
		}
		if ok && !slices.Equal(last, sp.CloudNames()) {
			fp.why = "cloud list changed"
		}
	}
	if fp.why == "" {
		flog.Debug("generator unchanged")
		return fp, nil
	}
	fp.spec = sp
	return fp, nil
}

// duplicate is a generator name several spec files define.
type duplicate struct {
	name     string
	at       []string // where each file sets it: file:line:col, in file order
	reported bool     // the push concerns one of them: the commit is told
}

// duplicates finds the generator names that several valid spec files of
// plans define, whatever their branches (as imagegen validate does), and
// marks those plans: none of them is built. A push that changed none of
// those files and builds none of them through its script is not told again.
func duplicates(plans []filePlan) []duplicate {
	byName := map[string][]int{}
	var names []string
	for i, fp := range plans {
		if fp.name == "" {
			continue
		}
		if byName[fp.name] == nil {
			names = append(names, fp.name)
		}
		byName[fp.name] = append(byName[fp.name], i)
	}
	var out []duplicate
	for _, name := range names {
		idx := byName[name]
		if len(idx) < 2 {
			continue
		}
		d := duplicate{name: name}
		for _, i := range idx {
			plans[i].dup = true
			d.at = append(d.at, plans[i].nameAt)
			d.reported = d.reported || plans[i].changed || plans[i].why != ""
		}
		out = append(out, d)
	}
	return out
}

// specFiles lists the spec files in a repository, with their sizes as the
// listing gives them; none when .imagegen is absent.
func specFiles(repo fs.FS) ([]string, map[string]int64, error) {
	entries, err := fs.ReadDir(repo, spec.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var files []string
	sizes := map[string]int64{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if ext := path.Ext(e.Name()); ext == ".yaml" || ext == ".yml" {
			name := path.Join(spec.Dir, e.Name())
			files = append(files, name)
			if fi, err := e.Info(); err == nil {
				sizes[name] = fi.Size()
			}
		}
	}
	sort.Strings(files)
	return files, sizes, nil
}

// readSpec reads a spec file. What no retry can fix — a file over the size
// limit, a symlink or other entry refused, a file gone — comes back as
// spec.Errors, to be reported on the commit; anything else (GitHub away) as
// an error that retries the plan. Retrying a permanent failure would report
// the other specs' errors again on each attempt and never build the
// generators after it.
func readSpec(repo fs.FS, file string, listed int64) ([]byte, error) {
	if listed > spec.MaxFileSize {
		return nil, spec.Errors{{File: file, Msg: fmt.Sprintf("is %d bytes, over the limit of %d bytes (1 MiB)", listed, spec.MaxFileSize)}}
	}
	data, err := fs.ReadFile(repo, file)
	switch {
	case err == nil && len(data) > spec.MaxFileSize:
		return nil, spec.Errors{{File: file, Msg: fmt.Sprintf("is %d bytes, over the limit of %d bytes (1 MiB)", len(data), spec.MaxFileSize)}}
	case err == nil:
		return data, nil
	case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrInvalid), errors.Is(err, fs.ErrNotExist):
		return nil, spec.Errors{{File: file, Msg: fmt.Sprintf("cannot be read: %v", err)}}
	}
	return nil, err
}

// startBuild records the build of spec sp for push p, queues its clouds'
// tasks (a password: ask cloud waits instead) and reports it.
func (pl *Planner) startBuild(ctx context.Context, gh RepoClient, p Push, sp *spec.Spec) error {
	now := time.Now().UTC()
	b := &Build{
		ID:           planID(p.Delivery, sp.Name),
		Repo:         p.Repo,
		Commit:       p.After,
		Ref:          p.Ref,
		Generator:    sp.Name,
		SpecFile:     sp.File,
		Digest:       sp.Digest,
		Created:      now,
		Delivery:     p.Delivery,
		Installation: p.Installation,
		Clouds:       map[string]*CloudRecord{},
	}
	for _, name := range sp.CloudNames() {
		c := &CloudRecord{Cloud: name, State: builder.StateQueued, BaseImage: sp.Clouds[name].Image, Queued: now}
		entry := pl.d.Config.Clouds[name]
		why := denied(pl.d.Config, name, p.Repo, p.Ref)
		switch {
		case entry == nil:
			c.State, c.Error, c.Finished = builder.StateFailed, fmt.Sprintf("cloud %q is not in this server's config", name), now
		case why != "":
			// Recorded failed, never queued: nothing is launched there.
			c.State, c.Error, c.Finished = builder.StateFailed, why, now
			pl.d.Logger.Warn("cloud refused by its allow rule: nothing launched", "delivery", p.Delivery, "generator", sp.Name,
				"cloud", name, "repo", p.Repo, "ref", p.Ref, "reason", why)
		case entry.AsksPassword():
			c.State, c.AsksPassword = builder.StateWaiting, true
		}
		b.Clouds[name] = c
	}
	created, err := pl.d.Store.Create(ctx, b, sp)
	if err != nil {
		return err
	}
	if !created {
		// A retried plan: carry on from what is recorded.
		if b, _, err = pl.d.Store.Get(ctx, b.ID); err != nil {
			return err
		}
	}
	log := pl.d.Logger.With("build", b.ID, "generator", b.Generator, "repo", b.Repo, "sha", b.Commit)
	log.Info("build recorded", "clouds", b.CloudNames(), "new", created)
	// Enqueue first, report after: the builds need not wait for GitHub. A
	// build may then start, even end, before the plan's report is made; but
	// reports are serialized and each reads the record, so the plan's report
	// shows the build's state as it is by then, never an older one (and a
	// build reports its start before its end, so its statuses begin pending).
	for _, name := range b.CloudNames() {
		if b.Clouds[name].State != builder.StateQueued {
			continue
		}
		if err := pl.d.Queue.EnqueueBuild(ctx, b.ID, name, secret.String{}); err != nil {
			return err
		}
	}
	if err := pl.d.Store.SetLastClouds(ctx, p.Repo, sp.Name, sp.CloudNames()); err != nil {
		return err
	}
	return pl.rep.Report(ctx, gh, b.ID, b.CloudNames()...)
}
