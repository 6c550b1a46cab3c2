package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// debianManifest is a Debian machine's manifest with pkgs ("name=version").
func debianManifest(kernel string, pkgs ...string) *manifest.Manifest {
	m := &manifest.Manifest{OS: manifest.OS{ID: "debian", VersionID: "12"}, Kernel: kernel, Arch: "x86_64"}
	for _, p := range pkgs {
		n, v, _ := strings.Cut(p, "=")
		m.Packages = append(m.Packages, manifest.Package{Manager: manifest.Deb, Name: n, Version: v, Arch: "amd64"})
	}
	return m
}

// recordBuild stores a finished build of generator g whose clouds hold the
// given manifests (nil: none), with their images in the lineage.
func (e *testEnv) recordBuild(id string, at time.Time, mans map[string]*manifest.Manifest) {
	e.t.Helper()
	ctx := context.Background()
	b := &builds.Build{ID: id, Repo: "o/r", Commit: "c0ffee", Generator: "g", Created: at, Clouds: map[string]*builds.CloudRecord{}}
	sp := &spec.Spec{Name: "g", Clouds: map[string]spec.CloudSpec{}}
	for cloud := range mans {
		b.Clouds[cloud] = &builds.CloudRecord{Cloud: cloud, State: builder.StateSucceeded, ImageID: id + "-" + cloud, ImageName: "g-" + id, Started: at, Finished: at}
		sp.Clouds[cloud] = spec.CloudSpec{Image: "base"}
	}
	if _, err := e.store.Create(ctx, b, sp); err != nil {
		e.t.Fatal(err)
	}
	for cloud, m := range mans {
		if m == nil {
			if _, err := e.store.UpdateCloud(ctx, id, cloud, func(c *builds.CloudRecord) { c.ManifestError = "the collection timed out" }); err != nil {
				e.t.Fatal(err)
			}
			continue
		}
		doc, err := manifest.Encode(m)
		if err != nil {
			e.t.Fatal(err)
		}
		gz, _ := manifest.Compress(doc)
		if err := e.store.SaveManifest(ctx, id, cloud, gz); err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.store.UpdateCloud(ctx, id, cloud, func(c *builds.CloudRecord) {
			c.ManifestSHA256, c.ManifestPackages, c.ManifestPartial = manifest.SHA256(doc), len(m.Packages), m.Partial
		}); err != nil {
			e.t.Fatal(err)
		}
		if err := e.store.AddImage(ctx, builds.LineageEntry{Build: id, Repo: "o/r", Generator: "g", Cloud: cloud, ImageID: id + "-" + cloud, Created: at}); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *testEnv) getRaw(path string) (int, http.Header, string) {
	e.t.Helper()
	resp := e.authGet(path, apiToken)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestManifestAndDriftRoutes: a cloud's manifest is served as CycloneDX
// JSON, a missing one is a 404 saying why; a build's drift and the drift
// between two builds are JSON, with the machine's strings JSON-escaped.
func TestManifestAndDriftRoutes(t *testing.T) {
	e := newEnv(t, envOptions{noWorker: true})
	t0 := time.Now().UTC().Add(-time.Hour)
	hostileKernel := "6.1|<script>alert(1)</script>`x`"
	e.recordBuild("b1", t0, map[string]*manifest.Manifest{
		"sim-a": debianManifest("6.1.0-26-cloud-amd64", "bash=5.2.15-2+b7", "openssl=3.0.14-1~deb12u2"),
	})
	e.recordBuild("b2", t0.Add(time.Minute), map[string]*manifest.Manifest{
		"sim-a": debianManifest("6.1.0-26-cloud-amd64", "bash=5.2.15-2+b7", "openssl=3.0.15-1~deb12u1", "dstat=0.7.4-6.1"),
		"sim-b": debianManifest(hostileKernel, "bash=5.2.15-2+b7", "openssl=3.0.15-1~deb12u1", "dstat=0.7.4-6.1"),
		"sim-c": nil,
	})

	code, h, body := e.getRaw("/api/v1/builds/b2/manifests/sim-a")
	if code != 200 || h.Get("Content-Type") != "application/vnd.cyclonedx+json" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("manifest: %d %v\n%.300s", code, h, body)
	}
	if m, err := manifest.Decode([]byte(body)); err != nil || len(m.Packages) != 3 || h.Get("ETag") != `"`+manifest.SHA256([]byte(body))+`"` {
		t.Errorf("served manifest: %v, %+v, etag %s", err, m, h.Get("ETag"))
	}
	_, _, hostile := e.getRaw("/api/v1/builds/b2/manifests/sim-b")
	if strings.Contains(hostile, "<script>") || !strings.Contains(hostile, `\u003cscript\u003e`) {
		t.Errorf("the hostile kernel is not JSON-escaped:\n%s", hostile)
	}
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/builds/b2/manifests/sim-c", "build b2 has no manifest from cloud sim-c: the collection timed out"},
		{"/api/v1/builds/b2/manifests/nope", `build b2 has no cloud "nope" (its clouds: sim-a, sim-b, sim-c)`},
		{"/api/v1/builds/zzz/manifests/sim-a", `no build "zzz"`},
		{"/api/v1/drift?from=b1&to=zzz", `no build "zzz"`},
	} {
		var out map[string]string
		if code := e.getJSON(tc.path, &out); code != 404 || !strings.Contains(out["error"], tc.want) {
			t.Errorf("%s: %d %q; want 404 %q", tc.path, code, out["error"], tc.want)
		}
	}

	// The build's drift: across its clouds, and against b1 on sim-a.
	code, _, raw := e.getRaw("/api/v1/builds/b2/drift")
	if code != 200 || strings.Contains(raw, "<script>") {
		t.Fatalf("drift: %d\n%s", code, raw)
	}
	var d builds.Drift
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		t.Fatal(err)
	}
	if d.Across == nil || d.Across.Identical || len(d.Across.Clouds) != 2 || d.Across.NoManifest[0] != "sim-c" ||
		len(d.Across.System) != 1 || d.Across.System[0].Values["sim-b"] != hostileKernel {
		t.Errorf("across clouds: %+v", d.Across)
	}
	var simA builds.CloudChanges
	for _, cc := range d.OverTime {
		if cc.Cloud == "sim-a" {
			simA = cc
		}
	}
	if simA.Previous == nil || simA.Previous.Build != "b1" || simA.Changes == nil || simA.Changes.Added != 1 || simA.Changes.Upgraded != 1 {
		t.Errorf("sim-a over time: %+v / %+v", simA.Previous, simA.Changes)
	}

	// Any two builds.
	var diff builds.BuildDiff
	if code := e.getJSON("/api/v1/drift?from=b1&to=b2", &diff); code != 200 || len(diff.Clouds) != 1 || diff.Clouds[0].Changes.Added != 1 {
		t.Errorf("drift b1..b2: %d %+v", code, diff)
	}
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/drift?from=b1", "from and to are required"},
		{"/api/v1/drift?from=b1&to=b2&cloud=sim-b", `cloud "sim-b" is not a cloud of both builds`},
	} {
		var out map[string]string
		if code := e.getJSON(tc.path, &out); code != 400 || !strings.Contains(out["error"], tc.want) {
			t.Errorf("%s: %d %q; want 400 %q", tc.path, code, out["error"], tc.want)
		}
	}
}

