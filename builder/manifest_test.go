package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/clouds/sshhost"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/manifest"
)

// validateCycloneDX checks doc against the CycloneDX 1.6 JSON schema that
// manifest vendors, loaded under its $id URLs (nothing is fetched).
func validateCycloneDX(t *testing.T, doc []byte) {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, name := range []string{"bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json"} {
		f, err := os.Open(filepath.Join("..", "manifest", "testdata", "schema", name))
		if err != nil {
			t.Fatal(err)
		}
		v, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.AddResource("http://cyclonedx.org/schema/"+name, v); err != nil {
			t.Fatal(err)
		}
	}
	sch, err := c.Compile("http://cyclonedx.org/schema/bom-1.6.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("the manifest is not valid CycloneDX 1.6: %v", err)
	}
}

// sshHostCloud is a type: ssh cloud on the test's sshd.
func sshHostCloud(t *testing.T, s *servicetest.SSHD) clouds.Cloud {
	t.Helper()
	host, port, _ := strings.Cut(s.Addr, ":")
	var doc yaml.Node
	body := "{type: ssh, host: " + host + ", port: " + port + ", private_key_file: " + s.WriteClientKey(t) + ", host_key: '" + s.HostKey + "'}"
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	op, err := sshhost.Configure(clouds.Config{Name: "box", Type: sshhost.Type, Node: doc.Content[0], File: "imagegen.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestManifestOfThisMachine: a type: ssh build against a real OpenSSH sshd on
// this Debian machine records a CycloneDX document holding every package
// dpkg-query -W lists here, with the same versions, valid against the
// CycloneDX schema; the build makes no image but keeps the manifest.
func TestManifestOfThisMachine(t *testing.T) {
	s := servicetest.StartSSHD(t)
	out, err := exec.Command("dpkg-query", "-W", "-f", `${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n`).Output()
	if err != nil {
		t.Skipf("dpkg-query: %v (not a Debian machine)", err)
	}
	type pkg struct{ name, version, arch string }
	var want []pkg
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(l, "\t")
		// Installed packages only: removed ones keep just their configuration files.
		if len(f) == 4 && strings.HasPrefix(f[0], "i") {
			want = append(want, pkg{f[1], f[2], f[3]})
		}
	}
	j := testJob(sshHostCloud(t, s), "true", nil)
	j.CloudName = "box"
	j.Spec = testSpec("box", "true")
	j.Spec.Clouds["box"] = specCloud(s.User)
	j.Spec.Manifest.Files = []string{"/etc/os-release", "/etc/host*"}
	r := Run(context.Background(), j)
	if r.State != StateSucceeded || r.Image != nil {
		t.Fatalf("state %s, image %v, err %v", r.State, r.Image, r.Err)
	}
	mr := r.Manifest
	if mr == nil || mr.Document == nil || mr.Error != "" {
		t.Fatalf("manifest %+v", mr)
	}
	validateCycloneDX(t, mr.Document)
	if mr.SHA256 != manifest.SHA256(mr.Document) || len(mr.SHA256) != 64 {
		t.Errorf("sha256 %q", mr.SHA256)
	}
	m, err := manifest.Decode(mr.Document)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range m.Packages {
		got[p.Name+":"+p.Arch] = p.Version
	}
	for _, w := range want {
		if v, ok := got[w.name+":"+w.arch]; !ok || v != w.version {
			t.Errorf("package %s:%s: manifest has %q, dpkg-query says %q", w.name, w.arch, v, w.version)
		}
	}
	if len(m.Packages) != len(want) || mr.Packages != len(want) {
		t.Errorf("%d packages in the manifest (summary %d); dpkg-query lists %d installed", len(m.Packages), mr.Packages, len(want))
	}
	if m.Partial {
		t.Errorf("partial: %q", m.Notes)
	}
	osr, _ := os.ReadFile("/etc/os-release")
	if m.OS.ID == "" || !strings.Contains(string(osr), "ID="+m.OS.ID) {
		t.Errorf("os %+v; /etc/os-release says\n%s", m.OS, osr)
	}
	if uname, _ := exec.Command("uname", "-r").Output(); m.Kernel != strings.TrimSpace(string(uname)) || m.Arch == "" {
		t.Errorf("kernel %q (uname -r %q), arch %q", m.Kernel, uname, m.Arch)
	}
	if !slices.ContainsFunc(m.Files, func(f manifest.File) bool { return f.Path == "/etc/os-release" && len(f.SHA256) == 64 }) {
		t.Errorf("files %+v", m.Files)
	}
	p := m.Provenance
	if p.Repo != "octo/gens" || p.Commit != j.Commit || p.Generator != "hello" || p.ScriptSHA256 != j.Spec.Digest || p.Cloud != "box" || p.Build != "b1" {
		t.Errorf("provenance %+v", p)
	}
	if i := slices.Index(phaseNames(r), PhaseManifest); i < 0 || phaseNames(r)[i-1] != PhaseScript {
		t.Errorf("phases %v: the manifest is collected right after the script", phaseNames(r))
	}
}

func specCloud(user string) spec.CloudSpec { return spec.CloudSpec{SSHUser: user} }

func phaseNames(r Result) []Phase {
	var out []Phase
	for _, p := range r.Phases {
		out = append(out, p.Phase)
	}
	return out
}

// TestManifestTagsTheImage: the snapshot carries imagegen:manifest-sha256,
// the digest of the document the result holds.
func TestManifestTagsTheImage(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	f := simulated.New(simulated.Options{SSH: ep})
	r := Run(context.Background(), testJob(f, "true", nil))
	if r.State != StateSucceeded || r.Manifest == nil || r.Manifest.SHA256 == "" {
		t.Fatalf("state %s, manifest %+v, err %v", r.State, r.Manifest, r.Err)
	}
	imgs := f.Images()
	if len(imgs) != 1 || imgs[0].Tags[clouds.TagManifestSHA] != r.Manifest.SHA256 {
		t.Errorf("image tags %v; want %s=%s", imgs, clouds.TagManifestSHA, r.Manifest.SHA256)
	}
}

// TestManifestMissing: without a manifest the build succeeds with a warning
// and the image carries no digest tag; a spec that requires one fails, saying why.
func TestManifestMissing(t *testing.T) {
	for _, required := range []bool{false, true} {
		rec := &recorder{}
		f := simulated.New(simulated.Options{}) // no SSH, no manifest configured
		j := testJob(f, "true", rec)
		j.Spec.Manifest.Required = required
		r := Run(context.Background(), j)
		if r.Manifest == nil || r.Manifest.Document != nil || !strings.Contains(r.Manifest.Error, "simulated cloud: no manifest: configured") {
			t.Errorf("required %v: manifest %+v", required, r.Manifest)
		}
		if !required {
			if r.State != StateSucceeded || len(f.Images()) != 1 {
				t.Fatalf("state %s, err %v", r.State, r.Err)
			}
			if _, ok := f.Images()[0].Tags[clouds.TagManifestSHA]; ok {
				t.Errorf("an image without a manifest carries %s", clouds.TagManifestSHA)
			}
			continue
		}
		want := "collecting manifest: no manifest, and the spec requires one (manifest: {required: true}): the cloud's manifest: simulated cloud: no manifest: configured"
		if r.State != StateFailed || !strings.HasPrefix(r.Error, want) {
			t.Errorf("required: state %s, error %q; want failed with %q", r.State, r.Error, want)
		}
		checkCleanedUp(t, f, false)
	}
}

// TestManifestHostileOutput: a script that replaced dpkg-query with one
// printing 50 MB of garbage (invalid UTF-8, '|', <script>, backticks,
// names split by newlines) yields a partial, flagged manifest within the
// size cap, and the build still ends, successfully.
func TestManifestHostileOutput(t *testing.T) {
	s := servicetest.StartSSHD(t)
	fake := `#!/bin/sh
printf 'ii \tbash\t5.2.15-2+b7\tamd64\n'
printf 'ii \tpipe|name\t1.0\tamd64\n'
printf 'ii \t<script>alert(1)</script>\t1.0\tamd64\n'
printf 'ii \tback` + "`" + `tick\t1.0\tamd64\n'
printf 'ii \tbad\377utf8\t1.0\tamd64\n'
printf 'ii \tsplit\nname\t1.0\tamd64\n'
printf 'ii \tgood\t1.0<b>\tamd64\n'
yes 'ii 	junk|<img src=x onerror=alert(1)>` + "`" + `	1.0	amd64' | head -c 52428800
`
	if err := os.WriteFile(filepath.Join(s.Dir, "bin", "dpkg-query"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	f := simulated.New(simulated.Options{SSH: ep})
	rec := &recorder{}
	start := time.Now()
	r := Run(context.Background(), testJob(f, "true", rec))
	if r.State != StateSucceeded {
		t.Fatalf("state %s err %v", r.State, r.Err)
	}
	t.Logf("build took %s; phases %v", time.Since(start).Round(time.Millisecond), r.Phases)
	mr := r.Manifest
	if mr == nil || mr.Manifest == nil || !mr.Partial || !mr.Manifest.Partial {
		t.Fatalf("manifest %+v: want a partial one", mr)
	}
	if len(mr.Document) > 1<<20 {
		t.Errorf("document is %d bytes: the junk was kept", len(mr.Document))
	}
	var names []string
	for _, p := range mr.Manifest.Packages {
		names = append(names, p.Name)
	}
	if !slices.Equal(names, []string{"bash"}) {
		t.Errorf("packages %q; want only bash, every hostile line dropped", names)
	}
	notes := strings.Join(mr.Manifest.Notes, "\n")
	if !strings.Contains(notes, "passed the limit of 16 MiB") || !strings.Contains(notes, "dropped") {
		t.Errorf("notes do not say what was cut and dropped: %q", mr.Manifest.Notes)
	}
	// The notes quote the machine's output as escaped ASCII.
	for _, n := range mr.Manifest.Notes {
		if strings.ContainsAny(n, "\n\r\t\x00") || !utf8Valid(n) {
			t.Errorf("note %q carries raw control bytes", n)
		}
	}
	// The document is JSON with HTML characters escaped.
	if bytes.Contains(mr.Document, []byte("<script>")) || bytes.Contains(mr.Document, []byte("<img")) {
		t.Error("raw HTML in the encoded document")
	}
	var anyDoc map[string]any
	if err := json.Unmarshal(mr.Document, &anyDoc); err != nil {
		t.Errorf("document: %v", err)
	}
	if !slices.ContainsFunc(rec.text(StreamImagegen), func(s string) bool { return strings.Contains(s, "partial manifest collected") }) {
		t.Errorf("the log does not flag the partial manifest: %q", rec.text(StreamImagegen))
	}
	checkCleanedUp(t, f, true)
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
