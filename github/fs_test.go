package github_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
)

// contentCalls returns the paths the contents API was asked for, in order.
func contentCalls(s *githubtest.Server) []string {
	var out []string
	for _, c := range callsTo(s, http.MethodGet, "/repos/"+repo+"/contents") {
		out = append(out, strings.TrimPrefix(strings.TrimPrefix(c.Path, "/repos/"+repo+"/contents"), "/"))
	}
	return out
}

// TestFSRefusesLargeFilesUnread: a script_file of 50 MB is refused from the
// size its directory's listing gives: the file itself is never asked for,
// and the spec's error names the limit.
func TestFSRefusesLargeFilesUnread(t *testing.T) {
	s := githubtest.NewServer(t)
	const big = 50 << 20
	s.SetFile(repo, sha, "scripts/big.sh", bytes.Repeat([]byte("#"), big))
	s.SetFile(repo, sha, "scripts/ok.sh", []byte("echo ok\n"))
	c := newClient(t, s.AppConfig(t), 42, github.Options{})
	fsys := c.FS(context.Background(), repo, sha)

	fi, err := fs.Stat(fsys, "scripts/big.sh")
	if err != nil || fi.Size() != big || !fi.Mode().IsRegular() {
		t.Fatalf("Stat = %v, %v; want a regular file of %d bytes", fi, err, big)
	}
	if _, err := fs.ReadFile(fsys, "scripts/big.sh"); !errors.Is(err, github.ErrTooLarge) ||
		err.Error() != "read scripts/big.sh: file too large: 52428800 bytes, over the 1048576 byte limit" {
		t.Errorf("ReadFile = %v; want ErrTooLarge naming the size and the limit", err)
	}
	_, err = spec.ParseBytes(fsys, ".imagegen/big.yaml", []byte("script_file: scripts/big.sh\nclouds: {sim: {image: i, ssh_user: u}}\n"), spec.Options{})
	want := `.imagegen/big.yaml:1:14: script_file "scripts/big.sh" is 52428800 bytes, over the limit of 1048576 bytes (1 MiB): have the script download large content instead`
	if err == nil || err.Error() != want {
		t.Errorf("ParseBytes = %v\nwant %s", err, want)
	}
	if _, err := spec.ParseBytes(fsys, ".imagegen/ok.yaml", []byte("script_file: scripts/ok.sh\nclouds: {sim: {image: i, ssh_user: u}}\n"), spec.Options{}); err != nil {
		t.Errorf("a script of the same directory: %v", err)
	}
	got := contentCalls(s)
	for _, p := range got {
		if p == "scripts/big.sh" {
			t.Errorf("the contents API was asked for scripts/big.sh (calls %q): it must be refused from the listing", got)
		}
	}
	if want := []string{"scripts", "scripts/ok.sh"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("contents calls %q, want %q", got, want)
	}
}

// TestFSSymlinks: whatever the server does with a path through a symlinked
// directory (404, or the target's content), the FS refuses it, naming the
// symlink; a symlink to a file is refused though GitHub answers with the
// file; nothing outside regular files is ever returned.
func TestFSSymlinks(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprintf("server follows dir symlinks %v", follow), func(t *testing.T) {
			s := githubtest.NewServer(t)
			s.SetFollowSymlinkedDirs(follow)
			s.SetFiles(repo, sha, map[string]string{
				"scripts/real.sh":     "echo real\n",
				"scripts/sub/deep.sh": "echo deep\n",
			})
			s.SetSymlink(repo, sha, "lib", "scripts")                  // a directory in the repository
			s.SetSymlink(repo, sha, "scripts/link.sh", "real.sh")      // a file in the repository
			s.SetSymlink(repo, sha, "scripts/up", "..")                // the root, from below
			s.SetSymlink(repo, sha, "etc", "../../../../etc")          // out of the repository
			s.SetSymlink(repo, sha, "scripts/abs.sh", "/etc/passwd")   // absolute
			s.SetSymlink(repo, sha, "scripts/sub/loop", "../sub/loop") // itself
			c := newClient(t, s.AppConfig(t), 42, github.Options{})
			fsys := c.FS(context.Background(), repo, sha)
			tests := []struct {
				path string
				want string // the error, "" for content
			}{
				{"scripts/real.sh", ""},
				{"scripts/sub/deep.sh", ""},
				{"scripts/link.sh", "read scripts/link.sh: is a symlink: imagegen reads only regular files of the commit, never symlinks (their targets may lie outside it)"},
				{"scripts/abs.sh", "read scripts/abs.sh: is a symlink"},
				{"lib", "read lib: is a symlink"},
				{"lib/real.sh", `read lib/real.sh: leads through "lib", a symlink: imagegen reads only regular files of the commit, never through symlinks (their targets may lie outside it)`},
				{"lib/sub/deep.sh", `read lib/sub/deep.sh: leads through "lib", a symlink`},
				{"scripts/up/scripts/real.sh", `read scripts/up/scripts/real.sh: leads through "scripts/up", a symlink`},
				{"etc/passwd", `read etc/passwd: leads through "etc", a symlink`},
				{"scripts/sub/loop/x", `read scripts/sub/loop/x: leads through "scripts/sub/loop", a symlink`},
			}
			for _, tt := range tests {
				got, err := fs.ReadFile(fsys, tt.path)
				switch {
				case tt.want == "" && err != nil:
					t.Errorf("ReadFile(%s): %v", tt.path, err)
				case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) || !errors.Is(err, fs.ErrPermission)):
					t.Errorf("ReadFile(%s) = %q, %v\nwant the error %s", tt.path, got, err, tt.want)
				}
			}
			// Listing through a symlink is refused the same way, whether the
			// server lists the target or answers 404.
			for _, dir := range []string{"lib", "lib/sub", "scripts/up/scripts"} {
				if _, err := fs.ReadDir(fsys, dir); !errors.Is(err, fs.ErrPermission) && (follow || !errors.Is(err, fs.ErrNotExist)) {
					t.Errorf("ReadDir(%s) = %v; want a refusal", dir, err)
				}
			}
		})
	}
}

