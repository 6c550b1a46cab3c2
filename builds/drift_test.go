package builds_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/manifest"
)

// driftClouds are simulated clouds whose "instances" hold what their
// manifest: says: sim-a and sim-c the same, sim-b older openssl, another
// kernel, dstat instead of curl; sim-x a hostile machine's word.
const driftClouds = `github: {token: t, webhook_secret: s}
base_url: https://ig.example
build: {timeout: 30s, cleanup_timeout: 5s}
clouds:
  sim-a:
    type: simulated
    manifest: {os: {id: debian, version_id: "12"}, kernel: 6.1.0-26-cloud-amd64, arch: x86_64,
      packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.15-1~deb12u1", "curl:amd64=7.88.1-10+deb12u7", "linux-image-amd64:amd64=6.1.112-1"]}
  sim-b:
    type: simulated
    manifest: {os: {id: debian, version_id: "12"}, kernel: 6.1.0-25-cloud-amd64, arch: x86_64,
      packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.14-1~deb12u2", "dstat:all=0.7.4-6.1", "linux-image-amd64:amd64=6.1.106-3"]}
  sim-c:
    type: simulated
    manifest: {os: {id: debian, version_id: "12"}, kernel: 6.1.0-26-cloud-amd64, arch: x86_64,
      packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.15-1~deb12u1", "curl:amd64=7.88.1-10+deb12u7", "linux-image-amd64:amd64=6.1.112-1"]}
  sim-x:
    type: simulated
    manifest: {os: {id: "debian", version_id: "12", pretty_name: "<img src=x onerror=alert(1)>"}, kernel: "6.1|<script>alert(1)</script>` + "``" + `x", arch: x86_64,
      packages: ["bash:amd64=5.2.15-2+b7", "openssl:amd64=3.0.15-1~deb12u1", "curl:amd64=7.88.1-10+deb12u7", "linux-image-amd64:amd64=6.1.112-1",
        "evil|<script>=1.0", "back` + "`" + `tick=1.0"]}
  sim-file:
    type: simulated
    manifest: {file: FILE}
  plain: {type: simulated}
`

// driftBuild plans generator gen of a push and runs its clouds, in order,
// and returns the build's id.
func driftBuild(t *testing.T, s *service, delivery, gen string) string {
	t.Helper()
	ctx := context.Background()
	p := builds.Push{Delivery: delivery, Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true,
		After: fmt.Sprintf("%040x", len(delivery))}
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	id := builds.PlanID(delivery, gen)
	b, _, err := s.store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range b.CloudNames() {
		if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: c}); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// newDriftService is the core on the drift clouds, sim-file's manifest in file.
func newDriftService(t *testing.T, gh *githubtest.Mem, file string) *service {
	t.Helper()
	writeManifest(t, file, "bash:amd64=5.2.15-2+b7")
	s, _, _ := newServiceWith(t, gh, strings.ReplaceAll(driftClouds, "FILE", file))
	return s
}

// writeManifest writes a Debian machine's CycloneDX manifest holding pkgs (name:arch=version).
func writeManifest(t *testing.T, file string, pkgs ...string) {
	t.Helper()
	m := &manifest.Manifest{OS: manifest.OS{ID: "debian", VersionID: "12"}, Kernel: "6.1.0-26-cloud-amd64", Arch: "x86_64"}
	for _, p := range pkgs {
		na, v, _ := strings.Cut(p, "=")
		n, a, _ := strings.Cut(na, ":")
		m.Packages = append(m.Packages, manifest.Package{Manager: manifest.Deb, Name: n, Version: v, Arch: a})
	}
	doc, err := manifest.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
}

// driftPart is what a golden file pins of a check run: its title and
// conclusion, the summary's Drift section and the text's changes, which
// hold nothing that changes from run to run (image ids and durations do).
func driftPart(cr builds.CheckRun) string {
	sum := cr.Summary
	if i := strings.Index(sum, "\n### Drift"); i >= 0 {
		sum = sum[i:]
	} else {
		sum = "(no Drift section)\n"
	}
	if i := strings.Index(sum, "\nBuild `"); i >= 0 {
		sum = sum[:i]
	}
	text := cr.Text
	if i := strings.Index(text, "\nSince the previous image"); i >= 0 {
		text = text[i:]
	} else {
		text = "(no changes section)\n"
	}
	return "# " + cr.Title + " (" + cr.Conclusion + ")\n" + sum + "\n---\n" + text
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./builds -run Drift -update)", err)
	}
	if got != string(want) {
		t.Errorf("rendered check run differs from %s:\n%s", file, got)
	}
}

