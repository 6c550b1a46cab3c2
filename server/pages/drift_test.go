package pages_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// withManifest stores m as cloud's manifest of build id and records it.
func (e *env) withManifest(id, cloud string, m *manifest.Manifest) {
	e.t.Helper()
	doc, err := manifest.Encode(m)
	if err != nil {
		e.t.Fatal(err)
	}
	gz, _ := manifest.Compress(doc)
	if err := e.store.SaveManifest(context.Background(), id, cloud, gz); err != nil {
		e.t.Fatal(err)
	}
	e.update(id, cloud, func(c *builds.CloudRecord) {
		c.ManifestSHA256, c.ManifestPackages, c.ManifestPartial = manifest.SHA256(doc), len(m.Packages), m.Partial
	})
}

func debian(kernel string, pkgs ...string) *manifest.Manifest {
	m := &manifest.Manifest{OS: manifest.OS{ID: "debian", VersionID: "12"}, Kernel: kernel, Arch: "x86_64"}
	for _, p := range pkgs {
		n, v, _ := strings.Cut(p, "=")
		m.Packages = append(m.Packages, manifest.Package{Manager: manifest.Deb, Name: n, Version: v, Arch: "amd64"})
	}
	return m
}

// TestBuildPageDrift: the build page shows exactly the clouds' differences
// (golden file), what changed since each cloud's previous image, links to
// each manifest, and every value a machine reported escaped for HTML and
// made visible (no raw <script>, no bidirectional override).
func TestBuildPageDrift(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Recent: the lineage keeps build.retention.
	t0 := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Minute)
	ok := func() map[string]*builds.CloudRecord {
		return map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}, "sim-b": {State: builder.StateRunning}}
	}
	prev := e.record(rec{id: "prev0123456789ab", created: t0, clouds: ok()})
	e.succeed(prev, "sim-a", "ami-1", "dstat-1", t0.Add(time.Minute))
	e.succeed(prev, "sim-b", "ami-2", "dstat-2", t0.Add(time.Minute))
	e.withManifest(prev.ID, "sim-a", debian("6.1.0-26-cloud-amd64", "bash=5.2.15-2+b7", "openssl=3.0.14-1~deb12u2"))

	b := e.record(rec{id: "0123456789abcdef", created: t0.Add(time.Hour), clouds: ok()})
	e.succeed(b, "sim-a", "ami-3", "dstat-3", t0.Add(time.Hour+time.Minute))
	e.succeed(b, "sim-b", "ami-4", "dstat-4", t0.Add(time.Hour+time.Minute))
	e.withManifest(b.ID, "sim-a", debian("6.1.0-26-cloud-amd64", "bash=5.2.15-2+b7", "openssl=3.0.15-1~deb12u1", "dstat=0.7.4-6.1"))
	e.withManifest(b.ID, "sim-b", debian("6.1|<script>alert(1)</script>`x`\u202e", "bash=5.2.15-2+b7", "openssl=3.0.14-1~deb12u2"))

	r := e.get("/builds/" + b.ID)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	start, end := strings.Index(r.body, `<h2 id="drift">`), strings.Index(r.body, `<h2 id="rerun">`)
	if start < 0 || end < start {
		t.Fatalf("no Drift section:\n%s", r.body)
	}
	got := r.body[start:end]
	golden := filepath.Join("testdata", "golden", "build-drift.html")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run Drift -update)", err)
	}
	if got != string(want) {
		t.Errorf("the Drift section differs from %s:\n%s", golden, got)
	}
	mustNotContain(t, "build page", r.body, "<script>", "\u202e")
	mustContain(t, "build page", got, "&lt;script&gt;", `\u{202E}`,
		`<a href="/builds/0123456789abcdef/manifests/sim-a">sim-a</a>`, `<a href="/builds/prev0123456789ab">`)

	// The linked manifest opens for whoever sees the page, and no one else.
	m := e.get("/builds/" + b.ID + "/manifests/sim-b")
	if m.code != 200 || m.header.Get("Content-Type") != manifest.MediaType || !strings.Contains(m.body, `\u003cscript\u003e`) || strings.Contains(m.body, "<script>") {
		t.Errorf("manifest page: %d %v\n%.300s", m.code, m.header, m.body)
	}
	if m := e.get("/builds/" + b.ID + "/manifests/nope"); m.code != 404 || !strings.Contains(m.body, `Build 0123456789abcdef has no manifest from cloud &#34;nope&#34;.`) {
		t.Errorf("a cloud without a manifest: %d\n%s", m.code, m.body)
	}
	if m := e.do(nil, "GET", "/builds/"+b.ID+"/manifests/sim-a", nil); m.code != 401 {
		t.Errorf("without a token or a link: %d", m.code)
	}

	// A build without manifests has no Drift section.
	plain := e.record(rec{id: "plain0123456789a", created: t0, clouds: ok()})
	if r := e.get("/builds/" + plain.ID); strings.Contains(r.body, `id="drift"`) {
		t.Error("a build without manifests shows a Drift section")
	}
}
