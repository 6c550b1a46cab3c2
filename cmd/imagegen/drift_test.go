package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// TestBuildEndsWithDrift: imagegen build ends with the table of how its
// clouds' images differ; on_drift: fail makes it exit 1.
func TestBuildEndsWithDrift(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "imagegen.yaml")
	if err := os.WriteFile(conf, []byte(`clouds:
  sim-a: {type: simulated, manifest: {os: {id: debian, version_id: "12"}, kernel: k1, arch: x86_64, packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.15-1~deb12u1"]}}
  sim-b: {type: simulated, manifest: {os: {id: debian, version_id: "12"}, kernel: k1, arch: x86_64, packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.14-1~deb12u2"]}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		onDrift  string
		wantCode int
	}{{"warn", 0}, {"fail", 1}} {
		spec := filepath.Join(dir, ".imagegen", "g-"+tc.onDrift+".yaml")
		_ = os.MkdirAll(filepath.Dir(spec), 0o755)
		if err := os.WriteFile(spec, []byte("script: echo\ndrift: {on_drift: "+tc.onDrift+"}\nclouds: {sim-a: {image: i, ssh_user: u}, sim-b: {image: i, ssh_user: u}}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := runBuildCmd(t, nil, "--config", conf, spec)
		if code != tc.wantCode {
			t.Errorf("on_drift %s: exit %d, want %d\n%s\n%s", tc.onDrift, code, tc.wantCode, out, errOut)
		}
		_, drift, ok := strings.Cut(out, "\nDRIFT\n")
		if !ok || !strings.HasPrefix(drift, "The 2 clouds differ: 1 package differs (2 packages compared).\n") ||
			!strings.Contains(drift, "openssl  3.0.15-1~deb12u1  3.0.14-1~deb12u2  sim-a") {
			t.Errorf("on_drift %s: stdout does not end with the drift table:\n%s", tc.onDrift, out)
		}
	}
}

// TestDiffCommand: imagegen diff asks the API for the drift between two
// builds (with the token, when set) and prints it as text, terminal-safe.
func TestDiffCommand(t *testing.T) {
	var gotAuth, gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotQuery = r.Header.Get("Authorization"), r.URL.RawQuery
		if r.URL.Path != "/api/v1/drift" {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("to") == "missing" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no build \"missing\""}`))
			return
		}
		_ = json.NewEncoder(w).Encode(builds.BuildDiff{From: "a1", To: "b2", Clouds: []builds.CloudChanges{
			{Cloud: "sim-a", Changes: &manifest.Changes{Packages: 3, Added: 1, Changes: []manifest.PackageChange{
				{Kind: manifest.Added, Manager: manifest.Deb, Name: "dstat", To: "0.7.4-6.1"},
			}, System: []manifest.SystemChange{{Field: "kernel", From: "6.1", To: "6.2\x1b[31m"}}}},
			{Cloud: "sim-b", Note: "build a1 has no manifest from this cloud"},
		}})
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
		return map[string]string{"IMAGEGEN_API_TOKEN": "tok"}[k], k == "IMAGEGEN_API_TOKEN"
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code := run(ctx, e, []string{"diff", "--server", srv.URL, "--cloud", "sim-a", "a1", "b2"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if gotAuth != "Bearer tok" || gotQuery != "cloud=sim-a&from=a1&to=b2" {
		t.Errorf("request: auth %q, query %q", gotAuth, gotQuery)
	}
	for _, want := range []string{"== sim-a: build a1 → b2\nSince the previous image: 1 added, kernel changed (3 packages now).", "dstat    added", `6.2\x1b[31m`, "== sim-b: build a1 → b2\nbuild a1 has no manifest from this cloud"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "\x1b") {
		t.Error("an escape sequence reached the terminal")
	}
	errOut.Reset()
	if code := run(ctx, e, []string{"diff", "--server", srv.URL, "a1", "missing"}); code != 1 || !strings.Contains(errOut.String(), `404 Not Found: no build "missing"`) {
		t.Errorf("missing build: exit %d, %s", code, errOut.String())
	}
}
