package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/provenance"
)

const (
	traceSHA1 = "1111111111111111111111111111111111111111"
	traceSHA2 = "2222222222222222222222222222222222222222"
)

func helloSpec(script string, clouds map[string]string) string {
	s := "name: hello\nscript: |\n"
	for _, l := range strings.Split(strings.TrimSuffix(script, "\n"), "\n") {
		s += "  " + l + "\n"
	}
	s += "clouds:\n"
	for _, c := range []string{"sim-a", "sim-b", "local"} {
		if img, ok := clouds[c]; ok {
			s += fmt.Sprintf("  %s: {image: %q, ssh_user: root}\n", c, img)
		}
	}
	return s
}

// TestTraceSimulated is issue 24 end to end on two simulated clouds: two
// pushes with a changed script; imagegen trace on the second image names its
// commit, its sibling and its predecessor; imagegen changes shows the
// script's diff and the commits between (their messages escaped); the DSSE
// envelope verifies with the dsse library's own verifier; imagegen verify
// passes on the untouched image, fails naming imagegen:commit once the tag
// is edited on the cloud, and fails with another key; and with Redis
// flushed, imagegen trace --config still answers from the cloud's tags.
func TestTraceSimulated(t *testing.T) {
	dir := t.TempDir()
	stateA, stateB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	e := newTraceEnv(t, fmt.Sprintf(`  sim-a: {type: simulated, launch_delay: 10ms, snapshot_delay: 10ms, state_file: %s}
  sim-b: {type: simulated, launch_delay: 10ms, snapshot_delay: 10ms, state_file: %s}
`, stateA, stateB), time.Minute)
	images := map[string]string{"sim-a": "debian-12", "sim-b": "ubuntu-24.04"}
	b1 := e.push(strings.Repeat("0", 40), traceSHA1, helloSpec("echo one\n", images), time.Minute)
	e.gh.SetCommits(traceRepo, traceSHA1, traceSHA2, []githubtest.Commit{
		{SHA: "aaaaaaa0000000000000000000000000000000aa", Message: "Install dstat\n\nthe long story", Author: "Mona"},
		{SHA: traceSHA2, Message: "Colour the \x1b[31mprompt\x1b[0m \u202eevil", Author: "Octo\x07cat"},
	})
	images["sim-a"] = "debian-13" // the base image changes on one cloud
	b2 := e.push(traceSHA1, traceSHA2, helloSpec("echo one\necho two \\ \u202e\n", images), time.Minute)
	img1, img2, sib := b1.Clouds["sim-a"].ImageID, b2.Clouds["sim-a"].ImageID, b2.Clouds["sim-b"].ImageID
	if img1 == "" || img2 == "" || sib == "" {
		t.Fatalf("images: %q %q %q", img1, img2, sib)
	}

	// The API: one image's story, with and without its cloud.
	var st builds.ImageStory
	e.getJSON("/api/v1/images/sim-a/"+img2, &st)
	if st.Commit != traceSHA2 || st.Build != b2.ID || st.Branch != "main" || st.Generator != "hello" || st.BaseImage != "debian-13" ||
		st.Digest != b2.Digest || st.Previous == nil || st.Previous.ImageID != img1 || st.Next != nil ||
		len(st.Siblings) != 1 || st.Siblings[0].ImageID != sib || st.Siblings[0].Cloud != "sim-b" || !st.BuildRecord ||
		st.ProvenanceSHA256 != b2.Clouds["sim-a"].ProvenanceSHA256 || st.ProvenanceSHA256 == "" {
		t.Errorf("story of %s: %+v", img2, st)
	}
	var first builds.ImageStory
	e.getJSON("/api/v1/images/"+img1, &first)
	if first.Cloud != "sim-a" || first.Next == nil || first.Next.ImageID != img2 || first.Previous != nil {
		t.Errorf("story of %s (no cloud given): %+v", img1, first)
	}

	// imagegen trace on the second image.
	code, out, errOut := e.cli("trace", "--server", e.base, img2)
	t.Logf("imagegen trace --server URL %s:\n%s", img2, out)
	wantOut(t, "trace", code, out, errOut, 0,
		"image       "+img2, "on cloud sim-a", "commit      "+traceSHA2, "branch      main", "generator   hello",
		"build       "+b2.ID, "base image  debian-13", "siblings    sim-b:  "+sib, "previous    "+img1, "commit 1111111", "next        none recorded")

	// imagegen changes: the commits between, the script's diff, the base image.
	code, out, errOut = e.cli("changes", "--server", e.base, img2)
	t.Logf("imagegen changes --server URL %s:\n%s", img2, out)
	wantOut(t, "changes", code, out, errOut, 0,
		"from  "+img1, "to    "+img2,
		"commits: 2  "+strings.TrimSuffix(e.gh.URL(), "/")+"/"+traceRepo+"/compare/"+traceSHA1+"..."+traceSHA2,
		"  aaaaaaa Install dstat  (Mona)",
		`  2222222 Colour the \x1b[31mprompt\x1b[0m \u{202E}evil  (Octo\x07cat)`,
		"base image: debian-12 -> debian-13",
		"script:\n--- a/.imagegen/hello.yaml script (111111111111)\n+++ b/.imagegen/hello.yaml script (222222222222)\n",
		" echo one\n+echo two \\\\ \\u{202E}\n",
		"packages: not compared (no package manifest is recorded for these images)")
	if strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Errorf("changes printed control or bidi characters raw:\n%q", out)
	}
	var ch builds.ImageChanges
	e.getJSON("/api/v1/images/sim-a/"+img2+"/changes?since="+img1, &ch)
	if ch.From == nil || ch.From.ImageID != img1 || !ch.ScriptChanged || len(ch.Commits) != 2 || ch.TotalCommits != 2 ||
		ch.Commits[1].Message != "Colour the \x1b[31mprompt\x1b[0m \u202eevil" || ch.Packages.Recorded {
		t.Errorf("changes since %s: %+v", img1, ch)
	}
	code, out, errOut = e.cli("changes", "--server", e.base, "--cloud", "sim-b", sib)
	wantOut(t, "changes on sim-b", code, out, errOut, 0, "base image: unchanged (ubuntu-24.04)", "+echo two")

	// The envelope, as stored, verifies with the DSSE library's own verifier.
	pub := e.publicKey()
	code, envelope := e.get("/api/v1/images/sim-a/" + img2 + "/provenance")
	if code != 200 || provenance.Digest(envelope) != st.ProvenanceSHA256 {
		t.Fatalf("provenance: %d, digest %s; want the story's %s", code, provenance.Digest(envelope), st.ProvenanceSHA256)
	}
	checkWithDSSE(t, pub, envelope)

	// imagegen verify: untouched; a tag edited on the cloud; another key.
	verify := func(key string) (int, string, string) {
		return e.cli("verify", "--key", key, "--server", e.base, "--config", e.cfgPath, "--cloud", "sim-a", img2)
	}
	code, out, errOut = verify(pub)
	wantOut(t, "verify (untouched)", code, out, errOut, 0, "ok    signature: ed25519 key SHA256:", "ok    tags:")
	other := filepath.Join(t.TempDir(), "other.pub")
	s, _ := provenance.LoadSigner(newKeyFile(t, "other.key"))
	otherPEM, _ := s.PublicKeyPEM()
	if err := os.WriteFile(other, otherPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = verify(other)
	wantOut(t, "verify (another key)", code, out, errOut, 1, "FAIL  provenance: the provenance is signed with another key")

	editTag(t, stateA, img2, clouds.TagCommit, traceSHA1)
	code, out, errOut = verify(pub)
	t.Logf("imagegen verify, imagegen:commit edited:\n%s", out)
	wantOut(t, "verify (commit edited)", code, out, errOut, 1,
		`FAIL  tag imagegen:commit changed from "`+traceSHA2+`" to "`+traceSHA1+`"`,
		"FAIL  the image's current tags on sim-a differ from its signed provenance")

	// Redis lost: the server forgets, the cloud remembers.
	e.flushRedis()
	code, out, errOut = e.cli("trace", "--server", e.base, img2)
	if code != 1 || !strings.Contains(errOut, "no record of image") || !strings.Contains(errOut, "imagegen trace --config") {
		t.Errorf("trace --server after the flush: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = e.cli("trace", "--config", e.cfgPath, "--cloud", "sim-b", sib)
	t.Logf("imagegen trace --config FILE --cloud sim-b %s (Redis flushed):\n%s", sib, out)
	wantOut(t, "trace --config", code, out, errOut, 0,
		"image              "+sib, "repository         "+traceRepo, "commit             "+traceSHA2, "generator          hello",
		"base image         ubuntu-24.04", "build              "+b2.ID, "provenance sha256  "+b2.Clouds["sim-b"].ProvenanceSHA256)
	code, out, errOut = e.cli("trace", "--config", e.cfgPath, "--cloud", "sim-b", "sim-nope")
	if code != 1 || !strings.Contains(errOut, `cloud sim-b has no image "sim-nope"`) {
		t.Errorf("trace --config of an unknown image: exit %d\n%s%s", code, out, errOut)
	}
}

// checkWithDSSE verifies an envelope with go-securesystemslib's own DSSE
// EnvelopeVerifier over a verifier built from the served PEM (its own key
// id dropped: it matches signatures by the id the library computes).
func checkWithDSSE(t *testing.T, pubFile string, envelope []byte) {
	t.Helper()
	pemData, err := os.ReadFile(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := signerverifier.LoadKey(pemData)
	if err != nil {
		t.Fatal(err)
	}
	key.KeyID = ""
	sv, err := signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := dsse.NewEnvelopeVerifier(sv)
	if err != nil {
		t.Fatal(err)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		t.Fatal(err)
	}
	if accepted, err := ev.Verify(context.Background(), &env); err != nil || len(accepted) != 1 {
		t.Fatalf("dsse.EnvelopeVerifier: %v, %+v", err, accepted)
	}
	if env.PayloadType != provenance.PayloadType {
		t.Errorf("payload type %q", env.PayloadType)
	}
}

// editTag changes one tag of an image on a simulated cloud, through the
// cloud (its state file), as someone with access to the cloud would.
func editTag(t *testing.T, stateFile, id, tag, value string) {
	t.Helper()
	c := simulated.New(simulated.Options{StateFile: stateFile})
	if err := c.TagImage(context.Background(), id, map[string]string{tag: value}); err != nil {
		t.Fatal(err)
	}
}
