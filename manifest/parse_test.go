package manifest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const testMarker = "@@imagegen-manifest-test@@"

// output builds the script's output from sections: name → body. A body of
// nil leaves the section unended (output cut there).
func output(done bool, sections ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s begin 1\n", testMarker)
	for i := 0; i+1 < len(sections); i += 2 {
		fmt.Fprintf(&b, "\n%s start %s\n%s", testMarker, sections[i], sections[i+1])
		fmt.Fprintf(&b, "\n%s stop %s 0\n", testMarker, sections[i])
	}
	if done {
		fmt.Fprintf(&b, "\n%s done\n", testMarker)
	}
	return []byte(b.String())
}

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		body string
		want OS
		part bool
	}{
		{"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n", OS{"alpine", "3.20.3", "Alpine Linux v3.20"}, false},
		{"# comment\nID='ubuntu'\nVERSION_ID=\"22.04\"\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n", OS{"ubuntu", "22.04", "Ubuntu 22.04.4 LTS"}, false},
		{`PRETTY_NAME="a \"quoted\" \$name \\ \` + "`" + `x\` + "`" + `"` + "\nID=x\n", OS{"x", "", "a \"quoted\" $name \\ `x`"}, false},
		{"ID=two words\nVERSION_ID=\"12\n", OS{}, true},
		{"ID=\"debian\"\nID=\"debian2\"\n", OS{ID: "debian2"}, false}, // later assignments win, as in a shell
		{"ID=\"\x01\"\n", OS{}, true},
		{"garbage\n", OS{}, true},
	}
	for _, tt := range tests {
		m, st := parse(output(true, "os-release", tt.body), testMarker, Options{})
		if !st.done || m.OS != tt.want || m.Partial != tt.part {
			t.Errorf("%q: OS %+v partial %v (notes %q); want %+v partial %v", tt.body, m.OS, m.Partial, m.Notes, tt.want, tt.part)
		}
	}
}

func TestParseMarkers(t *testing.T) {
	dpkg := "ii \tbash\t5.2-1\tamd64\n"
	tests := []struct {
		name  string
		out   []byte
		done  bool
		part  bool
		notes []string
	}{
		{"complete", output(true, "dpkg", dpkg), true, false, nil},
		{"cut before done", output(false, "dpkg", dpkg), false, false, nil}, // Collect says why and marks it partial
		{"cut inside a section", []byte(testMarker + " begin 1\n" + testMarker + " start dpkg\n" + dpkg), false, true, []string{"dpkg-query did not finish: its output is cut"}},
		{"section twice", output(true, "dpkg", dpkg, "dpkg", "ii \tevil\t1\tamd64\n"), true, true, []string{"section dpkg came twice"}},
		{"unknown marker", append(output(false, "dpkg", dpkg), testMarker+" rm -rf /\n"+testMarker+" done\n"...), true, true, []string{`an unknown marker "rm -rf /"`}},
		{"unknown section", []byte(testMarker + " begin 1\n" + testMarker + " start secrets\nx\n" + testMarker + " done\n"), true, true, []string{`an unknown marker "start secrets"`}},
		{"stop without start", []byte(testMarker + " begin 1\n" + testMarker + " stop dpkg 0\n" + testMarker + " done\n"), true, true, []string{"a section ended that had not begun"}},
		{"begun twice", []byte(testMarker + " begin 1\n" + testMarker + " begin 1\n" + testMarker + " done\n"), true, true, []string{"the script began twice"}},
		{"no begin", []byte("hello\n" + testMarker + " done\n"), false, true, nil},
		{"a greeting first", append([]byte("Welcome to Ubuntu!\n\n"), output(true, "dpkg", dpkg)...), true, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, st := parse(tt.out, testMarker, Options{})
			if st.done != tt.done || m.Partial != tt.part {
				t.Errorf("done %v partial %v, want %v %v; notes %q", st.done, m.Partial, tt.done, tt.part, m.Notes)
			}
			for _, n := range tt.notes {
				if !slices.ContainsFunc(m.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("no note with %q in %q", n, m.Notes)
				}
			}
			if slices.ContainsFunc(m.Packages, func(p Package) bool { return p.Name == "evil" }) {
				t.Error("a repeated section's package was kept")
			}
		})
	}
}

