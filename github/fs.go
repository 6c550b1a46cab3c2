package github

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	gogithub "github.com/google/go-github/v60/github"
)

// MaxFileSize is the largest file FS reads; specs and scripts are small, and
// the contents API does not inline anything larger.
const MaxFileSize = 1 << 20

// ErrTooLarge is wrapped by FS for files over MaxFileSize.
var ErrTooLarge = errors.New("file too large")

// FS returns the files of repository name (owner/name) at ref (a commit SHA, branch or tag),
// read on demand through the contents API; ctx bounds every read. Symlinks
// and submodules are refused (their targets may lie outside the commit), a
// missing path is fs.ErrNotExist, and files over MaxFileSize are refused.
// The returned FS implements fs.ReadFileFS, fs.ReadDirFS and fs.StatFS, and
// remembers what it has read.
func (c *Client) FS(ctx context.Context, name, ref string) fs.FS {
	repo, err := ParseRepo(name)
	if err != nil {
		return errFS{err}
	}
	return &repoFS{ctx: ctx, c: c, repo: repo, ref: ref, cache: map[string]*node{}}
}

type repoFS struct {
	ctx  context.Context
	c    *Client
	repo Repo
	ref  string

	mu    sync.Mutex
	cache map[string]*node
}

// node is one fetched path.
type node struct {
	info    fileInfo
	data    []byte     // a file's content
	entries []fileInfo // a directory's entries, sorted by name
	err     error      // a refusal or absence, cached like content
}

var (
	_ fs.ReadFileFS = (*repoFS)(nil)
	_ fs.ReadDirFS  = (*repoFS)(nil)
	_ fs.StatFS     = (*repoFS)(nil)
)

func (f *repoFS) Open(name string) (fs.File, error) {
	n, err := f.get("open", name)
	if err != nil {
		return nil, err
	}
	if n.info.IsDir() {
		return &dirFile{info: n.info, entries: n.entries}, nil
	}
	return &file{info: n.info, r: bytes.NewReader(n.data)}, nil
}

func (f *repoFS) ReadFile(name string) ([]byte, error) {
	n, err := f.get("read", name)
	if err != nil {
		return nil, err
	}
	if n.info.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	return slices.Clone(n.data), nil
}

func (f *repoFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.get("readdir", name)
	if err != nil {
		return nil, err
	}
	if !n.info.IsDir() {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	out := make([]fs.DirEntry, len(n.entries))
	for i, e := range n.entries {
		out[i] = fs.FileInfoToDirEntry(e)
	}
	return out, nil
}

func (f *repoFS) Stat(name string) (fs.FileInfo, error) {
	n, err := f.get("stat", name)
	if err != nil {
		return nil, err
	}
	return n.info, nil
}

func (f *repoFS) get(op, name string) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	f.mu.Lock()
	n, ok := f.cache[name]
	f.mu.Unlock()
	if !ok {
		var err error
		n, err = f.fetch(name)
		if err != nil {
			// Not cached: a transient failure may clear on the next read.
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		f.mu.Lock()
		f.cache[name] = n
		f.mu.Unlock()
	}
	if n.err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: n.err}
	}
	return n, nil
}

