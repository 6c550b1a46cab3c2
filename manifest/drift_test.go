package manifest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func debian(kernel string, pkgs ...string) *Manifest {
	m := &Manifest{OS: OS{ID: "debian", VersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)"}, Kernel: kernel, Arch: "x86_64"}
	for _, p := range pkgs {
		f := strings.Split(p, " ")
		arch := "amd64"
		if len(f) == 3 {
			arch = f[2]
		}
		m.Packages = append(m.Packages, Package{Deb, f[0], f[1], arch})
	}
	m.Sort()
	return m
}

var basePkgs = []string{"bash 5.2.15-2+b7", "coreutils 9.1-1", "tzdata 2024a-0+deb12u1 all", "libc6 2.36-9+deb12u7", "libc6 2.36-9+deb12u7 i386"}

func TestAcrossCloudsIdentical(t *testing.T) {
	ms := []CloudManifest{
		{"sierra-openstack", debian("6.1.0-25-cloud-amd64", basePkgs...)},
		{"ec2-us-east-1", debian("6.1.0-25-cloud-amd64", basePkgs...)},
		{"hotel-openstack", debian("6.1.0-25-cloud-amd64", basePkgs...)},
	}
	d, err := AcrossClouds(ms, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Identical || d.Packages != 5 || len(d.Differences) != 0 || len(d.System) != 0 {
		t.Fatalf("%+v", d)
	}
	if got, want := d.Markdown(RenderOptions{}), "Identical on all 3 clouds (5 packages).\n"; got != want {
		t.Errorf("Markdown = %q, want %q", got, want)
	}
	if !slices.Equal(d.Clouds, []string{"ec2-us-east-1", "hotel-openstack", "sierra-openstack"}) {
		t.Errorf("clouds %q", d.Clouds)
	}
}

// driftFixture: three clouds of one build that drifted apart.
func driftFixture() []CloudManifest {
	a := debian("6.1.0-25-cloud-amd64", append(slices.Clone(basePkgs), "openssl 3.0.15-1~deb12u1", "cloud-init 22.4.2-1", "linux-image-6.1.0-25-cloud-amd64 6.1.106-3", "ec2-tools 1.0-1")...)
	b := debian("6.1.0-26-cloud-amd64", append(slices.Clone(basePkgs), "openssl 3.0.14-1~deb12u2", "cloud-init 23.1-1", "linux-image-6.1.0-26-cloud-amd64 6.1.112-1")...)
	c := debian("6.1.0-26-cloud-amd64", append(slices.Clone(basePkgs), "openssl 3.0.14-1~deb12u2", "cloud-init 22.4.2-1", "linux-image-6.1.0-26-cloud-amd64 6.1.112-1", "weird 1.0")...)
	c.Packages = slices.DeleteFunc(c.Packages, func(p Package) bool { return p.Name == "libc6" && p.Arch == "i386" })
	c.Partial = true
	return []CloudManifest{{"ec2-us-east-1", a}, {"hotel-openstack", b}, {"sierra-openstack", c}, {"nimbus", nil}}
}

func TestAcrossCloudsDrift(t *testing.T) {
	d, err := AcrossClouds(driftFixture(), DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Identical {
		t.Fatal("identical")
	}
	byName := map[string]PackageDiff{}
	for _, p := range d.Differences {
		byName[pkgLabel(p.Name, p.Arch)] = p
	}
	openssl := byName["openssl"]
	if !reflect.DeepEqual(openssl.Newest, []string{"ec2-us-east-1"}) || openssl.Missing != nil || openssl.Versions["hotel-openstack"] != "3.0.14-1~deb12u2" {
		t.Errorf("openssl: %+v", openssl)
	}
	if ci := byName["cloud-init"]; !reflect.DeepEqual(ci.Newest, []string{"hotel-openstack"}) {
		t.Errorf("cloud-init: %+v", ci)
	}
	if l := byName["libc6:i386"]; !reflect.DeepEqual(l.Missing, []string{"sierra-openstack"}) || l.Newest != nil {
		t.Errorf("libc6:i386: %+v", l)
	}
	if _, ok := byName["libc6"]; ok {
		t.Error("the native libc6 is the same everywhere")
	}
	if !reflect.DeepEqual(d.System, []SystemDiff{{FieldKernel, map[string]string{"ec2-us-east-1": "6.1.0-25-cloud-amd64", "hotel-openstack": "6.1.0-26-cloud-amd64", "sierra-openstack": "6.1.0-26-cloud-amd64"}}}) {
		t.Errorf("system: %+v", d.System)
	}
	if !slices.Equal(d.Partial, []string{"sierra-openstack"}) || !slices.Equal(d.NoManifest, []string{"nimbus"}) {
		t.Errorf("partial %q, no manifest %q", d.Partial, d.NoManifest)
	}
	golden(t, "drift-clouds.md", []byte(d.Markdown(RenderOptions{MoreURL: "https://imagegen.example.org/builds/b-42"})))
	golden(t, "drift-clouds.txt", []byte(d.Text(RenderOptions{})))
	checkMarkdownTables(t, d.Markdown(RenderOptions{}))

	// Ignoring the kernel packages, cloud-init and the kernel leaves what the user's script decides.
	d, err = AcrossClouds(driftFixture(), DriftOptions{Ignore: []string{"linux-image-*", "cloud-init", "@kernel"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range d.Differences {
		names = append(names, pkgLabel(p.Name, p.Arch))
	}
	if !slices.Equal(names, []string{"ec2-tools", "libc6:i386", "openssl", "weird"}) || d.System != nil || d.Ignored != 2 {
		t.Errorf("with ignores: %q, system %+v, ignored %d", names, d.System, d.Ignored)
	}
}

func TestAcrossCloudsErrors(t *testing.T) {
	m := debian("k", basePkgs...)
	if _, err := AcrossClouds([]CloudManifest{{"a", m}, {"a", m}}, DriftOptions{}); err == nil {
		t.Error("a cloud given twice was accepted")
	}
	if _, err := AcrossClouds([]CloudManifest{{"a", m}}, DriftOptions{Ignore: []string{"[x"}}); err == nil {
		t.Error("a bad pattern was accepted")
	}
	d, err := AcrossClouds([]CloudManifest{{"a", m}, {"b", nil}}, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Markdown(RenderOptions{}); !strings.HasPrefix(got, "Only one cloud has a manifest (5 packages): nothing to compare.") {
		t.Errorf("one cloud: %q", got)
	}
	d, _ = AcrossClouds(nil, DriftOptions{})
	if got := d.Markdown(RenderOptions{}); got != "No manifests to compare.\n" {
		t.Errorf("none: %q", got)
	}
	if b, _ := json.Marshal(d); string(b) != `{"clouds":[],"identical":true,"packages":0}` {
		t.Errorf("JSON of nothing: %s", b)
	}
}

// TestAcrossCloudsArch: the same image on an amd64 and an arm64 cloud
// compares package by package; the architecture is a system difference.
func TestAcrossCloudsArch(t *testing.T) {
	a := debian("6.1", "bash 5.2-1 amd64", "tzdata 2024a all", "libc6 2.36 amd64")
	b := debian("6.1", "bash 5.2-1 arm64", "tzdata 2024a all", "libc6 2.36 arm64")
	b.Arch = "aarch64"
	d, err := AcrossClouds([]CloudManifest{{"x86", a}, {"arm", b}}, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Differences) != 0 || len(d.System) != 1 || d.System[0].Field != FieldArch {
		t.Errorf("%+v", d)
	}
}

func TestOverTime(t *testing.T) {
	prev := debian("6.1.0-25", "bash 5.2.15-2+b7", "openssl 3.0.14-1~deb12u2", "curl 7.88.1-10+deb12u7", "gone 1.0-1", "odd 1.0-1", "linux-image-amd64 6.1.106-3")
	cur := debian("6.1.0-26", "bash 5.2.15-2+b7", "openssl 3.0.15-1~deb12u1", "curl 7.88.1-10+deb12u5", "dstat 0.7.4-6.1", "odd not-a-version", "linux-image-amd64 6.1.112-1")
	rpmPrev := &Manifest{Packages: []Package{{RPM, "kernel-core", "5.14.0-427.13.1.el9_4", "x86_64"}, {RPM, "kernel-core", "5.14.0-427.20.1.el9_4", "x86_64"}}}
	rpmCur := &Manifest{Packages: []Package{{RPM, "kernel-core", "5.14.0-427.20.1.el9_4", "x86_64"}, {RPM, "kernel-core", "5.14.0-427.22.1.el9_4", "x86_64"}}}
	prev.Packages = append(prev.Packages, rpmPrev.Packages...)
	cur.Packages = append(cur.Packages, rpmCur.Packages...)
	prev.Sort()
	cur.Sort()

	c, err := OverTime(prev, cur, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ch := range c.Changes {
		got = append(got, fmt.Sprintf("%s %s %s>%s", ch.Kind, ch.Name, ch.From, ch.To))
	}
	want := []string{
		"added dstat >0.7.4-6.1",
		"added kernel-core >5.14.0-427.22.1.el9_4",
		"removed gone 1.0-1>",
		"removed kernel-core 5.14.0-427.13.1.el9_4>",
		"upgraded linux-image-amd64 6.1.106-3>6.1.112-1",
		"upgraded openssl 3.0.14-1~deb12u2>3.0.15-1~deb12u1",
		"downgraded curl 7.88.1-10+deb12u7>7.88.1-10+deb12u5",
		"changed odd 1.0-1>not-a-version",
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n got %q\nwant %q", got, want)
	}
	if c.Added != 2 || c.Removed != 2 || c.Upgraded != 2 || c.Downgraded != 1 || c.Changed != 1 || c.Identical {
		t.Errorf("counts %+v", c)
	}
	golden(t, "changes.md", []byte(c.Markdown(RenderOptions{})))
	golden(t, "changes.txt", []byte(c.Text(RenderOptions{})))
	checkMarkdownTables(t, c.Markdown(RenderOptions{}))

	// "A second build after the script installs one more package: over time shows it added."
	one := debian("6.1", basePkgs...)
	more := debian("6.1", append(slices.Clone(basePkgs), "dstat 0.7.4-6.1 all")...)
	c, err = OverTime(one, more, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Changes) != 1 || c.Changes[0] != (PackageChange{Added, Deb, "dstat", "", "", "0.7.4-6.1"}) || c.Packages != 6 {
		t.Errorf("%+v", c)
	}
	c, _ = OverTime(one, one, DriftOptions{})
	if !c.Identical || c.Markdown(RenderOptions{}) != "No changes since the previous image (5 packages).\n" {
		t.Errorf("identical: %+v", c)
	}
	if _, err := OverTime(nil, one, DriftOptions{}); err == nil {
		t.Error("a nil manifest was accepted")
	}
}

func TestMarkdownTruncates(t *testing.T) {
	a, b := &Manifest{}, &Manifest{}
	for i := range 60 {
		a.Packages = append(a.Packages, Package{Deb, fmt.Sprintf("p%02d", i), "1.0", "amd64"})
		b.Packages = append(b.Packages, Package{Deb, fmt.Sprintf("p%02d", i), "2.0", "amd64"})
	}
	d, err := AcrossClouds([]CloudManifest{{"a", a}, {"b", b}}, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md := d.Markdown(RenderOptions{MoreURL: "https://x.example/builds/1"})
	if n := strings.Count(md, "\n| `p"); n != 50 {
		t.Errorf("%d rows, want 50", n)
	}
	if !strings.HasSuffix(md, "\n…and 10 more ([see them all](https://x.example/builds/1)).\n") {
		t.Errorf("no 'and 10 more' line:\n%s", md)
	}
	if md := d.Markdown(RenderOptions{MoreURL: "javascript:alert(1)"}); !strings.HasSuffix(md, "…and 10 more.\n") {
		t.Errorf("a javascript: link was kept:\n%s", md[len(md)-80:])
	}
	if txt := d.Text(RenderOptions{}); strings.Count(txt, "\np") != 60 {
		t.Errorf("text does not list all 60:\n%s", txt)
	}
	c, _ := OverTime(a, b, DriftOptions{})
	if md := c.Markdown(RenderOptions{MaxRows: 5}); strings.Count(md, "\n| `p") != 5 || !strings.HasSuffix(md, "…and 55 more.\n") {
		t.Errorf("changes, 5 rows:\n%s", md)
	}
}

// hostileManifests: what a user's script can make a machine say, as a
// decoded or simulated manifest holds it (the collector would have dropped
// most of it; the renderers must not depend on that).
func hostileManifests() []CloudManifest {
	names := []string{
		"pipe|name", "back`tick`", "``double``", "<script>alert(1)</script>", "new\nline\r\n| x | y |",
		"[link](https://evil.example)", "@octocat", "#1", "*emph* _em_ ~~s~~", `back\|slash`, `trailing\`,
		"\x1b[2J\x1b[31mred", "bidi\u202egnp.exe", "zero\u200bwidth", "bad\xffutf8", "`", " space ", "&lt;entity&gt;",
		"https://evil.example/x", "www.evil.example", strings.Repeat("long", 100),
	}
	a, b := &Manifest{Kernel: "k|1"}, &Manifest{Kernel: "<b>k2</b>"}
	for i, n := range names {
		a.Packages = append(a.Packages, Package{Deb, n, fmt.Sprintf("1.%d|<i>", i), "amd64"})
		b.Packages = append(b.Packages, Package{Deb, n, "2.0`x`\n", "amd64"})
	}
	return []CloudManifest{{"cloud|a", a}, {"<img src=x>", b}}
}

// TestRenderHostile: every value from a machine is escaped in Markdown
// (one cell per column, HTML, links, mentions and newlines inert) and made
// visible in text (no control characters reach a terminal).
func TestRenderHostile(t *testing.T) {
	d, err := AcrossClouds(hostileManifests(), DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	md := d.Markdown(RenderOptions{})
	checkMarkdownTables(t, md)
	golden(t, "drift-hostile.md", []byte(md))

	c, err := OverTime(hostileManifests()[0].Manifest, hostileManifests()[1].Manifest, DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkMarkdownTables(t, c.Markdown(RenderOptions{}))

	for _, txt := range []string{d.Text(RenderOptions{}), c.Text(RenderOptions{})} {
		for _, r := range txt {
			if r < 0x20 && r != '\n' || r == 0x7f || r == 0x202e || r == 0x200b || r == '\uFFFD' {
				t.Errorf("text output holds %U:\n%s", r, txt)
				break
			}
		}
	}
	// The headline, a blank line, the system header and row, a blank line,
	// the package header and one line a package: no value broke a line.
	if n := strings.Count(d.Text(RenderOptions{}), "\n"); n != 6+len(hostileManifests()[0].Manifest.Packages) {
		t.Errorf("a value broke a text line (%d lines):\n%s", n, d.Text(RenderOptions{}))
	}

	// JSON: no markup, HTML escaped by encoding/json.
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(string(b), "<>") {
		t.Errorf("raw < or > in the JSON: %s", b)
	}
}

// checkMarkdownTables splits every table row the way GFM does (an escaped
// character, then | between cells) and checks that each row has the header's
// cell count and each cell is a constant, a dash, or one closed code span.
func checkMarkdownTables(t *testing.T, md string) {
	t.Helper()
	cols := 0
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			cols = 0
			continue
		}
		cells := gfmCells(line)
		if cols == 0 {
			cols = len(cells)
		}
		if len(cells) != cols {
			t.Errorf("row has %d cells, the table %d: %q", len(cells), cols, line)
			continue
		}
		for _, cell := range cells {
			checkCell(t, cell, line)
		}
	}
}

func gfmCells(line string) []string {
	var cells []string
	var cur strings.Builder
	body := strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	for i := 0; i < len(body); i++ {
		switch {
		case body[i] == '\\' && i+1 < len(body):
			cur.WriteByte(body[i])
			cur.WriteByte(body[i+1])
			i++
		case body[i] == '|':
			cells = append(cells, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(body[i])
		}
	}
	return append(cells, cur.String())
}

func checkCell(t *testing.T, cell, line string) {
	t.Helper()
	c := strings.TrimSpace(cell)
	if c == "" || c == "—" || strings.Trim(c, "-") == "" {
		return
	}
	if c[0] != '`' {
		// Not a code span: only our own words may be here.
		for _, r := range c {
			if !isAlnum(byte(r)) && r != ' ' && r != ',' || r > 0x7f {
				t.Errorf("cell %q is neither a code span nor plain words (row %q)", c, line)
				return
			}
		}
		return
	}
	// Several code spans separated by ", " (the Newest column).
	for _, span := range splitSpans(t, c, line) {
		n := len(span) - len(strings.TrimLeft(span, "`"))
		if len(span) < 2*n || strings.Repeat("`", n) != span[len(span)-n:] {
			t.Errorf("unclosed code span %q (row %q)", span, line)
			continue
		}
		inner := span[n : len(span)-n]
		for _, run := range strings.FieldsFunc(inner, func(r rune) bool { return r != '`' }) {
			if len(run) == n {
				t.Errorf("code span %q closes early (row %q)", span, line)
			}
		}
		if strings.ContainsAny(inner, "\n\r") {
			t.Errorf("newline in %q", span)
		}
	}
}

func splitSpans(t *testing.T, c, line string) []string {
	var spans []string
	for c != "" {
		n := len(c) - len(strings.TrimLeft(c, "`"))
		if n == 0 {
			t.Errorf("text between code spans in %q (row %q)", c, line)
			return spans
		}
		fence := strings.Repeat("`", n)
		end := -1
		for i := n; i+n <= len(c); i++ {
			if c[i:i+n] == fence && (i+n == len(c) || c[i+n] != '`') && c[i-1] != '`' {
				end = i + n
				break
			}
		}
		if end < 0 {
			spans = append(spans, c)
			return spans
		}
		spans = append(spans, c[:end])
		c = strings.TrimPrefix(c[end:], ", ")
	}
	return spans
}
