package manifest

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var (
	schemaOnce sync.Once
	schema     *jsonschema.Schema
	schemaErr  error
)

// validateSchema checks doc against the vendored CycloneDX 1.6 JSON schema,
// formats asserted. The schemas are added under their $id URLs: nothing is
// fetched.
func validateSchema(t *testing.T, doc []byte) {
	t.Helper()
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		for _, name := range []string{"bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json"} {
			f, err := os.Open(filepath.Join("testdata", "schema", name))
			if err != nil {
				schemaErr = err
				return
			}
			v, err := jsonschema.UnmarshalJSON(f)
			f.Close()
			if err != nil {
				schemaErr = fmt.Errorf("%s: %w", name, err)
				return
			}
			if err := c.AddResource("http://cyclonedx.org/schema/"+name, v); err != nil {
				schemaErr = err
				return
			}
		}
		schema, schemaErr = c.Compile("http://cyclonedx.org/schema/bom-1.6.schema.json")
	})
	if schemaErr != nil {
		t.Fatalf("compiling the CycloneDX schema: %v", schemaErr)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("the document is not JSON: %v", err)
	}
	if err := schema.Validate(v); err != nil {
		t.Fatalf("the document does not validate against CycloneDX 1.6: %v", err)
	}
}

// exampleManifest is a small manifest with a bit of everything.
func exampleManifest() *Manifest {
	return &Manifest{
		OS:     OS{ID: "debian", VersionID: "12", PrettyName: "Debian GNU/Linux 12 (bookworm)"},
		Kernel: "6.1.0-25-cloud-amd64",
		Arch:   "x86_64",
		Packages: []Package{
			{Deb, "openssl", "3.0.15-1~deb12u1", "amd64"},
			{Deb, "bsdutils", "1:2.38.1-5+deb12u3", "amd64"},
			{Deb, "libc6", "2.36-9+deb12u7", "i386"},
			{Deb, "tzdata", "2024a-0+deb12u1", "all"},
		},
		Files: []File{
			{"/usr/local/bin/tool", strings.Repeat("ab", 32)},
			{"/etc/ssh/sshd_config", strings.Repeat("0f", 32)},
		},
		Partial: true,
		Notes:   []string{"hashing files: 1 file could not be read"},
		Provenance: Provenance{
			Repo: "fg/images", Commit: "0123456789abcdef0123456789abcdef01234567", Generator: "dstat",
			ScriptSHA256: strings.Repeat("cd", 32), BaseImage: "ami-0123456789abcdef0", Cloud: "ec2-us-east-1",
			Build: "b-42", ImagegenVersion: "v1.4.0",
		},
		Collected: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestPURL(t *testing.T) {
	deb12 := OS{ID: "debian", VersionID: "12"}
	tests := []struct {
		p    Package
		os   OS
		want string
	}{
		{Package{Deb, "openssl", "3.0.15-1~deb12u1", "amd64"}, deb12, "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64&distro=debian-12"},
		{Package{Deb, "bsdutils", "1:2.38.1-5+deb12u3", "amd64"}, deb12, "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12"},
		{Package{Deb, "tzdata", "2024a-0ubuntu0.22.04", "all"}, OS{ID: "ubuntu", VersionID: "22.04"}, "pkg:deb/ubuntu/tzdata@2024a-0ubuntu0.22.04?arch=all&distro=ubuntu-22.04"},
		{Package{RPM, "openssl-libs", "1:3.0.7-27.el9", "x86_64"}, OS{ID: "rhel", VersionID: "9.4"}, "pkg:rpm/rhel/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rhel-9.4&epoch=1"},
		{Package{RPM, "gpg-pubkey", "fd431d51-4ae0493b", ""}, OS{ID: "fedora", VersionID: "40"}, "pkg:rpm/fedora/gpg-pubkey@fd431d51-4ae0493b?distro=fedora-40"},
		{Package{APK, "musl", "1.2.5-r0", "x86_64"}, OS{ID: "alpine", VersionID: "3.20.3"}, "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3"},
		{Package{Deb, "sid-thing", "1.0", "amd64"}, OS{ID: "debian"}, "pkg:deb/debian/sid-thing@1.0?arch=amd64&distro=debian"},
		{Package{Deb, "x", "1.0", ""}, OS{}, "pkg:deb/x@1.0"},
	}
	for _, tt := range tests {
		if got := PURL(tt.p, tt.os); got != tt.want {
			t.Errorf("PURL(%v, %v) = %s, want %s", tt.p, tt.os, got, tt.want)
		}
	}
}

// TestEncodeGolden: the document format, by example (testdata/example.cdx.json,
// -update rewrites it), valid against the schema.
func TestEncodeGolden(t *testing.T) {
	doc, err := Encode(exampleManifest())
	if err != nil {
		t.Fatal(err)
	}
	validateSchema(t, doc)
	golden(t, "example.cdx.json", doc)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it); got:\n%s", path, got)
	}
}

