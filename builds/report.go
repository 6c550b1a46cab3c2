package builds

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/manifest"
)

// Reporter brings a build's commit statuses and check run up to date.
type Reporter struct{ d Deps }

// NewReporter returns a Reporter; it needs d.Config and d.Store.
func NewReporter(d Deps) *Reporter { return &Reporter{d: d.withDefaults()} }

// reportLockTTL bounds how long a report may hold a build's report lock.
const reportLockTTL = time.Minute

// Report sets the statuses of the given clouds and brings the check run up
// to date, from one read of the record made under the build's report lock.
// Reports are serialized across workers and plans, and each reads the record
// after the one before it landed, so the last to land shows the newest state:
// a plan's "queued" or a start's "running" never lands after a final status,
// and when clouds finish at once the check run's last writer is the newest.
func (r *Reporter) Report(ctx context.Context, gh RepoClient, id string, cloudNames ...string) error {
	unlock, err := r.d.Store.Lock(ctx, "report:"+id, reportLockTTL)
	if err != nil {
		return err
	}
	defer unlock()
	b, sp, err := r.d.Store.Get(ctx, id)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range cloudNames {
		if c := b.Clouds[name]; c != nil {
			if err := gh.SetStatus(ctx, b.Repo, b.Commit, r.status(b, c)); err != nil {
				errs = append(errs, fmt.Errorf("status %s: %w", name, err))
			}
		}
	}
	if gh.CheckRuns() {
		errs = append(errs, r.checkRun(ctx, gh, b, sp))
	}
	return errors.Join(errs...)
}

// status is the commit status of cloud record c of build b.
func (r *Reporter) status(b *Build, c *CloudRecord) Status {
	return cloudStatus(b, c, r.d.Config.BaseURL, r.d.BuildURL(b.ID))
}

