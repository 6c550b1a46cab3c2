package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// The script_file paths of these tests are written as YAML double-quoted
// strings, so any character (a newline, a NUL, U+202E) can reach the parser.

// yamlQuote writes s as a YAML double-quoted scalar, escaping what YAML
// would not take literally.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 || r == 0xfeff || r >= 0xfff0 && r <= 0xffff:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

const (
	outsideSecret = "SECRET: outside the repository\n"
	pathSpecTail  = "\nclouds: {hotel: {image: i, ssh_user: u}}\n"
)

// pathRepo makes a repository on disk with the symlinks a hostile push may
// bring, next to a directory outside it holding a secret; it returns the
// repository and the content of each regular file in it.
func pathRepo(t testing.TB) (fs.FS, map[string]string) {
	t.Helper()
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	dir := filepath.Join(top, "repo")
	files := map[string]string{
		"scripts/real.sh":       "echo real\n",
		"scripts/sub/deep.sh":   "echo deep\n",
		"skripte/größe.sh":      "echo unicode\n",
		"scripts/with space.sh": "echo space\n",
		"top.sh":                "echo top\n",
	}
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.sh"), []byte(outsideSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"scripts/inside.sh": "real.sh",                           // a file in the repository
		"scripts/out.sh":    filepath.Join(outside, "secret.sh"), // absolute, out
		"scripts/rel-out":   "../../outside/secret.sh",           // relative, out
		"outdir":            outside,                             // a directory out
		"lib":               "scripts",                           // a directory in
		"scripts/up":        "..",                                // the root, from below
		"scripts/loop":      "loop",                              // itself
		"scripts/dangling":  "nothing-here.sh",                   // nowhere
		"scripts/sub/esc":   "../../../outside",                  // a directory out, deeper
		"scripts/dev":       "/dev/zero",                         // a device
	} {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	return repo, files
}

