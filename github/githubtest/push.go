package githubtest

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
)

// PushOptions shape a push payload made by Push.
type PushOptions struct {
	Repo          string // "owner/name"; default the example's Codertocat/Hello-World
	Ref           string // default "refs/heads/" + DefaultBranch
	DefaultBranch string // the repository's default branch; default "main"
	Before, After string // commit SHAs; Before all zeros means the push created the ref
	Installation  int64  // installation.id; default the example's (1)
	Forced        bool
	// Commits listed in the payload, oldest first; default one commit, After,
	// changing nothing. GitHub lists at most 20.
	Commits []PushCommit
}

// PushCommit is one commit in a push payload.
type PushCommit struct {
	ID                       string // default After for the last commit
	Message                  string
	Added, Modified, Removed []string
}

// Push returns a real push payload from @octokit/webhooks-examples with the
// fields imagegen reads replaced by o's, so tests get GitHub's full shape
// (every field GitHub sends) with the values they need.
func Push(t testing.TB, o PushOptions) []byte {
	t.Helper()
	raw := Example(t, "push", func(m map[string]any) bool {
		c, _ := m["commits"].([]any)
		ref, _ := m["ref"].(string)
		return m["installation"] != nil && len(c) > 0 && strings.HasPrefix(ref, "refs/heads/")
	})
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("githubtest: push example: %v", err)
	}
	if o.DefaultBranch == "" {
		o.DefaultBranch = "main"
	}
	if o.Ref == "" {
		o.Ref = "refs/heads/" + o.DefaultBranch
	}
	// A copy: the caller's commits are not written to.
	o.Commits = slices.Clone(o.Commits)
	if len(o.Commits) == 0 {
		o.Commits = []PushCommit{{}}
	}
	if o.Commits[len(o.Commits)-1].ID == "" {
		o.Commits[len(o.Commits)-1].ID = o.After
	}
	repo := m["repository"].(map[string]any)
	if o.Repo != "" {
		owner, name, _ := strings.Cut(o.Repo, "/")
		repo["full_name"], repo["name"] = o.Repo, name
		if ow, ok := repo["owner"].(map[string]any); ok {
			ow["login"], ow["name"] = owner, owner
		}
		repo["url"] = "https://github.com/" + o.Repo
		repo["html_url"] = "https://github.com/" + o.Repo
	}
	repo["default_branch"], repo["master_branch"] = o.DefaultBranch, o.DefaultBranch
	if o.Installation != 0 {
		m["installation"].(map[string]any)["id"] = o.Installation
	}
	m["ref"], m["before"], m["after"] = o.Ref, o.Before, o.After
	m["forced"] = o.Forced
	m["created"] = strings.Trim(o.Before, "0") == ""
	m["deleted"] = strings.Trim(o.After, "0") == ""
	m["base_ref"] = nil

	tmpl := m["commits"].([]any)[0].(map[string]any)
	commits := make([]any, 0, len(o.Commits))
	for _, c := range o.Commits {
		cm := maps.Clone(tmpl)
		cm["id"], cm["tree_id"] = c.ID, c.ID
		cm["message"] = c.Message
		cm["distinct"] = true
		cm["added"], cm["modified"], cm["removed"] = list(c.Added), list(c.Modified), list(c.Removed)
		cm["url"] = "https://github.com/" + repo["full_name"].(string) + "/commit/" + c.ID
		commits = append(commits, cm)
	}
	m["commits"] = commits
	m["head_commit"] = commits[len(commits)-1]
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("githubtest: push payload: %v", err)
	}
	return b
}

func list(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