// TestDriftCheckRun: two simulated clouds with different manifests give a
// check run whose Drift section lists exactly their differences; identical
// ones say "identical"; on_drift: fail fails the check run, warn says so
// and keeps it successful.
func TestDriftCheckRun(t *testing.T) {
	tests := []struct {
		name, spec, golden, conclusion string
	}{
		{"differ", "clouds: {sim-a: {image: i, ssh_user: u}, sim-b: {image: i, ssh_user: u}}\n", "testdata/checkrun-drift.md", "success"},
		{"identical", "clouds: {sim-a: {image: i, ssh_user: u}, sim-c: {image: i, ssh_user: u}}\n", "testdata/checkrun-identical.md", "success"},
		{"fail", "clouds: {sim-a: {image: i, ssh_user: u}, sim-b: {image: i, ssh_user: u}}\ndrift: {on_drift: fail, ignore: [curl, dstat]}\n", "testdata/checkrun-drift-fail.md", "failure"},
		{"ignored", "clouds: {sim-a: {image: i, ssh_user: u}, sim-b: {image: i, ssh_user: u}}\ndrift: {on_drift: fail, ignore: [curl, dstat, openssl, \"linux-image-*\", \"@kernel\"]}\n", "testdata/checkrun-drift-ignored.md", "success"},
		{"no manifests", "clouds: {plain: {image: i, ssh_user: u}, sim-a: {image: i, ssh_user: u}}\n", "testdata/checkrun-drift-one.md", "success"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte("script: echo\n" + tc.spec)}}}
			s := newDriftService(t, gh, filepath.Join(t.TempDir(), "m.json"))
			id := driftBuild(t, s, "d1", "g")
			runs := gh.Runs()
			if len(runs) != 1 || runs[0].Status != "completed" || runs[0].Conclusion != tc.conclusion {
				t.Fatalf("check runs %+v; want one completed, %s", runs, tc.conclusion)
			}
			golden(t, tc.golden, driftPart(runs[0]))
			if n := len(runs[0].Summary); n > builds.MaxCheckRunText {
				t.Errorf("summary of %d bytes", n)
			}
			b, _, _ := s.store.Get(context.Background(), id)
			for _, c := range b.Clouds {
				if c.Cloud != "plain" && (len(c.ManifestSHA256) != 64 || c.ManifestPackages == 0) {
					t.Errorf("%s: record %+v lacks its manifest", c.Cloud, c)
				}
			}
		})
	}
}

// TestDriftOverTime: a second build after the machine gained a package
// (simulated: its manifest file changed) shows it added since the previous
// image, in the drift and in the check run's text.
func TestDriftOverTime(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte("script: echo\nclouds: {sim-file: {image: i, ssh_user: u}}\n")}}}
	file := filepath.Join(t.TempDir(), "m.json")
	s := newDriftService(t, gh, file)
	ctx := context.Background()
	first := driftBuild(t, s, "d1", "g")
	b1, sp, _ := s.store.Get(ctx, first)
	d1, err := builds.BuildDrift(ctx, s.store, b1, sp)
	if err != nil {
		t.Fatal(err)
	}
	if len(d1.OverTime) != 1 || d1.OverTime[0].Changes != nil || !strings.Contains(d1.OverTime[0].Note, "no earlier image") {
		t.Fatalf("first build's changes %+v", d1.OverTime)
	}

	writeManifest(t, file, "bash:amd64=5.2.15-2+b7", "dstat:all=0.7.4-6.1")
	second := driftBuild(t, s, "d2-second", "g")
	b2, sp, _ := s.store.Get(ctx, second)
	d2, err := builds.BuildDrift(ctx, s.store, b2, sp)
	if err != nil {
		t.Fatal(err)
	}
	cc := d2.OverTime[0]
	if cc.Previous == nil || cc.Previous.Build != first || cc.Changes == nil || cc.Changes.Added != 1 ||
		len(cc.Changes.Changes) != 1 || cc.Changes.Changes[0].Name != "dstat" || cc.Changes.Changes[0].Kind != manifest.Added {
		t.Fatalf("second build's changes %+v (previous %+v)", cc.Changes, cc.Previous)
	}
	runs := gh.Runs()
	last := runs[len(runs)-1]
	if want := "- sim-file: 1 added, 0 removed, 0 upgraded, 0 downgraded (against build `" + first + "`)"; !strings.Contains(last.Text, want) {
		t.Errorf("check run text:\n%s\nwant the line %q", last.Text, want)
	}

	// The same comparison between any two builds.
	diff, err := builds.DiffBuilds(ctx, s.store, first, second, "")
	if err != nil || len(diff.Clouds) != 1 || diff.Clouds[0].Changes == nil || diff.Clouds[0].Changes.Added != 1 {
		t.Fatalf("DiffBuilds: %+v, %v", diff, err)
	}
	if _, err := builds.DiffBuilds(ctx, s.store, first, second, "sim-a"); err == nil || !strings.Contains(err.Error(), `cloud "sim-a" is not a cloud of both builds`) {
		t.Errorf("an unknown cloud: %v", err)
	}
}