// TestFSLongDirectory: the contents API lists at most 1000 entries of a
// directory; a file past them is still read.
func TestFSLongDirectory(t *testing.T) {
	s := githubtest.NewServer(t)
	files := map[string]string{}
	for i := range githubtest.MaxListed + 5 {
		files[fmt.Sprintf("scripts/s%04d.sh", i)] = fmt.Sprintf("echo %d\n", i)
	}
	s.SetFiles(repo, sha, files)
	c := newClient(t, s.AppConfig(t), 42, github.Options{})
	fsys := c.FS(context.Background(), repo, sha)
	last := fmt.Sprintf("scripts/s%04d.sh", githubtest.MaxListed+4)
	got, err := fs.ReadFile(fsys, last)
	if err != nil || string(got) != fmt.Sprintf("echo %d\n", githubtest.MaxListed+4) {
		t.Fatalf("ReadFile(%s) = %q, %v", last, got, err)
	}
	if _, err := fs.ReadFile(fsys, "scripts/nope.sh"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file in no listing: %v, want ErrNotExist", err)
	}
}

// FuzzFSPath: whatever path the FS is asked for, it returns only the content
// of a regular file stored at exactly that path, never a symlink's target,
// whether or not the server follows symlinked directories; and it asks the
// API only for valid paths.
func FuzzFSPath(f *testing.F) {
	for _, seed := range []string{
		"scripts/real.sh", "scripts/link.sh", "lib/real.sh", "lib", "scripts/up/scripts/real.sh",
		"etc/passwd", "../x", "/etc/passwd", "scripts/./real.sh", "scripts//real.sh",
		"scripts/real.sh/", "scripts/big.sh", "skripte/größe.sh", "scripts/a?b", "scripts/a#b",
		"scripts/%2e%2e/x", "scripts/\x00", "scripts/\n", ".", "", "scripts/sub/loop/x",
	} {
		f.Add(seed, false)
	}
	s := githubtest.NewServer(f)
	files := map[string]string{
		"scripts/real.sh":     "echo real\n",
		"scripts/sub/deep.sh": "echo deep\n",
		"skripte/größe.sh":    "echo unicode\n",
		"scripts/a?b":         "echo question\n",
		"scripts/a#b":         "echo hash\n",
		"scripts/big.sh":      strings.Repeat("#", github.MaxFileSize+1),
	}
	s.SetFiles(repo, sha, files)
	for link, target := range map[string]string{
		"lib": "scripts", "scripts/link.sh": "real.sh", "scripts/up": "..", "etc": "../../../../etc",
		"scripts/abs.sh": "/etc/passwd", "scripts/sub/loop": "../sub/loop",
	} {
		s.SetSymlink(repo, sha, link, target)
	}
	c := newClient(f, s.AppConfig(f), 42, github.Options{})
	dirs := map[string]bool{".": true, "scripts": true, "scripts/sub": true, "skripte": true}
	f.Fuzz(func(t *testing.T, p string, follow bool) {
		s.SetFollowSymlinkedDirs(follow)
		before := len(s.Calls())
		fsys := c.FS(context.Background(), repo, sha)
		got, err := fs.ReadFile(fsys, p)
		if err == nil {
			want, ok := files[p]
			if !ok || string(got) != want || p == "scripts/big.sh" {
				t.Fatalf("ReadFile(%q) = %q; want only the regular file stored at that path", p, got)
			}
		}
		if fi, err := fs.Stat(fsys, p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			t.Fatalf("Stat(%q) = %v: a symlink, not refused", p, fi.Mode())
		}
		if _, err := fs.ReadDir(fsys, p); err == nil && !dirs[p] {
			t.Fatalf("ReadDir(%q) listed a directory that is none (or lies through a symlink)", p)
		}
		for _, c := range s.Calls()[before:] {
			asked, ok := strings.CutPrefix(c.Path, "/repos/"+repo+"/contents")
			if !ok {
				continue
			}
			if asked = strings.TrimPrefix(asked, "/"); asked != "" && (!fs.ValidPath(asked) || asked != p && !strings.HasPrefix(p, asked+"/") && !dirs[asked]) {
				t.Fatalf("reading %q asked the API for %q", p, asked)
			}
		}
	})
}
