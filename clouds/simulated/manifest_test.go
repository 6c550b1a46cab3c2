package simulated_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/manifest"
)

func TestManifestFromConfig(t *testing.T) {
	ctx := context.Background()
	doc, err := manifest.Encode(&manifest.Manifest{
		OS:       manifest.OS{ID: "alpine", VersionID: "3.20.3"},
		Packages: []manifest.Package{{Manager: manifest.APK, Name: "musl", Version: "1.2.5-r0", Arch: "x86_64"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "m.cdx.json")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}

	// Inline: the OS, kernel, arch and packages become a CycloneDX document.
	op, err := simulated.Configure(simConfig(t, "type: simulated\nmanifest:\n  os: {id: debian, version_id: 12, pretty_name: Debian 12}\n"+
		"  kernel: 6.1.0-26-cloud-amd64\n  arch: x86_64\n  packages: [bash=5.2.15-2+b7, 'libc6:i386=2.36-9+deb12u7']\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := simulated.CloudOf(op).Manifest(ctx, &clouds.Instance{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	want := []manifest.Package{
		{Manager: manifest.Deb, Name: "bash", Version: "5.2.15-2+b7"},
		{Manager: manifest.Deb, Name: "libc6", Version: "2.36-9+deb12u7", Arch: "i386"},
	}
	if m.OS != (manifest.OS{ID: "debian", VersionID: "12", PrettyName: "Debian 12"}) || m.Kernel != "6.1.0-26-cloud-amd64" || m.Arch != "x86_64" ||
		len(m.Packages) != 2 || m.Packages[0] != want[0] || m.Packages[1] != want[1] || m.Collected.IsZero() {
		t.Errorf("manifest %+v", m)
	}

	// A file is read at each call: a change between builds shows.
	op, err = simulated.Configure(simConfig(t, "type: simulated\nmanifest: {file: "+file+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cl := simulated.CloudOf(op)
	if got, err := cl.Manifest(ctx, &clouds.Instance{}); err != nil || string(got) != string(doc) {
		t.Fatalf("file manifest: %v\n%s", err, got)
	}
	if err := os.WriteFile(file, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Manifest(ctx, &clouds.Instance{}); err == nil || !strings.Contains(err.Error(), "manifest.file "+file) {
		t.Errorf("a broken file: %v", err)
	}

	// None configured: ErrNoManifest, which the pipeline takes quietly.
	if _, err := simulated.New(simulated.Options{}).Manifest(ctx, &clouds.Instance{}); !errors.Is(err, clouds.ErrNoManifest) {
		t.Errorf("no manifest: %v", err)
	}
}

func TestManifestConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.json")
	tests := []struct{ name, src, want string }{
		{"both", "manifest: {file: /x, kernel: k}", "give either file or the inline keys"},
		{"bad package", "manifest: {packages: [bash]}", `manifest.packages: "bash" is not name=version`},
		{"empty version", "manifest: {packages: ['bash=']}", `"bash=" is not name=version`},
		{"bad manager", "manifest: {manager: pip}", `manifest.manager "pip" is not deb, rpm or apk`},
		{"unknown key", "manifest: {pakages: []}", `unknown key "pakages" in manifest`},
		{"unknown os key", "manifest: {os: {name: x}}", `unknown key "name" in manifest.os`},
		{"missing file", "manifest: {file: " + missing + "}", "manifest.file: stat " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := simulated.Configure(simConfig(t, "type: simulated\n"+tt.src+"\n"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v; want %q", err, tt.want)
			}
		})
	}
}