func TestParseFiles(t *testing.T) {
	opts := Options{Files: []string{"/etc/a", "/srv/*"}}
	sum := strings.Repeat("0123456789abcdef", 4)
	body := strings.Join([]string{
		"F 0 " + sum + " p /etc/a",
		"F 1 " + strings.ToUpper(sum) + " x 2f7372762f6e65770a6c696e65", // "/srv/new\nline"
		"F 1 " + sum + " p /srv/a",
		"F 1 " + sum + " p /srv/a", // the same file through two patterns
		"N 1",
		"E 1 notfile p /srv/dir",
		"E 1 unreadable x 2f7372762fff", // "/srv/\xff"
		"F 7 " + sum + " p /srv/unknown-pattern",
		"F 1 nothex p /srv/b",
		"F 1 " + sum + " x 2f7",
		"F 1 " + sum + " p relative",
		"L",
		"garbage",
	}, "\n")
	m, st := parse(output(true, "files", body), testMarker, opts)
	if !st.done {
		t.Fatal("not done")
	}
	want := []File{{"/etc/a", sum}, {"/srv/a", sum}, {"/srv/new\nline", sum}}
	if !slices.Equal(m.Files, want) {
		t.Errorf("files:\n got %q\nwant %q", m.Files, want)
	}
	notes := strings.Join(m.Notes, "\n")
	for _, n := range []string{
		"no file matches /srv/*", "1 matched path is not a regular file", `1 file could not be read (the first: "/srv/dir")`,
		"more than 10000 files matched", "hashing files: dropped 5 lines", "1 duplicate entry was removed",
	} {
		if !strings.Contains(notes, n) {
			t.Errorf("no note %q in:\n%s", n, notes)
		}
	}
	if !m.Partial {
		t.Error("not partial")
	}
}

func TestParseCaps(t *testing.T) {
	var b strings.Builder
	for i := range 10 {
		fmt.Fprintf(&b, "ii \tp%d\t1.%d\tamd64\n", i, i)
	}
	b.WriteString(strings.Repeat("x", maxLine+1) + "\n")
	m, _ := parse(output(true, "dpkg", b.String()), testMarker, Options{MaxPackages: 4})
	if len(m.Packages) != 4 || !m.Partial {
		t.Errorf("%d packages, partial %v", len(m.Packages), m.Partial)
	}
	notes := strings.Join(m.Notes, "\n")
	if !strings.Contains(notes, "more than 4 packages: 6 more were not kept") {
		t.Errorf("notes: %s", notes)
	}
	for _, n := range m.Notes {
		if len(n) > 600 {
			t.Errorf("a note of %d bytes", len(n))
		}
	}
	m, _ = parse(output(true, "dpkg", strings.Repeat("y", maxLine+1)+"\n"), testMarker, Options{})
	if !strings.Contains(strings.Join(m.Notes, " "), "longer than 64 KiB") {
		t.Errorf("notes: %q", m.Notes)
	}
}

func TestCheckFilePattern(t *testing.T) {
	for _, p := range []string{"/etc/ssh/sshd_config", "/usr/local/bin/*", "/opt/app-1.2/lib/[a-c]?.so", "/srv/x+y@z%20,k=v~:w"} {
		if err := CheckFilePattern(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "etc/passwd", "/etc/$(id)", "/a b", "/a;b", "/a'b", "/a\"b", "/a`b`", "/a\nb", "/a|b", "/a&b", "/a{b,c}", "/a\\b", "/" + strings.Repeat("a", 4096)} {
		if err := CheckFilePattern(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	if _, err := Collect(t.Context(), execRunner{}, Options{Files: make([]string, MaxFilePatterns+1)}); err == nil {
		t.Error("too many patterns accepted")
	}
	long := make([]string, 20)
	for i := range long {
		long[i] = "/" + strings.Repeat("a", 4000)
	}
	if _, err := Collect(t.Context(), execRunner{}, Options{Files: long}); err == nil || !strings.Contains(err.Error(), "add up to") {
		t.Errorf("80 KB of patterns: %v", err)
	}
}

func TestCheckIgnorePattern(t *testing.T) {
	for _, p := range []string{"linux-image-*", "cloud-init", "@kernel", "lib?-dev", "[a-z]*"} {
		if err := CheckIgnorePattern(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	for _, p := range []string{"", "[a-", strings.Repeat("x", 257)} {
		if err := CheckIgnorePattern(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}

func TestQuoteSnippet(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                       `"plain"`,
		"tab\there\n":                 `"tab\there\n"`,
		"bad\xff":                     `"bad\xff"`,
		"é":                           `"\u00e9"`,
		strings.Repeat("é", 50):       `"` + strings.Repeat(`\u00e9`, 40) + `"...`,
		strings.Repeat("a", 79) + "é": `"` + strings.Repeat("a", 79) + `"...`,
	} {
		if got := quoteSnippet(in); got != want {
			t.Errorf("quoteSnippet(%q) = %s, want %s", in, got, want)
		}
	}
}
