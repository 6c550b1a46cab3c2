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
// read on demand through the contents API; ctx bounds every read. Only
// regular files are read: symlinks, submodules and paths through a symlinked
// directory are refused (fs.ErrPermission: their targets may lie outside the
// commit), a missing path is fs.ErrNotExist, and files over MaxFileSize are
// refused (ErrTooLarge) from the size their directory's listing gives,
// before anything of them is downloaded. Stat answers from that listing too.
// The returned FS implements fs.ReadFileFS, fs.ReadDirFS and fs.StatFS, and
// remembers what it has read (file content up to a budget); concurrent reads
// of one path share one call.
func (c *Client) FS(ctx context.Context, name, ref string) fs.FS {
	repo, err := ParseRepo(name)
	if err != nil {
		return errFS{err}
	}
	return &repoFS{ctx: ctx, c: c, repo: repo, ref: ref, cache: map[string]*load{}}
}

// maxListed is the most entries the contents API lists for a directory; a
// name missing from a listing that long may still exist.
const maxListed = 1000

type repoFS struct {
	ctx  context.Context
	c    *Client
	repo Repo
	ref  string

	mu          sync.Mutex
	cache       map[string]*load // "dir:" or "file:" + path
	cachedBytes int              // file content kept in cache
}

// load is one fetch, shared by the reads that want it while it runs and
// kept when it succeeds.
type load struct {
	done chan struct{}
	n    *node
	err  error
}

// node is one fetched path.
type node struct {
	info    fileInfo
	data    []byte     // a file's content
	entries []fileInfo // a directory's entries, sorted by name
	err     error      // a refusal or absence: a fact about the commit, cached like content
}

// refusal is a path FS will not read, and why; it is fs.ErrPermission.
type refusal struct{ msg string }

func (r *refusal) Error() string        { return r.msg }
func (r *refusal) Is(target error) bool { return target == fs.ErrPermission }

func refused(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

const onlyRegular = "imagegen reads only regular files of the commit"

// viaSymlink refuses a path that is, or leads through, the symlink link.
type viaSymlink struct{ path, link string }

func (e *viaSymlink) Error() string {
	if e.link == e.path {
		return "is a symlink: " + onlyRegular + ", never symlinks (their targets may lie outside it)"
	}
	return fmt.Sprintf("leads through %q, a symlink: %s, never through symlinks (their targets may lie outside it)", e.link, onlyRegular)
}

func (e *viaSymlink) Is(target error) bool { return target == fs.ErrPermission }

var (
	errIsDir  = errors.New("is a directory")
	errNotDir = errors.New("not a directory")
	rootInfo  = fileInfo{name: ".", mode: fs.ModeDir | 0o555}

	_ fs.ReadFileFS = (*repoFS)(nil)
	_ fs.ReadDirFS  = (*repoFS)(nil)
	_ fs.StatFS     = (*repoFS)(nil)
)

func (f *repoFS) Open(name string) (fs.File, error) {
	fi, err := f.stat("open", name)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		n, err := f.dir("open", name)
		if err != nil {
			return nil, err
		}
		return &dirFile{info: fi, entries: n.entries}, nil
	}
	n, err := f.file("open", name)
	if err != nil {
		return nil, err
	}
	return &file{info: n.info, r: bytes.NewReader(n.data)}, nil
}

func (f *repoFS) ReadFile(name string) ([]byte, error) {
	n, err := f.file("read", name)
	if err != nil {
		return nil, err
	}
	return slices.Clone(n.data), nil
}

func (f *repoFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.dir("readdir", name)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(n.entries))
	for i, e := range n.entries {
		out[i] = fs.FileInfoToDirEntry(e)
	}
	return out, nil
}

func (f *repoFS) Stat(name string) (fs.FileInfo, error) {
	fi, err := f.stat("stat", name)
	if err != nil {
		return nil, err
	}
	return fi, nil
}

