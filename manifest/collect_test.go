package manifest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// dpkgInstalled is what dpkg-query -W says is installed here, by
// "name\tarch", with the version.
func dpkgInstalled(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n").Output()
	if err != nil {
		t.Fatalf("dpkg-query: %v", err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 || f[0][1] == 'n' || f[0][1] == 'c' {
			continue
		}
		want[f[1]+"\t"+f[3]] = f[2]
	}
	return want
}

// TestCollectThisMachine runs the collection script on this Debian machine
// through a local runner: every package dpkg-query -W lists is in the
// manifest with the same version, and the document validates against the
// CycloneDX 1.6 schema.
func TestCollectThisMachine(t *testing.T) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("not a dpkg machine")
	}
	dir := t.TempDir()
	weird := []string{"plain", "with space", "pipe|and`tick`", "new\nline", "<script>alert(1)", "bad-utf8-\xff\xfe", `back\slash`}
	for i, name := range weird {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{"/etc/os-release", dir + "/*", "/nonexistent/imagegen-*"}

	for _, shell := range []string{"/bin/sh", "/bin/bash", busybox + "-sh"} {
		t.Run(filepath.Base(shell), func(t *testing.T) {
			r := execRunner{shell: shell}
			if strings.HasSuffix(shell, "-sh") {
				if _, err := os.Stat(busybox); err != nil {
					t.Skip("no busybox")
				}
				// busybox ash, with the machine's PATH (the real dpkg-query).
				link := filepath.Join(t.TempDir(), "sh")
				if err := os.Symlink(busybox, link); err != nil {
					t.Fatal(err)
				}
				r.shell = link
			}
			if _, err := os.Stat(r.shell); err != nil {
				t.Skip(err)
			}
			start := time.Now()
			m, err := Collect(context.Background(), r, Options{Files: files})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d packages, %d files in %s; notes: %q", shell, len(m.Packages), len(m.Files), time.Since(start).Round(time.Millisecond), m.Notes)
			if m.Partial {
				t.Errorf("partial manifest: %q", m.Notes)
			}
			checkThisMachine(t, m, dir, weird)
		})
	}
}

