package github

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	gogithub "github.com/google/go-github/v60/github"

	"github.com/imagegen/imagegen/builds"
)

// GitHub's limits on what imagegen writes.
const (
	MaxDescription = builds.MaxStatusDescription // a commit status description, characters
	MaxOutput      = builds.MaxCheckRunText      // a check run's output summary or text, characters
)

// Commit status states.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
	StateError   = "error"
)

// Check run statuses and conclusions.
const (
	CheckQueued     = "queued"
	CheckInProgress = "in_progress"
	CheckCompleted  = "completed"

	ConclusionSuccess        = "success"
	ConclusionFailure        = "failure"
	ConclusionCancelled      = "cancelled"
	ConclusionNeutral        = "neutral"
	ConclusionActionRequired = "action_required"
)

// ErrNeedsApp is returned by the check run calls in token mode.
var ErrNeedsApp = errors.New("check runs need a GitHub App (github.app_id and private_key_file); a token can only set commit statuses")

// SetStatus sets a commit status on sha of repo (owner/name). The
// description is cut to MaxDescription characters (ending in …), as GitHub
// refuses longer ones.
func (c *Client) SetStatus(ctx context.Context, name, sha string, s builds.Status) error {
	repo, err := ParseRepo(name)
	if err != nil {
		return err
	}
	rs := &gogithub.RepoStatus{
		State:       gogithub.String(s.State),
		Context:     optional(s.Context),
		Description: optional(TruncateDescription(s.Description)),
		TargetURL:   optional(s.TargetURL),
	}
	op := fmt.Sprintf("set status %s=%s on %s@%s", s.Context, s.State, repo, short(sha))
	if c.anonymous {
		c.f.log.InfoContext(ctx, "not reported to GitHub: no credentials configured (github.app_id or github.token)", "status", s.Context, "state", s.State, "repo", repo.String(), "sha", sha)
		return nil
	}
	return c.do(ctx, op, func(ctx context.Context) error {
		_, _, err := c.gh.Repositories.CreateStatus(ctx, repo.Owner, repo.Name, sha, rs)
		return err
	})
}

// CreateCheckRun creates a check run on repo (owner/name) and returns its
// id. Status "completed" is implied by a Conclusion; CompletedAt defaults to
// now for a completed run; the output's Title defaults to Name, and its
// Summary (required) to the title.
func (c *Client) CreateCheckRun(ctx context.Context, name string, cr builds.CheckRun) (int64, error) {
	repo, err := ParseRepo(name)
	if err != nil {
		return 0, err
	}
	op := fmt.Sprintf("create check run %q on %s@%s", cr.Name, repo, short(cr.HeadSHA))
	if !c.isApp {
		return 0, &Error{Op: op, Err: ErrNeedsApp}
	}
	status, conclusion, completedAt := checkState(cr)
	opts := gogithub.CreateCheckRunOptions{
		Name:        cr.Name,
		HeadSHA:     cr.HeadSHA,
		DetailsURL:  optional(cr.DetailsURL),
		ExternalID:  optional(cr.ExternalID),
		Status:      status,
		Conclusion:  conclusion,
		StartedAt:   timestamp(cr.StartedAt),
		CompletedAt: completedAt,
		Output:      output(cr),
	}
	var id int64
	err = c.do(ctx, op, func(ctx context.Context) error {
		run, _, err := c.gh.Checks.CreateCheckRun(ctx, repo.Owner, repo.Name, opts)
		if err == nil {
			id = run.GetID()
		}
		return err
	})
	return id, err
}