// stat describes name from its directory's listing, refusing what is not a
// regular file or a directory.
func (f *repoFS) stat(op, name string) (fileInfo, error) {
	if !fs.ValidPath(name) {
		return fileInfo{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		if _, err := f.dir(op, "."); err != nil {
			return fileInfo{}, err
		}
		return rootInfo, nil
	}
	fi, err := f.lookup(name)
	if err != nil {
		return fileInfo{}, &fs.PathError{Op: op, Path: name, Err: f.explain(name, err)}
	}
	return fi, nil
}

// lookup finds name (not ".") in its directory's listing.
func (f *repoFS) lookup(name string) (fileInfo, error) {
	parent, base := path.Dir(name), path.Base(name)
	d, err := f.get("dir:"+parent, func() (*node, error) { return f.fetchDir(parent) })
	if err != nil {
		return fileInfo{}, err
	}
	if d.err != nil {
		return fileInfo{}, through(name, d.err)
	}
	i, found := slices.BinarySearchFunc(d.entries, base, func(e fileInfo, name string) int { return strings.Compare(e.name, name) })
	if !found {
		if len(d.entries) < maxListed {
			return fileInfo{}, fs.ErrNotExist
		}
		// The listing may have been cut short: ask for the path itself.
		n, err := f.get("file:"+name, func() (*node, error) { return f.fetchFile(name) })
		switch {
		case err != nil:
			return fileInfo{}, err
		case n.err != nil && !errors.Is(n.err, ErrTooLarge):
			return fileInfo{}, n.err
		}
		return n.info, nil
	}
	e := d.entries[i]
	switch {
	case e.mode&fs.ModeSymlink != 0:
		return fileInfo{}, &viaSymlink{path: name, link: name}
	case e.mode&fs.ModeIrregular != 0:
		return fileInfo{}, refused("is a submodule: %s", onlyRegular)
	}
	return e, nil
}

// explain turns "does not exist" into "leads through a symlink" when one of
// name's leading directories is a symlink (a server that does not follow
// them answers 404 for the paths below).
func (f *repoFS) explain(name string, err error) error {
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(name, "/") {
		return err
	}
	if link := f.symlinkAbove(name); link != "" {
		return &viaSymlink{path: name, link: link}
	}
	return err
}

// symlinkAbove names the first of name's leading directories that its own
// directory lists as a symlink, or "". It stops at the first that does not
// exist: each listing it asks for is of a directory known to exist.
func (f *repoFS) symlinkAbove(name string) string {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		fi, err := f.lookup(p)
		var v *viaSymlink
		switch {
		case errors.As(err, &v):
			return v.link
		case err != nil || !fi.IsDir():
			return ""
		}
	}
	return ""
}

// through is what err, the error of directory dir, means for path name below it.
func through(name string, err error) error {
	var v *viaSymlink
	switch {
	case errors.As(err, &v):
		return &viaSymlink{path: name, link: v.link}
	case errors.Is(err, errNotDir):
		return fs.ErrNotExist
	}
	return err
}

// dir returns directory name's listing.
func (f *repoFS) dir(op, name string) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	n, err := f.get("dir:"+name, func() (*node, error) { return f.fetchDir(name) })
	if err == nil && n.err != nil {
		err = f.explain(name, n.err)
	}
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return n, nil
}

// file returns regular file name with its content. Its size is checked in
// its directory's listing first: a file over MaxFileSize is never fetched.
func (f *repoFS) file(op, name string) (*node, error) {
	fi, err := f.stat(op, name)
	switch {
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, &fs.PathError{Op: op, Path: name, Err: errIsDir}
	case fi.size > MaxFileSize:
		return nil, &fs.PathError{Op: op, Path: name, Err: tooLarge(fi.size)}
	}
	n, err := f.get("file:"+name, func() (*node, error) { return f.fetchFile(name) })
	switch {
	case err != nil:
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	case n.err != nil:
		return nil, &fs.PathError{Op: op, Path: name, Err: n.err}
	case n.info.IsDir():
		return nil, &fs.PathError{Op: op, Path: name, Err: errIsDir}
	}
	return n, nil
}

func tooLarge(size int64) error {
	return fmt.Errorf("%w: %d bytes, over the %d byte limit", ErrTooLarge, size, MaxFileSize)
}

// get returns the node cached under key, fetching it when absent; reads of
// one key at once wait for one fetch. A fetch that fails is not kept: a
// transient failure may clear on the next read.
func (f *repoFS) get(key string, fetch func() (*node, error)) (*node, error) {
	f.mu.Lock()
	l, ok := f.cache[key]
	if !ok {
		l = &load{done: make(chan struct{})}
		f.cache[key] = l
	}
	f.mu.Unlock()
	if ok {
		<-l.done
		return l.n, l.err
	}
	l.n, l.err = fetch()
	f.mu.Lock()
	switch {
	case l.err != nil:
		delete(f.cache, key)
	case f.cachedBytes+len(l.n.data) > maxCachedBytes:
		delete(f.cache, key) // read again if asked again
	default:
		f.cachedBytes += len(l.n.data)
	}
	f.mu.Unlock()
	close(l.done)
	return l.n, l.err
}

