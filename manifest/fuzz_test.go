package manifest

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imagegen/imagegen/internal/printable"
)

// checkParsed is what any parse must give, whatever the input: packages
// that are packages, within the caps, notes that are printable one-liners,
// and a manifest that encodes, validates as JSON and decodes back to itself.
func checkParsed(t *testing.T, m *Manifest, opts Options) {
	t.Helper()
	if len(m.Packages) > opts.MaxPackages || len(m.Files) > opts.MaxFiles {
		t.Fatalf("%d packages, %d files: over the caps", len(m.Packages), len(m.Files))
	}
	for _, p := range m.Packages {
		if why := checkPackage(p.Name, p.Version, p.Arch); why != "" {
			t.Fatalf("kept %+v: %s", p, why)
		}
	}
	for _, f := range m.Files {
		if !strings.HasPrefix(f.Path, "/") || !utf8.ValidString(f.Path) || len(f.SHA256) != 64 {
			t.Fatalf("kept file %+v", f)
		}
	}
	for _, s := range []string{m.OS.ID, m.OS.VersionID, m.OS.PrettyName, m.Kernel, m.Arch} {
		if !plainText(s) {
			t.Fatalf("kept %q", s)
		}
	}
	for _, n := range m.Notes {
		if !plainText(n) || strings.ContainsAny(n, "\n\t") || len(n) > 1000 {
			t.Fatalf("note %q", n)
		}
	}
	doc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(doc)
	if err != nil {
		t.Fatalf("decoding what Encode wrote: %v", err)
	}
	want := m.Clone()
	want.Sort()
	if !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, want)
	}
}

var fuzzOpts = Options{Files: []string{"/etc/a", "/srv/*"}, MaxPackages: 50, MaxFiles: 5}.withDefaults()

// FuzzParse feeds whole outputs to the parser, markers and all.
func FuzzParse(f *testing.F) {
	f.Add(dpkgOutput(bigManifest(20, 1), testMarker))
	f.Add(output(true, "rpm", "bash\t\t5.1.8\t9.el9\tx86_64\nopenssl\t1\t3.0.7\t27.el9\tx86_64\n", "apk-list", "musl-1.2.5-r0 x86_64 {musl} (MIT) [installed]\n"))
	f.Add(output(true, "files", "F 0 "+strings.Repeat("ab", 32)+" p /etc/a\nN 1\nE 1 notfile x 2f61\n"))
	f.Add(output(false, "os-release", "ID=\"x\\\"y\"\n", "uname", "6.1\nx86_64\nextra\n"))
	f.Add([]byte(testMarker + " begin 1\n" + testMarker + " start dpkg\nii \ta|b\t1\tamd64\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		m, _ := parse(out, testMarker, fuzzOpts)
		checkParsed(t, m, fuzzOpts)
	})
}

var fuzzSections = []string{"dpkg", "rpm", "apk-list", "apk-info", "files", "os-release", "uname"}

// FuzzParseSection feeds one section's body, well framed, so that the
// fuzzer spends its time in the line parsers.
func FuzzParseSection(f *testing.F) {
	f.Add(uint8(0), []byte("ii \tbash\t5.2.15-2+b7\tamd64\nrc \tx\t1\tall\nii \tp|q\t1\tamd64\n"))
	f.Add(uint8(1), []byte("bash\t\t5.1.8\t9.el9\tx86_64\ngpg-pubkey\t(none)\tfd431d51\t4ae0493b\t(none)\n"))
	f.Add(uint8(2), []byte("musl-1.2.5-r0 x86_64 {musl} (MIT) [installed]\nWARNING: x\n"))
	f.Add(uint8(3), []byte("musl-1.2.2-r7\nbusybox-1.33.1-r8\n"))
	f.Add(uint8(4), []byte("F 1 "+strings.Repeat("AB", 32)+" x 2f7372762f6e65770a6c696e65\nL\n"))
	f.Add(uint8(5), []byte("ID='a'\nPRETTY_NAME=\"b \\$ c\"\n"))
	f.Add(uint8(6), []byte("6.1.0\nx86_64\n"))
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		name := fuzzSections[int(kind)%len(fuzzSections)]
		m, st := parse(output(true, name, string(body)), testMarker, fuzzOpts)
		if !st.done && !strings.Contains(string(body), testMarker) {
			t.Fatalf("a body without the marker ended the script early: %q", m.Notes)
		}
		checkParsed(t, m, fuzzOpts)
	})
}

// FuzzDecode: any bytes, as a document. No panic; what decodes encodes
// and decodes back the same.
func FuzzDecode(f *testing.F) {
	doc, _ := Encode(exampleManifest())
	f.Add(doc)
	f.Add([]byte(`{"bomFormat":"CycloneDX","components":[{"type":"library","name":"a","purl":"pkg:rpm/x/a@1-2?epoch=3&arch=x"}]}`))
	f.Add([]byte(`{"bomFormat":"CycloneDX","metadata":{"tools":[{"name":"x"}],"component":{"type":"operating-system","name":"\u0000"}}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := Decode(doc)
		if err != nil {
			return
		}
		checkParsed(t, m, Options{MaxPackages: DefaultMaxPackages, MaxFiles: DefaultMaxFiles})
	})
}

// FuzzCompareAPK: apk's order is an order: reflexive and antisymmetric.
func FuzzCompareAPK(f *testing.F) {
	for _, s := range [][2]string{{"1.2.3-r0", "1.2.3_rc1-r0"}, {"1.0~ab", "1.0-r1"}, {"1.02", "1.1"}, {"", "0"}, {"1.0bc", "1.0"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareAPK(a, a) != 0 {
			t.Fatalf("CompareAPK(%q, itself) != 0", a)
		}
		if x, y := CompareAPK(a, b), CompareAPK(b, a); x != -y {
			t.Fatalf("CompareAPK(%q, %q) = %d, reversed %d", a, b, x, y)
		}
		ValidAPK(a)
	})
}

// FuzzMarkdownCell: any string is one inert table cell in Markdown, and one
// line of visible characters in text.
func FuzzMarkdownCell(f *testing.F) {
	for _, s := range []string{"a|b", "`x`", "``", "a\\|b", "\\", "<script>", "x\ny", " ` ", "\xff", "\u202e", "[a](b)", "a\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		row := "| " + mdCode(s) + " | x |"
		cells := gfmCells(row)
		if s != "" && len(cells) != 2 {
			t.Fatalf("%q made %d cells: %q", s, len(cells), row)
		}
		checkCell(t, cells[0], row)
		v := visible(s)
		if !utf8.ValidString(v) {
			t.Fatalf("visible(%q) = %q is not UTF-8", s, v)
		}
		for _, r := range v {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || printable.Hidden(r) {
				t.Fatalf("visible(%q) = %q holds %U", s, v, r)
			}
		}
	})
}