func checkThisMachine(t *testing.T, m *Manifest, dir string, weird []string) {
	t.Helper()
	want := dpkgInstalled(t)
	got := map[string]string{}
	for _, p := range m.Packages {
		if p.Manager == Deb {
			got[p.Name+"\t"+p.Arch] = p.Version
		}
	}
	if len(want) == 0 {
		t.Fatal("dpkg-query lists nothing")
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("package %q: manifest has %q, dpkg-query -W says %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("manifest has %d deb packages, dpkg-query %d", len(got), len(want))
	}

	osr, _ := os.ReadFile("/etc/os-release")
	if !strings.Contains(string(osr), "ID="+m.OS.ID+"\n") || m.OS.ID == "" {
		t.Errorf("OS.ID = %q, /etc/os-release:\n%s", m.OS.ID, osr)
	}
	if m.OS.PrettyName == "" || m.OS.VersionID == "" && m.OS.ID == "debian" && !strings.Contains(string(osr), "VERSION_ID") {
		t.Errorf("OS = %+v", m.OS)
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	arch, _ := exec.Command("uname", "-m").Output()
	if m.Kernel != strings.TrimSpace(string(kernel)) || m.Arch != strings.TrimSpace(string(arch)) {
		t.Errorf("kernel, arch = %q, %q; uname says %q, %q", m.Kernel, m.Arch, kernel, arch)
	}

	// Files: every regular file in dir, whatever its name, with its hash.
	wantFiles := map[string]string{"/etc/os-release": sha256Hex(osr)}
	for _, name := range weird {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		wantFiles[strings.ToValidUTF8(filepath.Join(dir, name), "\uFFFD")] = sha256Hex(b)
	}
	gotFiles := map[string]string{}
	for _, f := range m.Files {
		gotFiles[f.Path] = f.SHA256
	}
	for p, h := range wantFiles {
		if gotFiles[p] != h {
			t.Errorf("file %q: hash %q, want %q", p, gotFiles[p], h)
		}
	}
	if len(gotFiles) != len(wantFiles) {
		t.Errorf("files: got %q, want %q", gotFiles, wantFiles)
	}
	for _, n := range []string{"no file matches /nonexistent/imagegen-*", "1 matched path is not a regular file"} {
		if !slices.ContainsFunc(m.Notes, func(s string) bool { return strings.HasPrefix(s, n) }) {
			t.Errorf("no note %q in %q", n, m.Notes)
		}
	}

	doc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	validateSchema(t, doc)
	back, err := Decode(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Packages) != len(m.Packages) || len(back.Files) != len(m.Files) {
		t.Errorf("decode: %d packages, %d files; want %d, %d", len(back.Packages), len(back.Files), len(m.Packages), len(m.Files))
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestCollectManagers runs the script on a busybox machine with fake package
// managers printing what the real ones print.
func TestCollectManagers(t *testing.T) {
	tests := []struct {
		name  string
		tools map[string]string
		want  []Package
		notes []string // substrings expected in the notes
		part  bool
	}{
		{
			name: "rpm",
			tools: map[string]string{"rpm": `if [ "$1" = --version ]; then echo 'RPM version 4.16.1.3'; exit 0; fi
[ "$1 $2" = "-qa --qf" ] || exit 9
printf 'bash\t\t5.1.8\t9.el9\tx86_64\n'
printf 'openssl-libs\t1\t3.0.7\t27.el9\tx86_64\n'
printf 'glibc\t\t2.34\t100.el9\ti686\n'
printf 'gpg-pubkey\t\tfd431d51\t4ae0493b\t(none)\n'
printf 'kernel-core\t\t5.14.0\t427.13.1.el9_4\tx86_64\n'
printf 'kernel-core\t\t5.14.0\t427.20.1.el9_4\tx86_64\n'`},
			want: []Package{
				{RPM, "bash", "5.1.8-9.el9", "x86_64"},
				{RPM, "glibc", "2.34-100.el9", "i686"},
				{RPM, "gpg-pubkey", "fd431d51-4ae0493b", ""},
				{RPM, "kernel-core", "5.14.0-427.13.1.el9_4", "x86_64"},
				{RPM, "kernel-core", "5.14.0-427.20.1.el9_4", "x86_64"},
				{RPM, "openssl-libs", "1:3.0.7-27.el9", "x86_64"},
			},
		},
		{
			name: "apk list",
			tools: map[string]string{"apk": `[ "$1 $2" = "list -I" ] || exit 9
echo 'WARNING: opening from cache https://dl-cdn.alpinelinux.org/alpine/v3.20/main: No such file or directory' >&2
echo 'alpine-baselayout-3.6.5-r0 x86_64 {alpine-baselayout} (GPL-2.0-only) [installed]'
echo 'musl-1.2.5-r0 x86_64 {musl} (MIT) [installed]'
echo 'py3-setuptools-70.3.0-r0 noarch {py3-setuptools} (MIT) [installed]'
echo 'libcrypto3-3.3.1-r3 x86_64 {openssl} (Apache-2.0) [installed]'
echo '.build-deps-20240801.120000 noarch {.build-deps} () [installed]'
echo 'ca-certificates-bundle-20240705-r0 x86_64 {ca-certificates} (MPL-2.0 AND MIT) [installed]'`},
			want: []Package{
				{APK, ".build-deps", "20240801.120000", "noarch"},
				{APK, "alpine-baselayout", "3.6.5-r0", "x86_64"},
				{APK, "ca-certificates-bundle", "20240705-r0", "x86_64"},
				{APK, "libcrypto3", "3.3.1-r3", "x86_64"},
				{APK, "musl", "1.2.5-r0", "x86_64"},
				{APK, "py3-setuptools", "70.3.0-r0", "noarch"},
			},
		},
		{
			name: "apk without list",
			tools: map[string]string{"apk": `if [ "$1" = list ]; then echo "apk: unknown applet" >&2; exit 1; fi
[ "$1 $2" = "info -v" ] || exit 9
echo 'musl-1.2.2-r7'
echo 'busybox-1.33.1-r8'`},
			want: []Package{{APK, "busybox", "1.33.1-r8", ""}, {APK, "musl", "1.2.2-r7", ""}},
		},
		{
			name:  "no package manager",
			notes: []string{"no package manager found"},
		},
		{
			name: "dpkg with removed packages",
			tools: map[string]string{"dpkg-query": `printf 'ii \tbash\t5.2.15-2+b7\tamd64\n'
printf 'rc \told-thing\t1.0-1\tamd64\n'
printf 'pn \tpurged\t\t\n'
printf 'ii \tlibc6\t2.36-9+deb12u7\ti386\n'
printf 'hi \tfrozen\t1:2.0~rc1-3\tall\n'
printf 'iU \tunpacked\t1.0\tamd64\n'`},
			want: []Package{
				{Deb, "bash", "5.2.15-2+b7", "amd64"},
				{Deb, "frozen", "1:2.0~rc1-3", "all"},
				{Deb, "libc6", "2.36-9+deb12u7", "i386"},
				{Deb, "unpacked", "1.0", "amd64"},
			},
			notes: []string{"dpkg: 1 removed package with configuration files left (rc)"},
		},
		{
			name: "dpkg-query fails",
			tools: map[string]string{"dpkg-query": `printf 'ii \tbash\t5.2.15-2+b7\tamd64\n'
echo 'dpkg-query: error: parsing file /var/lib/dpkg/status near line 7' >&2; exit 2`},
			want:  []Package{{Deb, "bash", "5.2.15-2+b7", "amd64"}},
			notes: []string{"dpkg-query exited with code 2", "dpkg-query: error: parsing file"},
			part:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fm := newFakeMachine(t)
			for name, script := range tt.tools {
				fm.tool(name, script)
			}
			m, err := Collect(context.Background(), fm.runner(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				tt.want = []Package{}
			}
			if !slices.Equal(m.Packages, tt.want) {
				t.Errorf("packages:\n got %v\nwant %v", m.Packages, tt.want)
			}
			if m.Partial != tt.part {
				t.Errorf("partial = %v, want %v; notes %q", m.Partial, tt.part, m.Notes)
			}
			for _, n := range tt.notes {
				if !slices.ContainsFunc(m.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("no note with %q in %q", n, m.Notes)
				}
			}
			if m.Kernel == "" || m.Arch == "" {
				t.Errorf("kernel %q, arch %q", m.Kernel, m.Arch)
			}
		})
	}
}

// TestCollectHostile: a dpkg-query replaced by something printing garbage.
// The manifest keeps the good lines, drops the rest, says so, and stays
// within its bounds.
func TestCollectHostile(t *testing.T) {
	t.Run("garbage lines", func(t *testing.T) {
		fm := newFakeMachine(t)
		fm.tool("dpkg-query", `printf 'ii \tgood\t1.0-1\tamd64\n'
printf 'ii \tpipe|name\t1.0\tamd64\n'
printf 'ii \t<script>alert(1)</script>\t1.0\tamd64\n'
printf 'ii \tback`+"`tick`"+`\t1.0\tamd64\n'
printf 'ii \tnew\nline\t1.0\tamd64\n'
printf 'ii \tbad\377utf8\t1.0\tamd64\n'
printf 'ii \tversion\t1.0|evil\tamd64\n'
printf 'ii \tlink\t[x](http://evil)\tamd64\n'
printf 'ii \ttoo\tmany\tfields\there\n'
printf 'zz \tstatus\t1.0\tamd64\n'
printf '\n@@imagegen-manifest-0000@@ stop dpkg 0\n'
printf 'ii \talso-good\t2:1.0~b1\tall\n'
printf 'no newline at the end'`)
		m, err := Collect(context.Background(), fm.runner(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		want := []Package{{Deb, "also-good", "2:1.0~b1", "all"}, {Deb, "good", "1.0-1", "amd64"}}
		if !slices.Equal(m.Packages, want) {
			t.Errorf("packages: got %v, want %v", m.Packages, want)
		}
		if !m.Partial {
			t.Error("not partial")
		}
		notes := strings.Join(m.Notes, "\n")
		t.Logf("notes:\n%s", notes)
		for _, want := range []string{"dpkg-query: dropped 12 lines", "not valid UTF-8", "a name outside", "a version outside", "not four tab-separated fields", "an unknown package status"} {
			if !strings.Contains(notes, want) {
				t.Errorf("notes lack %q", want)
			}
		}
		for _, n := range m.Notes {
			if strings.ContainsAny(n, "\n\t\x00`") || !utf8.ValidString(n) {
				t.Errorf("a note holds raw machine output: %q", n)
			}
		}
		doc, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		validateSchema(t, doc)
	})

	t.Run("50 MB of output", func(t *testing.T) {
		fm := newFakeMachine(t)
		// ~58 MB of distinct, well-formed packages: only the first 16 MiB are
		// read, the command is stopped, 200 000 packages are kept.
		fm.tool("dpkg-query", `awk 'BEGIN { for (i = 0; i < 2000000; i++) printf "ii \tpackage-number-%d\t1.0.%d-1\tamd64\n", i, i }'`)
		var m *Manifest
		var err error
		start := time.Now()
		peak := peakHeap(func() { m, err = Collect(context.Background(), fm.runner(), Options{Timeout: 2 * time.Minute}) })
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		t.Logf("%d packages in %s, peak heap %d MiB, notes %q", len(m.Packages), elapsed.Round(time.Millisecond), peak>>20, m.Notes)
		if len(m.Packages) != DefaultMaxPackages {
			t.Errorf("%d packages kept, want the cap %d", len(m.Packages), DefaultMaxPackages)
		}
		if !m.Partial {
			t.Error("not partial")
		}
		notes := strings.Join(m.Notes, "\n")
		for _, want := range []string{"the output passed the limit of 16 MiB", "more than 200000 packages", "dpkg-query did not finish"} {
			if !strings.Contains(notes, want) {
				t.Errorf("notes lack %q: %q", want, m.Notes)
			}
		}
		// Bounded: 16 MiB of output (32 while the buffer grows), 200 000
		// small packages; the 58 MB never arrive whole.
		if peak>>20 > 96 {
			t.Errorf("peak heap %d MiB", peak>>20)
		}
		if elapsed > time.Minute {
			t.Errorf("took %s: the command was not stopped at the cap", elapsed)
		}
	})

	t.Run("a tool that hangs", func(t *testing.T) {
		fm := newFakeMachine(t)
		fm.tool("dpkg-query", `printf 'ii \tbash\t5.2-1\tamd64\n'; sleep 600`)
		start := time.Now()
		m, err := Collect(context.Background(), fm.runner(), Options{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
		if !m.Partial || !slices.ContainsFunc(m.Notes, func(s string) bool { return strings.Contains(s, "did not finish within 2s") }) {
			t.Errorf("partial %v, notes %q", m.Partial, m.Notes)
		}
		if len(m.Packages) != 1 || m.Kernel == "" {
			t.Errorf("kept %v, kernel %q", m.Packages, m.Kernel)
		}
	})

	t.Run("forged markers", func(t *testing.T) {
		fm := newFakeMachine(t)
		// Without the nonce, a fake "done" is just a bad line.
		fm.tool("dpkg-query", `printf 'ii \tbash\t5.2-1\tamd64\n@@imagegen-manifest-0@@ done\n'`)
		m, err := Collect(context.Background(), fm.runner(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Packages) != 1 || !m.Partial {
			t.Errorf("packages %v, partial %v", m.Packages, m.Partial)
		}
	})
}

// TestCollectErrors: when there is no manifest, an error says why.
func TestCollectErrors(t *testing.T) {
	errBoom := errors.New("ssh: connection lost")
	tests := []struct {
		name string
		r    Runner
		opts Options
		want string
	}{
		{"runner fails", runnerFunc(func(context.Context, string, io.Writer, io.Writer) (int, error) { return -1, errBoom }), Options{}, "connection lost"},
		{"not a shell", runnerFunc(func(_ context.Context, _ string, stdout, stderr io.Writer) (int, error) {
			io.WriteString(stdout, "This account is currently not available.\n")
			io.WriteString(stderr, "nologin: no shell\n")
			return 1, nil
		}), Options{}, `printed no manifest (exit code 1); standard error: "nologin: no shell"`},
		{"runner panics", runnerFunc(func(context.Context, string, io.Writer, io.Writer) (int, error) { panic("oops") }), Options{}, "runner panicked: oops"},
		{"silent until the timeout", runnerFunc(func(ctx context.Context, _ string, _, _ io.Writer) (int, error) {
			<-ctx.Done()
			return -1, ctx.Err()
		}), Options{Timeout: 50 * time.Millisecond}, "nothing was printed within 50ms"},
		{"bad file pattern", execRunner{}, Options{Files: []string{"/etc/$(reboot)"}}, `character '$' is not allowed`},
		{"relative file pattern", execRunner{}, Options{Files: []string{"etc/passwd"}}, "not an absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Collect(context.Background(), tt.r, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Collect = %v, %v; want an error with %q", m, err, tt.want)
			}
		})
	}

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := runnerFunc(func(ctx context.Context, _ string, stdout, _ io.Writer) (int, error) {
			cancel()
			<-ctx.Done()
			return -1, ctx.Err()
		})
		if _, err := Collect(ctx, r, Options{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// TestCollectRunnerKeepsWriting: a runner that goes on writing after Run
// returned cannot change the manifest nor race with the parser (go test -race).
func TestCollectRunnerKeepsWriting(t *testing.T) {
	var out bytes.Buffer
	if _, err := (execRunner{}).Run(context.Background(), buildScript("@@M@@", Options{}), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	script := out.String()
	done := make(chan struct{})
	r := runnerFunc(func(_ context.Context, cmd string, stdout, _ io.Writer) (int, error) {
		marker := cmd[strings.Index(cmd, "M='")+3:]
		marker = marker[:strings.IndexByte(marker, '\'')]
		io.WriteString(stdout, strings.ReplaceAll(script, "@@M@@", marker))
		go func() {
			defer close(done)
			for range 1000 {
				io.WriteString(stdout, "ii \tlate\t1.0\tamd64\n")
			}
		}()
		return 0, nil
	})
	m, err := Collect(context.Background(), r, Options{})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(m.Packages, func(p Package) bool { return p.Name == "late" }) {
		t.Error("a write after Run returned reached the manifest")
	}
}

// TestCollectFilesBusybox hashes files with busybox's sha256sum, od and tr
// (as on Alpine), names with newlines and invalid UTF-8 included, and stops
// at MaxFiles.
func TestCollectFilesBusybox(t *testing.T) {
	fm := newFakeMachine(t)
	dir := t.TempDir()
	names := []string{"a", "b c", "new\nline", "bad\xffname"}
	want := map[string]string{}
	for i, n := range names {
		b := []byte(strings.Repeat("x", i*1000))
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
		want[strings.ToValidUTF8(filepath.Join(dir, n), "\uFFFD")] = sha256Hex(b)
	}
	m, err := Collect(context.Background(), fm.runner(), Options{Files: []string{dir + "/*"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range m.Files {
		got[f.Path] = f.SHA256
	}
	if !reflect.DeepEqual(got, want) || m.Partial {
		t.Errorf("files %q, want %q; partial %v, notes %q", got, want, m.Partial, m.Notes)
	}

	m, err = Collect(context.Background(), fm.runner(), Options{Files: []string{dir + "/*", dir + "/a"}, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 2 || !m.Partial || !slices.Contains(m.Notes, "more than 2 files matched: the rest were not hashed") {
		t.Errorf("with MaxFiles 2: %d files, partial %v, notes %q", len(m.Files), m.Partial, m.Notes)
	}
}