// TestEncodeDeterministic: the same manifest, however its slices are
// ordered, gives the same bytes and the same digest; Encode does not touch m.
func TestEncodeDeterministic(t *testing.T) {
	m := bigManifest(3000, 1)
	a, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	shuffled := m.Clone()
	rand.Shuffle(len(shuffled.Packages), func(i, j int) {
		shuffled.Packages[i], shuffled.Packages[j] = shuffled.Packages[j], shuffled.Packages[i]
	})
	before := slices.Clone(shuffled.Packages)
	b, err := Encode(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || SHA256(a) != SHA256(b) {
		t.Error("the same manifest encoded twice differs")
	}
	if !slices.Equal(before, shuffled.Packages) {
		t.Error("Encode reordered its argument")
	}
	if len(SHA256(a)) != 64 {
		t.Errorf("SHA256 = %q", SHA256(a))
	}
	validateSchema(t, a)
}

func TestRoundTrip(t *testing.T) {
	for _, m := range []*Manifest{exampleManifest(), bigManifest(500, 2), {Packages: []Package{}}} {
		doc, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		validateSchema(t, doc)
		z, err := Compress(doc)
		if err != nil {
			t.Fatal(err)
		}
		z2, _ := Compress(doc)
		if !bytes.Equal(z, z2) {
			t.Error("Compress is not deterministic")
		}
		unz, err := Decompress(z)
		if err != nil || !bytes.Equal(unz, doc) {
			t.Fatalf("Decompress: %v", err)
		}
		got, err := Decode(unz)
		if err != nil {
			t.Fatal(err)
		}
		want := m.Clone()
		want.Sort()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
		t.Logf("%d packages: %d bytes, %d gzipped", len(m.Packages), len(doc), len(z))
	}
}

// TestDecodeForeign reads documents other tools write: purls with
// qualifiers this package does not write, components of other ecosystems,
// the legacy tools array.
func TestDecodeForeign(t *testing.T) {
	doc := `{
  "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
  "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
  "metadata": {"timestamp": "2024-10-01T12:00:00Z", "tools": [{"vendor": "anchore", "name": "syft", "version": "1.14.0"}],
    "component": {"type": "container", "name": "debian:12"}},
  "components": [
    {"type": "library", "name": "openssl", "version": "3.0.15-1~deb12u1", "purl": "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64&upstream=openssl&distro=debian-12"},
    {"type": "library", "name": "bash", "version": "5.2.15-2+b7", "purl": "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12",
      "properties": [{"name": "syft:package:type", "value": "deb"}], "components": [{"type": "file", "name": "/bin/bash"}]},
    {"type": "library", "name": "NetworkManager", "version": "1.46.0-8.el9", "purl": "pkg:rpm/redhat/NetworkManager@1.46.0-8.el9?arch=x86_64&epoch=1"},
    {"type": "library", "name": "lodash", "version": "4.17.21", "purl": "pkg:npm/lodash@4.17.21"},
    {"type": "library", "name": "<img src=x>", "version": "1", "purl": "pkg:deb/debian/%3Cimg%20src%3Dx%3E@1"},
    {"type": "library", "name": "nopurl"},
    {"type": "file", "name": "/etc/passwd", "hashes": [{"alg": "SHA-1", "content": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}]}
  ],
  "dependencies": [{"ref": "a", "dependsOn": ["b", "c"]}]
}`
	m, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{
		{Deb, "bash", "5.2.15-2+b7", "amd64"},
		{Deb, "openssl", "3.0.15-1~deb12u1", "amd64"},
		{RPM, "NetworkManager", "1:1.46.0-8.el9", "x86_64"},
	}
	if !slices.Equal(m.Packages, want) {
		t.Errorf("packages:\n got %v\nwant %v", m.Packages, want)
	}
	if !m.Partial || len(m.Notes) != 2 || !strings.Contains(m.Notes[0], "dropped 1 component") || !strings.Contains(m.Notes[1], "3 components are neither") {
		t.Errorf("partial %v, notes %q", m.Partial, m.Notes)
	}
	if !m.Collected.Equal(time.Date(2024, 10, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("collected %v", m.Collected)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, doc := range []string{
		``, `null`, `[]`, `{"bomFormat": "SPDX"}`, `{"bomFormat": "CycloneDX"} {}`,
		`{"bomFormat": "CycloneDX", "components": {}}`, `{"bomFormat": "CycloneDX", "components": [1]}`,
		`{"bomFormat": "CycloneDX", "components": [`, `{"bomFormat": "CycloneDX", "metadata": 7}`,
	} {
		if m, err := Decode([]byte(doc)); err == nil {
			t.Errorf("Decode(%q) = %+v, want an error", doc, m)
		}
	}
	if _, err := Decode(make([]byte, MaxDocument+1)); err == nil {
		t.Error("a document over MaxDocument was read")
	}
}

// TestDecodeBounded: a document with more components than the cap keeps
// the cap's worth, reading them one at a time.
func TestDecodeBounded(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`{"bomFormat":"CycloneDX","specVersion":"1.6","components":[`)
	n := DefaultMaxPackages + 10
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"library","name":"p%d","purl":"pkg:apk/alpine/p%d@1.%d-r0"}`, i, i, i)
	}
	b.WriteString(`]}`)
	m, err := Decode(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Packages) != DefaultMaxPackages || !m.Partial || !strings.Contains(strings.Join(m.Notes, " "), "10 more were not kept") {
		t.Errorf("%d packages, partial %v, notes %q", len(m.Packages), m.Partial, m.Notes)
	}
}

func TestDecompressBomb(t *testing.T) {
	z, err := Compress(make([]byte, MaxDocument+1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decompress(z); err == nil {
		t.Error("a document over MaxDocument was decompressed")
	}
	if _, err := Decompress([]byte("not gzip")); err == nil {
		t.Error("garbage was decompressed")
	}
}

// TestEncodeHostileStrings: whatever a manifest holds (Decode and the
// simulated cloud can hand over anything), the document is valid JSON that
// decodes back to the same strings, with no raw HTML in it.
func TestEncodeHostileStrings(t *testing.T) {
	m := &Manifest{
		OS:       OS{ID: "<script>", VersionID: "1|2", PrettyName: "a\nb`c`"},
		Kernel:   "\x1b[31mred",
		Packages: []Package{{Deb, "ok", "1.0", "amd64"}},
		Notes:    []string{"</script><img src=x onerror=alert(1)>"},
	}
	doc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(doc, "<>") {
		t.Errorf("raw < or > in the document:\n%s", doc)
	}
	if !json.Valid(doc) {
		t.Fatal("not JSON")
	}
	validateSchema(t, doc)
}
