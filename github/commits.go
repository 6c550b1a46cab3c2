package github

import (
	"context"
	"fmt"
	"strings"

	gogithub "github.com/google/go-github/v60/github"

	"github.com/imagegen/imagegen/builds"
)

var _ builds.CommitLister = (*Client)(nil)

// Commits lists the commits between base and head, oldest first: the first
// page of GitHub's comparison (at most builds.MaxCommits), with the total it
// counts. Messages and authors are the repository's, unescaped.
func (c *Client) Commits(ctx context.Context, name, base, head string) ([]builds.Commit, int, error) {
	repo, err := ParseRepo(name)
	if err != nil {
		return nil, 0, err
	}
	if strings.Trim(base, "0") == "" {
		return nil, 0, &Error{Op: fmt.Sprintf("compare %s on %s", short(head), repo), Err: ErrNoBase}
	}
	var cmp *gogithub.CommitsComparison
	err = c.do(ctx, fmt.Sprintf("compare %s...%s on %s", short(base), short(head), repo), func(ctx context.Context) error {
		var err error
		// No paging options: GitHub then lists up to 250 commits at once.
		cmp, _, err = c.gh.Repositories.CompareCommits(ctx, repo.Owner, repo.Name, base, head, nil)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]builds.Commit, 0, len(cmp.Commits))
	for _, rc := range cmp.Commits {
		cm := builds.Commit{SHA: rc.GetSHA(), Message: rc.GetCommit().GetMessage(), URL: rc.GetHTMLURL()}
		if a := rc.GetCommit().GetAuthor(); a != nil {
			cm.Author = a.GetName()
			cm.Date = a.GetDate().Time
		}
		out = append(out, cm)
	}
	total := cmp.GetTotalCommits()
	if total < len(out) {
		total = len(out)
	}
	return out, total, nil
}
