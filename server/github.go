package server

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/queue"
)

// GitHub adapts a github.Factory to what the queue needs, so the queue
// knows nothing of go-github.
func GitHub(f *github.Factory) queue.GitHub { return ghFactory{f} }

type ghFactory struct{ f *github.Factory }

func (g ghFactory) Repo(ctx context.Context, installation int64) (queue.RepoClient, error) {
	c, err := g.f.Client(ctx, installation)
	if err != nil {
		return nil, err
	}
	return ghClient{c}, nil
}

type ghClient struct{ c *github.Client }

func repoOf(s string) (github.Repo, error) {
	r, err := github.ParseRepo(s)
	if err != nil {
		return github.Repo{}, fmt.Errorf("repository %q: %w", s, err)
	}
	return r, nil
}

func (g ghClient) FS(ctx context.Context, repo, ref string) fs.FS {
	r, err := repoOf(repo)
	if err != nil {
		return errFS{err}
	}
	return g.c.FS(ctx, r, ref)
}

func (g ghClient) ChangedFiles(ctx context.Context, repo, base, head string) ([]string, error) {
	r, err := repoOf(repo)
	if err != nil {
		return nil, err
	}
	return g.c.ChangedFiles(ctx, r, base, head)
}

func (g ghClient) SetStatus(ctx context.Context, repo, sha string, s queue.Status) error {
	r, err := repoOf(repo)
	if err != nil {
		return err
	}
	return g.c.SetStatus(ctx, r, sha, github.Status{State: s.State, Context: s.Context, Description: s.Description, TargetURL: s.TargetURL})
}

func (g ghClient) CheckRuns() bool { return g.c.IsApp() }

func checkRun(c queue.CheckRun) github.CheckRun {
	return github.CheckRun{
		Name: c.Name, HeadSHA: c.HeadSHA, Status: c.Status, Conclusion: c.Conclusion,
		Title: c.Title, Summary: c.Summary, Text: c.Text, DetailsURL: c.DetailsURL,
		ExternalID: c.ExternalID, StartedAt: c.StartedAt, CompletedAt: c.CompletedAt,
	}
}

func (g ghClient) CreateCheckRun(ctx context.Context, repo string, c queue.CheckRun) (int64, error) {
	r, err := repoOf(repo)
	if err != nil {
		return 0, err
	}
	return g.c.CreateCheckRun(ctx, r, checkRun(c))
}

func (g ghClient) UpdateCheckRun(ctx context.Context, repo string, id int64, c queue.CheckRun) error {
	r, err := repoOf(repo)
	if err != nil {
		return err
	}
	return g.c.UpdateCheckRun(ctx, r, id, checkRun(c))
}

// FindCheckRun implements queue.CheckRunFinder.
func (g ghClient) FindCheckRun(ctx context.Context, repo, sha, name, externalID string) (int64, bool, error) {
	r, err := repoOf(repo)
	if err != nil {
		return 0, false, err
	}
	return g.c.FindCheckRun(ctx, r, sha, name, externalID)
}

// errFS fails every open with the error that kept the real FS from being made.
type errFS struct{ err error }

func (e errFS) Open(string) (fs.File, error) { return nil, e.err }