// checkRun creates or updates the build's check run; the caller holds the
// report lock. Once every cloud is done, it carries the build's drift.
func (r *Reporter) checkRun(ctx context.Context, gh RepoClient, b *Build, sp *spec.Spec) error {
	var dr *Drift
	if buildDone(b) {
		var err error
		if dr, err = BuildDrift(ctx, r.d.Store, b, sp); err != nil {
			// The drift is a courtesy: the check run goes out without it.
			r.d.Logger.Error("drift", "build", b.ID, "err", err)
		}
	}
	cr := RenderCheckRunDrift(b, dr, r.d.Config.BaseURL, r.d.BuildURL(b.ID), time.Now().UTC())
	if b.CheckRunID != 0 {
		if err := gh.UpdateCheckRun(ctx, b.Repo, b.CheckRunID, cr); err != nil {
			return fmt.Errorf("update check run: %w", err)
		}
		return nil
	}
	crID, found, err := gh.FindCheckRun(ctx, b.Repo, b.Commit, cr.Name, cr.ExternalID)
	if err != nil {
		return fmt.Errorf("find check run: %w", err)
	}
	var errs []error
	if found {
		// Made by an attempt that died before recording it: adopt it.
		if err := gh.UpdateCheckRun(ctx, b.Repo, crID, cr); err != nil {
			errs = append(errs, fmt.Errorf("update check run: %w", err))
		}
	} else if crID, err = gh.CreateCheckRun(ctx, b.Repo, cr); err != nil {
		return fmt.Errorf("create check run: %w", err)
	}
	if err := r.d.Store.UpdateMeta(ctx, b.ID, func(m *Build) { m.CheckRunID = crID }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SpecErrors fails the generator's check run with the errors of its spec
// file, which push p brought (a token, which cannot make check runs, gets a
// failed commit status instead).
func (r *Reporter) SpecErrors(ctx context.Context, gh RepoClient, p Push, file string, errs spec.Errors) error {
	gen := strings.TrimSuffix(path.Base(file), path.Ext(file))
	var sum strings.Builder
	fmt.Fprintf(&sum, "`%s` at `%s` is not a valid generator spec:\n\n```\n", file, shortSHA(p.After))
	for i, e := range errs {
		line := e.Error() + "\n"
		if sum.Len()+len(line) > MaxCheckRunText-200 {
			fmt.Fprintf(&sum, "… and %d more\n", len(errs)-i)
			break
		}
		sum.WriteString(line)
	}
	sum.WriteString("```\n\nRun `imagegen validate` to check specs before pushing.\n")
	desc := "invalid spec"
	if len(errs) > 0 {
		desc = "invalid spec: " + errs[0].Error()
	}
	err := r.fail(ctx, gh, p, failure{
		name:    gen,
		title:   fmt.Sprintf("invalid spec: %d %s", len(errs), plural(len(errs), "error", "errors")),
		summary: sum.String(),
		desc:    desc,
		key:     "spec:" + p.Delivery + ":" + gen,
	})
	if err != nil {
		return fmt.Errorf("report spec errors in %s: %w", file, err)
	}
	return nil
}

// PushCheck is the name of the check run (and the commit status context)
// that speaks for a push as a whole rather than for one generator.
const PushCheck = "imagegen"

// LimitKey is the config key that bounds the generators of a push.
const LimitKey = "build.max_generators_per_push"

// TooManyGenerators fails push p on its commit: it changes n generators,
// counted as what says ("generator specs": files in .imagegen;
// "generators": through their specs, scripts or cloud lists), more than
// limit, the most one push may build; none is built.
func (r *Reporter) TooManyGenerators(ctx context.Context, gh RepoClient, p Push, n, limit int, what string) error {
	var sum strings.Builder
	fmt.Fprintf(&sum, "This push (`%s`) changes **%d %s**, more than the **%d** generators one push may build "+
		"(`%s` in the imagegen server's config). **None was built.**\n\n", shortSHA(p.After), n, what, limit, LimitKey)
	fmt.Fprintf(&sum, "Push the changes in parts of at most %d generators, or ask the operator of imagegen to raise `%s`.\n", limit, LimitKey)
	err := r.fail(ctx, gh, p, failure{
		check:   PushCheck,
		title:   fmt.Sprintf("too many generators in one push: %d, the limit is %d", n, limit),
		summary: sum.String(),
		desc:    fmt.Sprintf("%d %s changed, over the limit of %d per push (%s): none built", n, what, limit, LimitKey),
		key:     "limit:" + p.Delivery,
	})
	if err != nil {
		return fmt.Errorf("report too many generators: %w", err)
	}
	return nil
}

// DuplicateName fails generator name on push p's commit: the spec files at
// (each "file:line:col", where the name is set) all define it, so none of
// them is built.
func (r *Reporter) DuplicateName(ctx context.Context, gh RepoClient, p Push, name string, at []string) error {
	msg := DuplicateMessage(name, at)
	var sum strings.Builder
	fmt.Fprintf(&sum, "%s at `%s`: a generator's name must be unique in a repository, so none of them was built.\n\n```\n", msg, shortSHA(p.After))
	for _, a := range at {
		fmt.Fprintf(&sum, "%s: generator %q\n", a, name)
	}
	sum.WriteString("```\n\nGive all but one of them another `name:` (a spec without `name:` is named after its file). " +
		"Run `imagegen validate` to check specs before pushing.\n")
	err := r.fail(ctx, gh, p, failure{
		name:    name,
		title:   fmt.Sprintf("%d spec files define generator %q", len(at), name),
		summary: sum.String(),
		desc:    msg,
		key:     "dup:" + p.Delivery + ":" + name,
	})
	if err != nil {
		return fmt.Errorf("report generator %q defined twice: %w", name, err)
	}
	return nil
}

// DuplicateMessage says that the spec files at (file or file:line:col) all
// define generator name: "a.yaml and b.yaml both define generator "web"".
func DuplicateMessage(name string, at []string) string {
	files := make([]string, len(at))
	for i, a := range at {
		files[i], _, _ = strings.Cut(a, ":")
	}
	if len(files) == 2 {
		return fmt.Sprintf("%s and %s both define generator %q", files[0], files[1], name)
	}
	return fmt.Sprintf("%s and %s all define generator %q", strings.Join(files[:len(files)-1], ", "), files[len(files)-1], name)
}

// failure is a push's problem reported on its commit instead of a build.
type failure struct {
	name    string // the generator it concerns: check run imagegen: <name>, status imagegen/<name>
	check   string // or the check run name and status context, for the push as a whole
	title   string
	summary string // markdown
	desc    string // the commit status's description, with a token
	key     string // the check run's external id, keyed by the delivery
}

// fail reports f on push p's commit: a failed check run, or with a token
// (no check runs) a failed commit status. A plan retried after GitHub made
// the run (a worker killed before the plan ended) finds it by its external
// id and makes no second.
func (r *Reporter) fail(ctx context.Context, gh RepoClient, p Push, f failure) error {
	check, statusCtx := CheckRunName(f.name), "imagegen/"+f.name
	if f.check != "" {
		check, statusCtx = f.check, f.check
	}
	if !gh.CheckRuns() {
		return gh.SetStatus(ctx, p.Repo, p.After, Status{
			State: "failure", Context: statusCtx, Description: truncate(firstLine(f.desc), MaxStatusDescription),
		})
	}
	now := time.Now().UTC()
	cr := CheckRun{
		Name:        check,
		HeadSHA:     p.After,
		Status:      "completed",
		Conclusion:  "failure",
		Title:       f.title,
		Summary:     f.summary,
		StartedAt:   now,
		CompletedAt: now,
		ExternalID:  f.key,
	}
	_, found, err := gh.FindCheckRun(ctx, p.Repo, p.After, cr.Name, cr.ExternalID)
	if err != nil {
		return fmt.Errorf("find check run: %w", err)
	}
	if found {
		return nil
	}
	_, err = gh.CreateCheckRun(ctx, p.Repo, cr)
	return err
}

// truncate cuts s to at most n characters (runes), marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// firstLine keeps a status description to the error's first line.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// cloudStatus is the commit status for one cloud's record; link is where the
// status points (the build's page, signed).
func cloudStatus(b *Build, c *CloudRecord, baseURL, link string) Status {
	st := Status{Context: StatusContext(b.Generator, c.Cloud), TargetURL: link}
	switch c.State {
	case builder.StateQueued:
		st.State, st.Description = "pending", "queued"
	case builder.StateWaiting:
		st.State = "pending"
		st.Description = fmt.Sprintf("needs password: imagegen rerun --server %s --cloud %s %s", baseURL, c.Cloud, b.ID)
		if utf8.RuneCountInString(st.Description) > MaxStatusDescription {
			st.Description = fmt.Sprintf("needs password: imagegen rerun --cloud %s %s", c.Cloud, b.ID)
		}
	case builder.StateRunning:
		st.State = "pending"
		st.Description = "running"
		if c.Phase != "" {
			st.Description = "running: " + string(c.Phase)
		}
	case builder.StateTesting:
		st.State, st.Description = "pending", "testing the new image"
		if c.Phase != "" {
			st.Description = string(c.Phase)
		}
	case builder.StateSucceeded:
		st.State = "success"
		st.Description = "built " + c.ImageName
		if c.ImageID != "" && c.ImageID != c.ImageName {
			st.Description += " (" + c.ImageID + ")"
		}
		if c.ImageName == "" {
			st.Description = "succeeded"
		}
		if c.Test != nil && c.Test.Result == "passed" {
			st.Description += "; test passed"
		}
	case builder.StateCanceled:
		st.State, st.Description = "error", "canceled"
		if c.Error != "" {
			st.Description = "canceled: " + firstLine(c.Error)
		}
	default:
		st.State, st.Description = "failure", "failed"
		if c.Error != "" {
			st.Description = "failed: " + firstLine(c.Error)
		}
	}
	st.Description = truncate(st.Description, MaxStatusDescription)
	return st
}

// buildDone reports whether every cloud of b is final or waits for a
// password: its check run is completed.
func buildDone(b *Build) bool {
	for _, c := range b.Clouds {
		if !c.State.Final() && c.State != builder.StateWaiting {
			return false
		}
	}
	return true
}

// RenderCheckRun renders the check run for the build as it stands at now;
// link is the build's page (details_url).
func RenderCheckRun(b *Build, baseURL, link string, now time.Time) CheckRun {
	return RenderCheckRunDrift(b, nil, baseURL, link, now)
}

// RenderCheckRunDrift is RenderCheckRun with the build's drift (nil: none
// known): a Drift section in the summary, a line per cloud on what changed
// since its previous image in the text, and, with on_drift: fail, a failed
// conclusion when the clouds differ.
func RenderCheckRunDrift(b *Build, dr *Drift, baseURL, link string, now time.Time) CheckRun {
	cr := CheckRun{
		Name:       CheckRunName(b.Generator),
		HeadSHA:    b.Commit,
		DetailsURL: link,
		ExternalID: b.ID,
	}
	counts := map[builder.State]int{}
	var started time.Time
	finished := true
	var last time.Time
	for _, c := range b.Clouds {
		counts[c.State]++
		if !c.Started.IsZero() && (started.IsZero() || c.Started.Before(started)) {
			started = c.Started
		}
		if c.Finished.After(last) {
			last = c.Finished
		}
		if !c.State.Final() && c.State != builder.StateWaiting {
			finished = false
		}
	}
	n := len(b.Clouds)
	cr.StartedAt = started
	switch {
	case !finished && started.IsZero():
		cr.Status = "queued"
		cr.Title = fmt.Sprintf("%d %s queued", n, plural(n, "cloud", "clouds"))
	case !finished:
		cr.Status = "in_progress"
		cr.Title = fmt.Sprintf("%d of %d %s done", counts[builder.StateSucceeded]+counts[builder.StateFailed]+counts[builder.StateCanceled], n, plural(n, "cloud", "clouds"))
	default:
		cr.Status = "completed"
		cr.CompletedAt = last
		if cr.CompletedAt.IsZero() {
			cr.CompletedAt = now
		}
		switch {
		case counts[builder.StateFailed] > 0:
			cr.Conclusion = "failure"
			cr.Title = fmt.Sprintf("%d of %d %s failed", counts[builder.StateFailed], n, plural(n, "cloud", "clouds"))
		case counts[builder.StateWaiting] > 0:
			cr.Conclusion = "action_required"
			cr.Title = fmt.Sprintf("%d %s %s a password", counts[builder.StateWaiting], plural(counts[builder.StateWaiting], "cloud", "clouds"), plural(counts[builder.StateWaiting], "needs", "need"))
		case counts[builder.StateCanceled] > 0:
			cr.Conclusion = "cancelled"
			cr.Title = fmt.Sprintf("%d of %d %s canceled", counts[builder.StateCanceled], n, plural(n, "cloud", "clouds"))
		case dr.Differs() && dr.OnDrift == spec.OnDriftFail:
			cr.Conclusion = "failure"
			cr.Title = fmt.Sprintf("%d %s built, but the clouds differ (on_drift: fail)", n, plural(n, "image", "images"))
		case dr.Differs():
			cr.Conclusion = "success"
			cr.Title = fmt.Sprintf("%d %s built; the clouds differ", n, plural(n, "image", "images"))
		default:
			cr.Conclusion = "success"
			cr.Title = fmt.Sprintf("%d %s built", n, plural(n, "image", "images"))
		}
	}
	cr.Summary = renderSummary(b, baseURL, link, now, renderDrift(dr, link))
	changes := renderChanges(dr)
	cr.Text = renderText(b, MaxCheckRunText-100-len(changes)) + changes
	return cr
}

// driftBudget is the most of a summary the Drift section takes: the clouds'
// table comes first.
const driftBudget = MaxCheckRunText / 2

// renderDrift is the summary's Drift section: the library's Markdown (every
// value from a machine escaped), cut to fit, and what on_drift does.
func renderDrift(dr *Drift, link string) string {
	if !dr.hasManifests() {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n### Drift\n\n")
	if dr.Across == nil {
		fmt.Fprintf(&b, "Compared once every cloud is done (%s %s not).\n", strings.Join(dr.Pending, ", "), plural(len(dr.Pending), "is", "are"))
		return b.String()
	}
	md := ""
	for rows := manifest.DefaultMarkdownRows; ; rows /= 2 {
		md = dr.Across.Markdown(manifest.RenderOptions{MaxRows: max(rows, 1), MoreURL: link})
		if len(md) <= driftBudget-400 || rows <= 1 {
			break
		}
	}
	if len(md) > driftBudget-400 {
		// Too many clouds, or cells too long, for even one row: the headline's line.
		md, _, _ = strings.Cut(md, "\n")
		md += "\n\nThe table is too large for a check run: see the build's page.\n"
	}
	b.WriteString(md)
	if dr.Differs() {
		if dr.OnDrift == spec.OnDriftFail {
			b.WriteString("\nThe spec says `drift: {on_drift: fail}`: clouds that differ fail this check run.\n")
		} else {
			b.WriteString("\nA warning (`drift: {on_drift: warn}`, the default): the check run stays successful. `on_drift: fail` would fail it.\n")
		}
	}
	return b.String()
}

// renderChanges is the text's line per cloud on what changed since the
// cloud's previous image; the details are on the build's page.
func renderChanges(dr *Drift) string {
	if dr == nil || len(dr.OverTime) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nSince the previous image on each cloud (details on the build's page):\n\n")
	for _, cc := range dr.OverTime {
		line := "- " + mdCell(cc.Cloud) + ": "
		switch c := cc.Changes; {
		case c == nil:
			line += cc.Note
		case c.Identical:
			line += fmt.Sprintf("no changes (%d %s)", c.Packages, plural(c.Packages, "package", "packages"))
		default:
			line += fmt.Sprintf("%d added, %d removed, %d upgraded, %d downgraded", c.Added, c.Removed, c.Upgraded, c.Downgraded)
			if c.Changed > 0 {
				line += fmt.Sprintf(", %d changed", c.Changed)
			}
			for _, sc := range c.System {
				line += ", " + sc.Field + " changed"
			}
		}
		if cc.Previous != nil {
			line += fmt.Sprintf(" (against build `%s`)", mdCell(cc.Previous.Build)) //nolint:gocritic // a markdown code span
		}
		if c := cc.Changes; c != nil && (c.FromPartial || c.ToPartial) {
			line += "; a manifest is partial, changes may be missing"
		}
		line += "\n"
		if b.Len()+len(line) > driftBudget {
			b.WriteString("- …\n")
			break
		}
		b.WriteString(line)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// mdCell makes s safe inside a markdown table cell.
func mdCell(s string) string {
	if s == "" {
		return "–"
	}
	s = strings.ReplaceAll(s, "\\", "\\\\")
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", " ")
}

func code(s string) string {
	if s == "" {
		return "–"
	}
	return "`" + strings.ReplaceAll(mdCell(s), "`", "'") + "`"
}

func renderSummary(b *Build, baseURL, link string, now time.Time, drift string) string {
	var head strings.Builder
	if b.Trigger != "" {
		fmt.Fprintf(&head, "**Rebuilt by imagegen**: %s.\n\n", mdCell(b.Trigger))
	}
	fmt.Fprintf(&head, "Generator **%s** (`%s`) at `%s`, script sha256 `%s`.\n\n", mdCell(b.Generator), mdCell(b.SpecFile), shortSHA(b.Commit), shortSHA(b.Digest))
	head.WriteString("| cloud | state | new image id | image name | base image | duration |\n")
	head.WriteString("|---|---|---|---|---|---|\n")
	var rows []string
	var notes []string
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		d := "–"
		if dur := c.Duration(now); dur > 0 {
			d = dur.Round(time.Second).String()
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s |\n",
			mdCell(name), stateIcon(c.State), code(c.ImageID), code(c.ImageName), code(c.BaseImage), d))
		switch {
		case c.State == builder.StateWaiting:
			notes = append(notes, fmt.Sprintf("- **%s** needs a password: `imagegen rerun --server %s --cloud %s %s`\n", mdCell(name), baseURL, name, b.ID))
		case c.Error != "":
			notes = append(notes, fmt.Sprintf("- **%s**: %s\n", mdCell(name), mdCell(truncate(c.Error, 2000))))
		}
	}
	foot := fmt.Sprintf("\nBuild `%s`: %s\n", b.ID, link) //nolint:gocritic // a markdown code span, as written
	lifecycle := renderLifecycle(b)
	var out strings.Builder
	out.WriteString(head.String())
	budget := MaxCheckRunText - len(foot) - len(drift) - len(lifecycle) - 200
	for i, r := range rows {
		if out.Len()+len(r) > budget {
			fmt.Fprintf(&out, "\n… and %d more clouds (see the build record)\n", len(rows)-i)
			break
		}
		out.WriteString(r)
	}
	if len(notes) > 0 {
		out.WriteString("\n")
		for i, n := range notes {
			if out.Len()+len(n) > budget {
				fmt.Fprintf(&out, "- … %d more (see the build record)\n", len(notes)-i)
				break
			}
			out.WriteString(n)
		}
	}
	out.WriteString(lifecycle)
	out.WriteString(drift)
	out.WriteString(foot)
	return out.String()
}

// renderText lists the new images one per line, for people and scripts.
func renderText(b *Build, budget int) string {
	var out strings.Builder
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		if c.ImageName == "" && c.ImageID == "" {
			continue
		}
		line := fmt.Sprintf("- %s: `%s` (id `%s`)\n", name, c.ImageName, c.ImageID) //nolint:gocritic // markdown code spans, as written
		if out.Len()+len(line) > budget {
			out.WriteString("- …\n")
			break
		}
		if out.Len() == 0 {
			out.WriteString("New images:\n\n")
		}
		out.WriteString(line)
	}
	return out.String()
}

func stateIcon(s builder.State) string {
	switch s {
	case builder.StateSucceeded:
		return "✅ succeeded"
	case builder.StateFailed:
		return "❌ failed"
	case builder.StateCanceled:
		return "⛔ canceled"
	case builder.StateWaiting:
		return "🔑 waiting"
	case builder.StateRunning:
		return "⏳ running"
	case builder.StateTesting:
		return "🧪 testing"
	default:
		return "🕓 " + string(s)
	}
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "–"
	}
	return s
}