// TestDriftHostile: a machine whose kernel, OS name and package names carry
// '|', <script>, backticks: the check run's Markdown keeps every such value
// inside a code span with its '|' escaped (no table cell breaks, no HTML),
// the hostile packages are dropped and the manifest flagged partial, and
// the build ends successfully.
func TestDriftHostile(t *testing.T) {
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte("script: echo\nclouds: {sim-a: {image: i, ssh_user: u}, sim-x: {image: i, ssh_user: u}}\n")}}}
	s := newDriftService(t, gh, filepath.Join(t.TempDir(), "m.json"))
	id := driftBuild(t, s, "d1", "g")
	b, _, _ := s.store.Get(context.Background(), id)
	x := b.Clouds["sim-x"]
	if x.State != builder.StateSucceeded || !x.ManifestPartial || x.ManifestPackages != 4 {
		t.Fatalf("sim-x record %+v: want succeeded with a partial manifest of 4 packages", x)
	}
	runs := gh.Runs()
	golden(t, "testdata/checkrun-drift-hostile.md", driftPart(runs[len(runs)-1]))
	sum := runs[len(runs)-1].Summary
	for _, l := range strings.Split(sum, "\n") {
		if strings.Contains(l, "<script>") && !strings.Contains(l, "``6.1\\|<script>alert(1)</script>``x``") {
			t.Errorf("a line shows <script> outside an escaped code span: %q", l)
		}
	}
}

// TestDriftHostileOverSSH: the whole path, from a machine whose
// dpkg-query prints 50 MB of garbage (invalid UTF-8, '|', <script>,
// backticks, names cut by newlines) and whose uname -r says
// "6.1|<script>...`x`": the build ends, its manifest is stored partial and
// flagged, the check run's Markdown escapes the kernel in a code span, and
// the stored document is JSON with the HTML characters escaped.
func TestDriftHostileOverSSH(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	bin := filepath.Join(sshd.Dir, "bin")
	dpkg := "#!/bin/sh\nprintf 'ii \\tbash\\t5.2.15-2+b7\\tamd64\\n'\nprintf 'ii \\tpipe|name\\t1.0\\tamd64\\n'\nprintf 'ii \\t<script>alert(1)</script>\\t1.0\\tamd64\\n'\n" +
		"printf 'ii \\tbad\\377utf8\\t1.0\\tamd64\\n'\nprintf 'ii \\tsplit\\nname\\t1.0\\tamd64\\n'\n" +
		"yes 'ii \tjunk|<img src=x>`x`\t1.0\tamd64' | head -c 52428800\n"
	uname := "#!/bin/sh\ncase \"$1\" in -r) printf '%s\\n' '6.1|<script>alert(1)</script>`x`';; *) echo x86_64;; esac\n"
	for name, body := range map[string]string{"dpkg-query": dpkg, "uname": uname} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := strings.Cut(sshd.Addr, ":")
	clouds := "  sim-ssh: {type: simulated, ssh: {host: " + host + ", port: " + port + ", user: " + sshd.User +
		", private_key_file: " + sshd.WriteClientKey(t) + ", host_key: '" + sshd.HostKey + "'}}\n"
	cfg := strings.Replace(driftClouds, "clouds:\n", "clouds:\n"+clouds, 1)
	file := filepath.Join(t.TempDir(), "m.json")
	writeManifest(t, file, "bash:amd64=5.2.15-2+b7")
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/g.yaml": {Data: []byte("script: echo\nclouds: {sim-a: {image: i, ssh_user: u}, sim-ssh: {image: i, ssh_user: u}}\n")}}}
	s, _, _ := newServiceWith(t, gh, strings.ReplaceAll(cfg, "FILE", file))
	id := driftBuild(t, s, "d1", "g")

	ctx := context.Background()
	b, _, _ := s.store.Get(ctx, id)
	rec := b.Clouds["sim-ssh"]
	if rec.State != builder.StateSucceeded || !rec.ManifestPartial || rec.ManifestPackages != 1 {
		t.Fatalf("sim-ssh record %+v: want succeeded, a partial manifest of bash alone", rec)
	}
	doc, err := builds.ManifestDocument(ctx, s.store, id, "sim-ssh")
	if err != nil || len(doc) > 1<<20 || bytes.Contains(doc, []byte("<script>")) || !bytes.Contains(doc, []byte(`\u003cscript\u003e`)) {
		t.Errorf("stored document (%d bytes, %v): raw HTML or the junk kept", len(doc), err)
	}
	m, err := manifest.Decode(doc)
	if err != nil || !m.Partial || !strings.Contains(strings.Join(m.Notes, "\n"), "passed the limit of 16 MiB") {
		t.Errorf("decoded: %v, partial %v, notes %q", err, m.Partial, m.Notes)
	}
	runs := gh.Runs()
	sum := runs[len(runs)-1].Summary
	if !strings.Contains(sum, "| kernel | `6.1.0-26-cloud-amd64` | `` 6.1\\|<script>alert(1)</script>`x` `` |") ||
		!strings.Contains(sum, "> The manifest from `sim-ssh` is partial") {
		t.Errorf("check run summary:\n%s", sum)
	}
}
