package builds

import (
	"context"
	"errors"
	"io/fs"
	"time"
)

// ErrChangesCut is wrapped by RepoClient.ChangedFiles when the comparison
// lists fewer files than changed (GitHub's stops at 300): any spec or
// script may be among those it left out, so the plan counts every
// generator of the branch as changed.
var ErrChangesCut = errors.New("the comparison lists only part of the changed files")

// GitHub is the code host as the core sees it; package github implements it
// (a GitHub App or a token), tests use fakes. Repositories are "owner/name".
type GitHub interface {
	// Repo returns a client acting for an installation (the delivery's
	// installation id; 0, and ignored, with token auth).
	Repo(ctx context.Context, installation int64) (RepoClient, error)
}

// RepoClient reads repositories and reports on their commits, for one
// installation. Its errors are final: a client retries what is worth
// retrying before it returns.
type RepoClient interface {
	// FS is the repository's files at ref, read on demand; ctx bounds every
	// read. A path that does not exist is fs.ErrNotExist, an entry that is
	// not a regular file (a symlink, a submodule) fs.ErrPermission, a path
	// refused fs.ErrInvalid; any other error (GitHub away) is worth a retry.
	// Stat gives a file's size without downloading it, so a file over
	// spec.MaxFileSize is refused unread.
	FS(ctx context.Context, repo, ref string) fs.FS
	// ChangedFiles lists the paths that differ between the commits base and
	// head, for a push whose payload cannot be trusted to list them; an
	// error wrapping ErrChangesCut when the list is only part of them.
	ChangedFiles(ctx context.Context, repo, base, head string) ([]string, error)
	// SetStatus sets a commit status on sha; the latest status of a context wins.
	SetStatus(ctx context.Context, repo, sha string, s Status) error
	// CheckRuns reports whether check runs can be made (a GitHub App can; a
	// token cannot, and gets commit statuses only).
	CheckRuns() bool
	// CreateCheckRun creates a check run and returns its id. It is not
	// idempotent: FindCheckRun first where a retry may repeat it.
	CreateCheckRun(ctx context.Context, repo string, c CheckRun) (int64, error)
	// UpdateCheckRun replaces check run id's state and output with c's.
	UpdateCheckRun(ctx context.Context, repo string, id int64, c CheckRun) error
	// FindCheckRun returns the id of the run named name on commit sha whose
	// external id is externalID; found is false when there is none. A
	// worker killed between GitHub's answer to CreateCheckRun and recording
	// the id would otherwise, on retry, make a second run that stays in
	// progress forever.
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
