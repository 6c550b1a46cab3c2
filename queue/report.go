package queue

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builder"
)

// GitHub is the code host as the worker sees it; the server implements it
// with github, tests with fakes. Repos are "owner/name".
type GitHub interface {
	// Repo returns a client acting for an installation (0 with token auth).
	Repo(ctx context.Context, installation int64) (RepoClient, error)
}

// RepoClient reads a repository and reports on its commits.
type RepoClient interface {
	FS(ctx context.Context, repo, ref string) fs.FS
	ChangedFiles(ctx context.Context, repo, base, head string) ([]string, error)
	SetStatus(ctx context.Context, repo, sha string, s Status) error
	// CheckRuns reports whether check runs can be made (a GitHub App can; a token cannot).
	CheckRuns() bool
	CreateCheckRun(ctx context.Context, repo string, c CheckRun) (int64, error)
	UpdateCheckRun(ctx context.Context, repo string, id int64, c CheckRun) error
}

// CheckRunFinder is what a RepoClient may add so a check run is never made
// twice: creating one is not idempotent, and a worker killed between GitHub's
// answer and recording its id would, on retry, make a second run that stays
// in progress forever. A RepoClient without it gets no such protection.
type CheckRunFinder interface {
	// FindCheckRun returns the id of the run named name on commit sha whose
	// external_id is externalID; found is false when there is none.
	FindCheckRun(ctx context.Context, repo, sha, name, externalID string) (id int64, found bool, err error)
}

// Status is a commit status.
type Status struct {
	State       string // pending, success, failure, error
	Context     string // imagegen/<generator>/<cloud>
	Description string // at most MaxStatusDescription characters
	TargetURL   string
}

// CheckRun is a check run as created or updated.
type CheckRun struct {
	Name        string
	HeadSHA     string
	Status      string // queued, in_progress, completed
	Conclusion  string // with completed: success, failure, action_required, cancelled
	Title       string
	Summary     string // markdown, at most MaxCheckRunText characters
	Text        string
	DetailsURL  string
	ExternalID  string // the build id
	StartedAt   time.Time
	CompletedAt time.Time
}

// GitHub's limits.
const (
	MaxStatusDescription = 140
	MaxCheckRunText      = 65535
)

// StatusContext is the commit status context of a generator on a cloud.
func StatusContext(generator, cloud string) string {
	return "imagegen/" + generator + "/" + cloud
}

// CheckRunName is the check run name of a generator.
func CheckRunName(generator string) string { return "imagegen: " + generator }

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
	case builder.StateSucceeded:
		st.State = "success"
		st.Description = "built " + c.ImageName
		if c.ImageID != "" && c.ImageID != c.ImageName {
			st.Description += " (" + c.ImageID + ")"
		}
		if c.ImageName == "" {
			st.Description = "succeeded"
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

// BuildURL is where a build's record is served.
func BuildURL(baseURL, id string) string {
	return strings.TrimSuffix(baseURL, "/") + "/api/v1/builds/" + id
}

// RenderCheckRun renders the check run for the build as it stands at now;
// link is the build's page (details_url).
func RenderCheckRun(b *Build, baseURL, link string, now time.Time) CheckRun {
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
		default:
			cr.Conclusion = "success"
			cr.Title = fmt.Sprintf("%d %s built", n, plural(n, "image", "images"))
		}
	}
	cr.Summary = renderSummary(b, baseURL, link, now)
	cr.Text = renderText(b)
	return cr
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

func renderSummary(b *Build, baseURL, link string, now time.Time) string {
	var head strings.Builder
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
	foot := fmt.Sprintf("\nBuild `%s`: %s\n", b.ID, link)
	var out strings.Builder
	out.WriteString(head.String())
	budget := MaxCheckRunText - len(foot) - 200
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
	out.WriteString(foot)
	return out.String()
}

// renderText lists the new images one per line, for people and scripts.
func renderText(b *Build) string {
	var out strings.Builder
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		if c.ImageName == "" && c.ImageID == "" {
			continue
		}
		line := fmt.Sprintf("- %s: `%s` (id `%s`)\n", name, c.ImageName, c.ImageID)
		if out.Len()+len(line) > MaxCheckRunText-100 {
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
