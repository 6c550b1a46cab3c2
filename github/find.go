package github

import (
	"context"
	"fmt"

	gogithub "github.com/google/go-github/v60/github"
)

// FindCheckRun looks on commit sha of repoName (owner/name) for a check run named name whose
// external_id is externalID, and returns its id (found false when there is
// none). Creating a check run is not idempotent: a worker killed between
// GitHub's answer and recording the id would, on retry, create a second run
// that stays in progress forever; asking first closes that window.
func (c *Client) FindCheckRun(ctx context.Context, repoName, sha, name, externalID string) (int64, bool, error) {
	repo, err := ParseRepo(repoName)
	if err != nil {
		return 0, false, err
	}
	op := fmt.Sprintf("find check run %q on %s@%s", name, repo, short(sha))
	if !c.isApp {
		return 0, false, &Error{Op: op, Err: ErrNeedsApp}
	}
	opts := &gogithub.ListCheckRunsOptions{CheckName: gogithub.String(name), Filter: gogithub.String("all"), ListOptions: gogithub.ListOptions{PerPage: 100}}
	// A generator's runs on one commit are few (one per build and re-run).
	for page := 1; page <= 10; page++ {
		opts.Page = page
		var res *gogithub.ListCheckRunsResults
		var next int
		err := c.do(ctx, op, func(ctx context.Context) error {
			r, resp, err := c.gh.Checks.ListCheckRunsForRef(ctx, repo.Owner, repo.Name, sha, opts)
			if err == nil {
				res, next = r, resp.NextPage
			}
			return err
		})
		if err != nil {
			return 0, false, err
		}
		for _, run := range res.CheckRuns {
			if run.GetExternalID() == externalID {
				return run.GetID(), true, nil
			}
		}
		if next == 0 {
			break
		}
	}
	return 0, false, nil
}
