package github

import (
	"context"
	"fmt"

	"github.com/imagegen/imagegen/builds"
)

var _ builds.BranchReader = (*Client)(nil)

// BranchHead returns the sha of branch's head commit in repo (owner/name):
// a rebuild for a new base image builds the branch as it is now.
func (c *Client) BranchHead(ctx context.Context, name, branch string) (string, error) {
	repo, err := ParseRepo(name)
	if err != nil {
		return "", err
	}
	var sha string
	err = c.do(ctx, fmt.Sprintf("read the head of branch %s of %s", branch, repo), func(ctx context.Context) error {
		b, _, err := c.gh.Repositories.GetBranch(ctx, repo.Owner, repo.Name, branch, 1)
		if err == nil {
			sha = b.GetCommit().GetSHA()
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if sha == "" {
		return "", fmt.Errorf("branch %s of %s: GitHub named no head commit", branch, repo)
	}
	return sha, nil
}
