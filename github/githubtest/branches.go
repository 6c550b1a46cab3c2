package githubtest

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/imagegen/imagegen/builds"
)

// SetBranch makes sha the head of branch in repo (GET /repos/{repo}/branches/{branch}).
func (s *Server) SetBranch(repo, branch, sha string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.branches == nil {
		s.branches = map[string]string{}
	}
	s.branches[repo+"\x00"+branch] = sha
}

// branch answers GET /repos/{repo}/branches/{branch} as GitHub does: the
// branch's name and head commit, or 404 "Branch not found".
func (s *Server) branch(w http.ResponseWriter, repo string, branch []string) {
	name := strings.Join(branch, "/")
	s.mu.Lock()
	sha, ok := s.branches[repo+"\x00"+name]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Branch not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name":      name,
		"protected": false,
		"commit":    map[string]any{"sha": sha, "url": s.ts.URL + "/repos/" + repo + "/commits/" + sha},
	})
}

var _ builds.BranchReader = (*Mem)(nil)

// BranchHead answers from Heads (branch → sha); a branch not there is an error.
func (m *Mem) BranchHead(_ context.Context, _, branch string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sha, ok := m.Heads[branch]; ok {
		return sha, nil
	}
	return "", fmt.Errorf("branch %s: 404 Branch not found", branch)
}

// SetHead makes sha the head of branch, for BranchHead.
func (m *Mem) SetHead(branch, sha string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Heads == nil {
		m.Heads = map[string]string{}
	}
	m.Heads[branch] = sha
}