// TestScriptFilePaths: every way a script_file path can go wrong gets one
// error at the value's position (f.yaml:1:14) saying what is wrong; the
// paths that stay in the repository read the file.
func TestScriptFilePaths(t *testing.T) {
	repo, _ := pathRepo(t)
	long := strings.Repeat("a/", 600) + "x.sh"
	tests := []struct {
		path string
		want string // the whole error; "" for success
		read string // the script read, on success
	}{
		{"scripts/real.sh", "", "echo real\n"},
		{"./scripts//real.sh", "", "echo real\n"},
		{"scripts/sub/../real.sh", "", "echo real\n"},
		{"scripts/inside.sh", "", "echo real\n"},
		{"lib/real.sh", "", "echo real\n"},
		{"scripts/up/top.sh", "", "echo top\n"},
		{"skripte/größe.sh", "", "echo unicode\n"},
		{"scripts/with space.sh", "", "echo space\n"},

		{"", `script_file is empty: give a path relative to the repository root (e.g. scripts/setup.sh)`, ""},
		{"../outside/secret.sh", `script_file "../outside/secret.sh" leads out of the repository: imagegen reads only files inside it; give a path relative to the repository root`, ""},
		{"scripts/../../outside/secret.sh", `script_file "scripts/../../outside/secret.sh" leads out of the repository`, ""},
		{"..", `script_file ".." leads out of the repository`, ""},
		{"/etc/passwd", `script_file "/etc/passwd" is an absolute path: give a path relative to the repository root (e.g. scripts/setup.sh)`, ""},
		{`\etc\passwd`, `script_file "\\etc\\passwd" is an absolute path`, ""},
		{`C:\x.sh`, `script_file "C:\\x.sh" is an absolute path`, ""},
		{`scripts\..\..\x.sh`, `script_file "scripts\\..\\..\\x.sh" contains a backslash: separate directories with / (e.g. scripts/setup.sh)`, ""},
		{".", `script_file "." is not a valid path: give a slash-separated path relative to the repository root`, ""},
		{"scripts/real.sh\n", `script_file "scripts/real.sh\n" contains the control character U+000A at byte 15: give a path relative to the repository root (e.g. scripts/setup.sh)`, ""},
		{"scripts/\x00real.sh", `script_file "scripts/\x00real.sh" contains the control character U+0000 at byte 8`, ""},
		{"scripts/\x1b[31mreal.sh", `script_file "scripts/\x1b[31mreal.sh" contains the control character U+001B at byte 8`, ""},
		{"scripts/\u0085real.sh", `script_file "scripts/\u0085real.sh" contains the control character U+0085 at byte 8`, ""},
		{"scripts/hs.laer\u202e.sh", `script_file "scripts/hs.laer\u202e.sh" contains the invisible character U+202E at byte 15: write the path in plain characters`, ""},
		{"scripts/\u200breal.sh", `script_file "scripts/\u200breal.sh" contains the invisible character U+200B at byte 8`, ""},
		{long, fmt.Sprintf(`script_file %q… is 1204 bytes long: keep the path to 1024 bytes at most`, long[:64]), ""},
		{"scripts/" + strings.Repeat("é", 200) + ".sh", fmt.Sprintf(`script_file %q… has a path element of 403 bytes: keep each to 255 bytes at most`, "scripts/"+strings.Repeat("é", 28)), ""},
		{"scripts/nope.sh", `script_file "scripts/nope.sh" does not exist in the repository`, ""},
		{"scripts/sub", `script_file "scripts/sub" is a directory, not a file`, ""},
		{"scripts/out.sh", `script_file "scripts/out.sh" is a symlink leading out of the repository: imagegen reads only files inside it`, ""},
		{"scripts/rel-out", `script_file "scripts/rel-out" is a symlink leading out of the repository: imagegen reads only files inside it`, ""},
		{"outdir/secret.sh", `script_file "outdir/secret.sh" leads out of the repository through a symlink: imagegen reads only files inside it`, ""},
		{"scripts/sub/esc/secret.sh", `script_file "scripts/sub/esc/secret.sh" leads out of the repository through a symlink`, ""},
		// Cleaned as written, not as the symlink would resolve "..":
		{"scripts/up/../outside/secret.sh", `script_file "scripts/outside/secret.sh" does not exist in the repository`, ""},
		{"lib/sub/esc/secret.sh", `script_file "lib/sub/esc/secret.sh" leads out of the repository through a symlink`, ""},
		{"scripts/dev", `script_file "scripts/dev" is a symlink leading out of the repository`, ""},
		{"scripts/loop", `script_file "scripts/loop" is a symlink that leads back to itself: imagegen reads only regular files`, ""},
		{"scripts/loop/x.sh", `script_file "scripts/loop/x.sh" leads through a symlink that leads back to itself: imagegen reads only regular files`, ""},
		{"scripts/dangling", `script_file "scripts/dangling" does not exist in the repository`, ""},
	}
	for _, tt := range tests {
		t.Run(strings.ToValidUTF8(fmt.Sprintf("%.40q", tt.path), "?"), func(t *testing.T) {
			src := "script_file: " + yamlQuote(tt.path) + pathSpecTail
			s, err := ParseBytes(repo, "f.yaml", []byte(src), testOpts)
			if tt.want == "" {
				if err != nil || s.Script != tt.read || s.ScriptFile != path.Clean(tt.path) {
					t.Fatalf("got %+v, %v; want the script %q", s, err, tt.read)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("error %v; want one spec error", err)
			}
			if got := es[0].Error(); !strings.HasPrefix(got, "f.yaml:1:14: "+tt.want) {
				t.Errorf("error\n %s\nwant\n f.yaml:1:14: %s", got, tt.want)
			}
		})
	}
}

// FuzzScriptFile: whatever script_file says, the parser never reads a file
// outside the repository nor follows a symlink out of it, reads only the
// cleaned path it names, and any error is one line at the value's position.
func FuzzScriptFile(f *testing.F) {
	for _, seed := range []string{
		"scripts/real.sh", "scripts/inside.sh", "lib/real.sh", "scripts/up/top.sh",
		"skripte/größe.sh", "scripts/with space.sh",
		"../outside/secret.sh", "scripts/../../outside/secret.sh", "/etc/passwd",
		`scripts\..\..\x.sh`, "scripts/out.sh", "scripts/rel-out", "outdir/secret.sh",
		"scripts/sub/esc/secret.sh", "lib/sub/esc/secret.sh", "scripts/up/../outside/secret.sh", "scripts/dev",
		"scripts/loop", "scripts/dangling", "scripts/real.sh\n", "scripts/\x00real.sh",
		"scripts/hs.laer\u202e.sh", strings.Repeat("a/", 600), "scripts/" + strings.Repeat("é", 200),
		".", "./", "scripts/", "scripts/sub", "C:x", "\xff",
	} {
		f.Add(seed)
	}
	repo, files := pathRepo(f)
	contents := map[string]bool{}
	for _, c := range files {
		contents[c] = true
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !utf8.ValidString(p) {
			p = strings.ToValidUTF8(p, "\uFFFD")
		}
		src := "script_file: " + yamlQuote(p) + pathSpecTail
		s, err := ParseBytes(repo, "f.yaml", []byte(src), testOpts)
		if err == nil {
			clean := path.Clean(p)
			switch {
			case strings.Contains(s.Script, "SECRET"):
				t.Fatalf("script_file %q read a file outside the repository", p)
			case !contents[s.Script]:
				t.Fatalf("script_file %q read %q, no regular file of the repository", p, s.Script)
			case s.ScriptFile != clean || !fs.ValidPath(clean) || strings.ContainsAny(clean, "\\\x00\n"):
				t.Fatalf("script_file %q recorded as %q", p, s.ScriptFile)
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %v (%T) is not spec.Errors", err, err)
		}
		for _, e := range es {
			msg := e.Error()
			if e.File != "f.yaml" || e.Line != 1 || e.Col != 14 {
				t.Fatalf("script_file %q: error %q is not at f.yaml:1:14", p, msg)
			}
			if !strings.HasPrefix(e.Msg, "script_file ") || strings.ContainsAny(msg, "\n\r\x00") || len(msg) > 1024 {
				t.Fatalf("script_file %q: error %q does not say plainly what is wrong with script_file", p, msg)
			}
			if strings.Contains(msg, "SECRET") {
				t.Fatalf("script_file %q: error %q shows the outside file", p, msg)
			}
		}
	})
}