// UpdateCheckRun updates check run id on repo (owner/name). Empty fields are
// left as they are; the output is replaced when Title, Summary or Text is set.
func (c *Client) UpdateCheckRun(ctx context.Context, name string, id int64, cr builds.CheckRun) error {
	repo, err := ParseRepo(name)
	if err != nil {
		return err
	}
	if !c.isApp {
		return &Error{Op: fmt.Sprintf("update check run %d on %s", id, repo), Err: ErrNeedsApp}
	}
	if cr.Name == "" {
		// go-github always sends the name, and an empty one would rename the run.
		err := c.do(ctx, fmt.Sprintf("get check run %d on %s", id, repo), func(ctx context.Context) error {
			run, _, err := c.gh.Checks.GetCheckRun(ctx, repo.Owner, repo.Name, id)
			if err == nil {
				cr.Name = run.GetName()
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	op := fmt.Sprintf("update check run %d %q on %s", id, cr.Name, repo)
	status, conclusion, completedAt := checkState(cr)
	opts := gogithub.UpdateCheckRunOptions{
		Name:        cr.Name,
		DetailsURL:  optional(cr.DetailsURL),
		ExternalID:  optional(cr.ExternalID),
		Status:      status,
		Conclusion:  conclusion,
		CompletedAt: completedAt,
		Output:      output(cr),
	}
	return c.do(ctx, op, func(ctx context.Context) error {
		_, _, err := c.gh.Checks.UpdateCheckRun(ctx, repo.Owner, repo.Name, id, opts)
		return err
	})
}

// checkState fills what GitHub requires together: a conclusion means
// completed, and completed needs a completion time.
func checkState(cr builds.CheckRun) (status, conclusion *string, completedAt *gogithub.Timestamp) {
	s := cr.Status
	if cr.Conclusion != "" {
		s = CheckCompleted
	}
	if s == CheckCompleted {
		at := cr.CompletedAt
		if at.IsZero() {
			at = time.Now()
		}
		completedAt = &gogithub.Timestamp{Time: at}
	}
	return optional(s), optional(cr.Conclusion), completedAt
}

func output(cr builds.CheckRun) *gogithub.CheckRunOutput {
	if cr.Title == "" && cr.Summary == "" && cr.Text == "" {
		return nil
	}
	title, summary := cr.Title, cr.Summary
	if title == "" {
		title = cr.Name
	}
	if summary == "" {
		// GitHub requires a summary whenever there is output.
		summary = title
	}
	return &gogithub.CheckRunOutput{
		Title:   gogithub.String(title),
		Summary: gogithub.String(TruncateOutput(summary)),
		Text:    optional(TruncateOutput(cr.Text)),
	}
}

// TruncateDescription cuts s to MaxDescription characters, ending in … when cut.
func TruncateDescription(s string) string {
	if utf8.RuneCountInString(s) <= MaxDescription {
		return s
	}
	r := []rune(s)
	return string(r[:MaxDescription-1]) + "…"
}

// TruncateOutput cuts s under MaxOutput characters with a note saying so.
// It counts bytes, so the result is under the limit however GitHub counts.
func TruncateOutput(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	note := fmt.Sprintf("\n\n… (truncated: %d more characters; see the details link for the rest)",
		utf8.RuneCountInString(s)) // an upper bound, computed before the cut
	cut := MaxOutput - len(note)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	rest := utf8.RuneCountInString(s[cut:])
	note = fmt.Sprintf("\n\n… (truncated: %d more characters; see the details link for the rest)", rest)
	return s[:cut] + note
}

// ErrTooManyFiles is wrapped by ChangedFiles when GitHub's compare answer hit
// its cap on listed files, so the list may be incomplete; it wraps
// builds.ErrChangesCut, which the plan acts on.
var ErrTooManyFiles = fmt.Errorf("the comparison lists GitHub's maximum of 300 files; the list may be incomplete: %w", builds.ErrChangesCut)

// ErrNoBase is returned by ChangedFiles when base is the all-zero SHA of a
// push that created the branch: there is nothing to compare with.
var ErrNoBase = errors.New("no base commit (the push created the ref)")

// compareFileCap is how many files GitHub lists in one comparison at most.
const compareFileCap = 300

// ChangedFiles lists the paths that differ between base and head (both
// names of renamed files), sorted. Use it when a push payload cannot be
// trusted to list them: more than 20 commits, or a forced push. When GitHub's
// cap was hit it returns what it got together with an error wrapping
// ErrTooManyFiles: the caller should then treat every generator as changed.
// The compare API pages through commits and lists the files (at most 300)
// with each page; every page is read and the files merged, so a version of
// the API that spreads files over pages loses none.
func (c *Client) ChangedFiles(ctx context.Context, name, base, head string) ([]string, error) {
	repo, err := ParseRepo(name)
	if err != nil {
		return nil, err
	}
	if strings.Trim(base, "0") == "" {
		return nil, &Error{Op: fmt.Sprintf("compare %s on %s", short(head), repo), Err: ErrNoBase}
	}
	op := fmt.Sprintf("compare %s...%s on %s", short(base), short(head), repo)
	seen := map[string]bool{}
	capped := false
	for page := 1; page != 0; {
		var cmp *gogithub.CommitsComparison
		var resp *gogithub.Response
		err := c.do(ctx, fmt.Sprintf("%s (page %d)", op, page), func(ctx context.Context) error {
			var err error
			cmp, resp, err = c.gh.Repositories.CompareCommits(ctx, repo.Owner, repo.Name, base, head,
				&gogithub.ListOptions{Page: page, PerPage: 100})
			return err
		})
		if err != nil {
			return nil, err
		}
		if len(cmp.Files) >= compareFileCap {
			capped = true
		}
		for _, f := range cmp.Files {
			seen[f.GetFilename()] = true
			if p := f.GetPreviousFilename(); p != "" {
				seen[p] = true
			}
		}
		page = resp.NextPage
	}
	files := make([]string, 0, len(seen))
	for f := range seen {
		if f != "" {
			files = append(files, f)
		}
	}
	slices.Sort(files)
	if capped {
		return files, &Error{Op: op, Err: ErrTooManyFiles}
	}
	return files, nil
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timestamp(t time.Time) *gogithub.Timestamp {
	if t.IsZero() {
		return nil
	}
	return &gogithub.Timestamp{Time: t}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