// TestDriftRoutesAccess: the manifest and drift routes follow the read
// rule of the other read routes: a token, unless read_access: public, and
// only the builds of the token's repositories (both builds, for a diff).
func TestDriftRoutesAccess(t *testing.T) {
	e := newAccessEnv(t, "")
	const noManifest = `{"error":"build bfg has no manifest from cloud sim-a: its part of the build ended before the script succeeded"}`
	runAccessCases(t, e, []accessCase{
		{"GET", "/api/v1/builds/bfg/manifests/sim-a", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/builds/bfg/manifests/sim-a", fgReadTok, 404, []string{noManifest}, nil},
		{"GET", "/api/v1/builds/boc/manifests/sim-a", fgReadTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/builds/bfg/drift", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/builds/bfg/drift", fgReadTok, 200, []string{`"build":"bfg"`, `"on_drift":"warn"`}, nil},
		{"GET", "/api/v1/builds/boc/drift", fgReadTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/builds/boc/drift", plainTok, 200, []string{`"build":"boc"`}, nil},
		{"GET", "/api/v1/drift?from=bfg&to=boc", "", 401, []string{msgNoToken}, nil},
		{"GET", "/api/v1/drift?from=bfg&to=boc", fgReadTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/drift?from=boc&to=bfg", fgReadTok, 404, []string{msgNoBOC}, nil},
		{"GET", "/api/v1/drift?from=bfg&to=boc", plainTok, 200, []string{`"from":"bfg","to":"boc"`, "neither build has a manifest from this cloud"}, nil},
	})
	pub := newAccessEnv(t, "read_access: public\n")
	runAccessCases(t, pub, []accessCase{
		{"GET", "/api/v1/builds/boc/drift", "", 200, []string{`"build":"boc"`}, nil},
		{"GET", "/api/v1/drift?from=bfg&to=boc", "", 200, []string{`"from":"bfg"`}, nil},
	})
}
