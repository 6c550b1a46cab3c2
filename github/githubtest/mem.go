package githubtest

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing/fstest"

	"github.com/imagegen/imagegen/builds"
)

// Mem is an in-memory builds.GitHub for tests of the core, where the HTTP
// round trips of Server (and the real client) add nothing: one repository's
// files, and the statuses and check runs reported, in order. Set its fields
// before use; read what was reported with its methods.
type Mem struct {
	Files       fstest.MapFS        // the repository at every ref
	RepoFS      fs.FS               // the repository instead of Files, when set
	Compare     []string            // what ChangedFiles answers
	CompareErr  error               // and its error
	NoCheckRuns bool                // a token: statuses only
	Hook        func(builds.Status) // called as a status is sent, before it lands
	Heads       map[string]string   // branch → head sha, for BranchHead (SetHead)

	mu        sync.Mutex
	statuses  []builds.Status
	checkRuns map[int64]builds.CheckRun
	nextID    int64
}

var (
	_ builds.GitHub     = (*Mem)(nil)
	_ builds.RepoClient = (*Mem)(nil)
)

// Repo returns m itself, whatever the installation.
func (m *Mem) Repo(context.Context, int64) (builds.RepoClient, error) { return m, nil }

// FS returns the repository, whatever the ref.
func (m *Mem) FS(context.Context, string, string) fs.FS {
	if m.RepoFS != nil {
		return m.RepoFS
	}
	return m.Files
}

// ChangedFiles returns m.Compare and m.CompareErr.
func (m *Mem) ChangedFiles(context.Context, string, string, string) ([]string, error) {
	return m.Compare, m.CompareErr
}

// SetStatus records s, after calling m.Hook.
func (m *Mem) SetStatus(_ context.Context, _, _ string, s builds.Status) error {
	m.mu.Lock()
	hook := m.Hook
	m.mu.Unlock()
	if hook != nil {
		hook(s)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.statuses = append(m.statuses, s)
	return nil
}

// SetHook sets m.Hook while m may be in use.
func (m *Mem) SetHook(h func(builds.Status)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Hook = h
}

// CheckRuns reports !m.NoCheckRuns.
func (m *Mem) CheckRuns() bool { return !m.NoCheckRuns }

// CreateCheckRun records c under the next id (from 1).
func (m *Mem) CreateCheckRun(_ context.Context, _ string, c builds.CheckRun) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	if m.checkRuns == nil {
		m.checkRuns = map[int64]builds.CheckRun{}
	}
	m.checkRuns[m.nextID] = c
	return m.nextID, nil
}

// UpdateCheckRun replaces check run id with c.
func (m *Mem) UpdateCheckRun(_ context.Context, _ string, id int64, c builds.CheckRun) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.checkRuns[id]; !ok {
		return errors.New("no such check run")
	}
	m.checkRuns[id] = c
	return nil
}

// FindCheckRun finds a check run by commit, name and external id.
func (m *Mem) FindCheckRun(_ context.Context, _, sha, name, externalID string) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := int64(1); i <= m.nextID; i++ {
		if c := m.checkRuns[i]; c.HeadSHA == sha && c.Name == name && c.ExternalID == externalID {
			return i, true, nil
		}
	}
	return 0, false, nil
}

// Latest returns the latest status of each context.
func (m *Mem) Latest() map[string]builds.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]builds.Status{}
	for _, s := range m.statuses {
		out[s.Context] = s
	}
	return out
}

// Sequence returns the statuses of one context in the order they landed.
func (m *Mem) Sequence(context string) []builds.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []builds.Status
	for _, s := range m.statuses {
		if s.Context == context {
			out = append(out, s)
		}
	}
	return out
}

// Runs returns the check runs in the order they were made, as they are now.
func (m *Mem) Runs() []builds.CheckRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []builds.CheckRun
	for i := int64(1); i <= m.nextID; i++ {
		out = append(out, m.checkRuns[i])
	}
	return out
}