// maxCachedBytes bounds the file content an FS keeps for the reads to come
// (a script_file several specs name): a push's specs and scripts are read
// once each, and a push may hold many.
const maxCachedBytes = 16 << 20

// contents asks the contents API for apiPath. Refusals and absence come back
// in a node's err (they are facts about the commit); API failures as the error.
func (f *repoFS) contents(name string) (*gogithub.RepositoryContent, []*gogithub.RepositoryContent, *node, error) {
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
		return nil, nil, &node{err: fmt.Errorf("path refused by the GitHub client: %w", fs.ErrInvalid)}, nil
	case IsNotFound(err):
		return nil, nil, &node{err: fs.ErrNotExist}, nil
	case err != nil:
		return nil, nil, nil, err
	}
	return file, dir, nil, nil
}

// fetchDir lists directory name. A listing whose entries lie elsewhere was
// reached through a symlinked directory, and is refused.
func (f *repoFS) fetchDir(name string) (*node, error) {
	file, dir, fact, err := f.contents(name)
	if fact != nil || err != nil {
		return fact, err
	}
	if file != nil {
		switch file.GetType() {
		case "symlink":
			return &node{err: &viaSymlink{path: name, link: name}}, nil
		case "dir":
			return &node{err: refused("is a directory GitHub describes but does not list: %s", onlyRegular)}, nil
		}
		return &node{err: errNotDir}, nil
	}
	prefix := name + "/"
	if name == "." {
		prefix = ""
	}
	n := &node{info: fileInfo{name: path.Base(name), mode: fs.ModeDir | 0o555}}
	for _, e := range dir {
		if e.GetPath() != prefix+e.GetName() || !fs.ValidPath(e.GetPath()) || strings.Contains(e.GetName(), "/") {
			// GitHub followed a symlinked directory and listed its target.
			return &node{err: f.followed(name)}, nil
		}
		n.entries = append(n.entries, entryInfo(e))
	}
	slices.SortFunc(n.entries, func(a, b fileInfo) int { return strings.Compare(a.name, b.name) })
	return n, nil
}

// followed names the symlink GitHub followed to answer for name.
func (f *repoFS) followed(name string) error {
	link := f.symlinkAbove(name)
	if link == "" {
		link = name
	}
	return &viaSymlink{path: name, link: link}
}

// fetchFile reads file name. What GitHub answers is checked again: a
// symlink GitHub followed, a submodule listed as a file, a size past the limit.
func (f *repoFS) fetchFile(name string) (*node, error) {
	file, dir, fact, err := f.contents(name)
	if fact != nil || err != nil {
		return fact, err
	}
	base := path.Base(name)
	if file == nil {
		if len(dir) > 0 && dir[0].GetPath() != name+"/"+dir[0].GetName() {
			return &node{err: f.followed(name)}, nil
		}
		return &node{info: fileInfo{name: base, mode: fs.ModeDir | 0o555}}, nil
	}
	switch t := file.GetType(); {
	case t == "symlink":
		return &node{err: &viaSymlink{path: name, link: name}}, nil
	case t == "submodule":
		return &node{err: refused("is a submodule: %s", onlyRegular)}, nil
	case t != "file":
		return &node{err: refused("is a %q entry: %s", t, onlyRegular)}, nil
	case file.GetPath() != name:
		// GitHub follows a symlink whose target is a file in the repository
		// and answers with the target: the path it names gives it away.
		return &node{err: refused("is a symlink (GitHub answered with %q): %s, never symlinks", file.GetPath(), onlyRegular)}, nil
	case int64(file.GetSize()) > MaxFileSize:
		return &node{info: fileInfo{name: base, size: int64(file.GetSize()), mode: 0o444}, err: tooLarge(int64(file.GetSize()))}, nil
	}
	content, err := file.GetContent()
	if err != nil {
		op := fmt.Sprintf("read %s at %s@%s", name, f.repo, f.ref)
		return nil, &Error{Op: op, StatusCode: http.StatusOK, Err: fmt.Errorf("decoding the content: %w", err)}
	}
	if len(content) > MaxFileSize {
		return &node{err: tooLarge(int64(len(content)))}, nil
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