// fetch reads one path. Refusals and absence come back in node.err (they are
// facts about the commit, worth caching); API failures as the error.
func (f *repoFS) fetch(name string) (*node, error) {
	apiPath := name
	if name == "." {
		apiPath = ""
	}
	var file *gogithub.RepositoryContent
	var dir []*gogithub.RepositoryContent
	op := fmt.Sprintf("read %s at %s@%s", name, f.repo, f.ref)
	err := f.c.do(f.ctx, op, func(ctx context.Context) error {
		var err error
		file, dir, _, err = f.c.gh.Repositories.GetContents(ctx, f.repo.Owner, f.repo.Name, apiPath,
			&gogithub.RepositoryContentGetOptions{Ref: f.ref})
		return err
	})
	switch {
	case errors.Is(err, gogithub.ErrPathForbidden):
		return &node{err: fmt.Errorf("path refused by the GitHub client: %w", fs.ErrInvalid)}, nil
	case IsNotFound(err):
		return &node{err: fs.ErrNotExist}, nil
	case err != nil:
		return nil, err
	}
	base := path.Base(name)
	if file == nil {
		n := &node{info: fileInfo{name: base, mode: fs.ModeDir | 0o555}}
		for _, e := range dir {
			n.entries = append(n.entries, entryInfo(e))
		}
		slices.SortFunc(n.entries, func(a, b fileInfo) int { return strings.Compare(a.name, b.name) })
		return n, nil
	}
	switch t := file.GetType(); {
	case t == "symlink":
		return &node{err: fmt.Errorf("symlink refused (it points to %q; imagegen reads only regular files): %w", file.GetTarget(), fs.ErrPermission)}, nil
	case t == "submodule":
		return &node{err: fmt.Errorf("submodule refused (imagegen reads only regular files): %w", fs.ErrPermission)}, nil
	case t != "file":
		return &node{err: fmt.Errorf("%q entry refused (imagegen reads only regular files): %w", t, fs.ErrPermission)}, nil
	case file.GetPath() != name:
		// GitHub follows a symlink whose target is a file in the repository
		// and answers with the target: the path it names gives it away.
		return &node{err: fmt.Errorf("symlink refused (it points to %q; imagegen reads only regular files): %w", file.GetPath(), fs.ErrPermission)}, nil
	case file.GetSize() > MaxFileSize:
		return &node{err: fmt.Errorf("%w: %d bytes, over the %d byte limit", ErrTooLarge, file.GetSize(), MaxFileSize)}, nil
	}
	content, err := file.GetContent()
	if err != nil {
		return nil, &Error{Op: op, StatusCode: http.StatusOK, Err: fmt.Errorf("decoding the content: %w", err)}
	}
	if len(content) > MaxFileSize {
		return &node{err: fmt.Errorf("%w: %d bytes, over the %d byte limit", ErrTooLarge, len(content), MaxFileSize)}, nil
	}
	return &node{info: fileInfo{name: base, size: int64(len(content)), mode: 0o444}, data: []byte(content)}, nil
}

func entryInfo(e *gogithub.RepositoryContent) fileInfo {
	fi := fileInfo{name: e.GetName(), size: int64(e.GetSize()), mode: 0o444}
	switch e.GetType() {
	case "dir":
		fi.mode = fs.ModeDir | 0o555
		fi.size = 0
	case "symlink":
		fi.mode = fs.ModeSymlink | 0o777
	case "submodule":
		fi.mode = fs.ModeIrregular
	}
	return fi
}

type fileInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.size }
func (i fileInfo) Mode() fs.FileMode  { return i.mode }
func (i fileInfo) ModTime() time.Time { return time.Time{} }
func (i fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i fileInfo) Sys() any           { return nil }

type file struct {
	info fileInfo
	r    *bytes.Reader
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *file) Read(b []byte) (int, error) { return f.r.Read(b) }
func (f *file) Close() error               { return nil }
func (f *file) Seek(off int64, whence int) (int64, error) {
	return f.r.Seek(off, whence)
}
func (f *file) ReadAt(b []byte, off int64) (int, error) { return f.r.ReadAt(b, off) }

type dirFile struct {
	info    fileInfo
	entries []fileInfo
	off     int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

// ReadDir follows fs.ReadDirFile: n > 0 reads at most n and says io.EOF at the end.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n > 0 {
		if len(rest) == 0 {
			return nil, io.EOF
		}
		rest = rest[:min(n, len(rest))]
	}
	d.off += len(rest)
	out := make([]fs.DirEntry, len(rest))
	for i, e := range rest {
		out[i] = fs.FileInfoToDirEntry(e)
	}
	return out, nil
}

// errFS fails every open with the error that kept the real FS from being made.
type errFS struct{ err error }

func (e errFS) Open(string) (fs.File, error) { return nil, e.err }
