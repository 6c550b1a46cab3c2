package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestTraceQEMU is TestTraceSimulated's story on a real VM: the service
// builds the generator twice on the local QEMU cloud (and a simulated one,
// for a sibling) with a changed script; trace names the second image's
// commit, sibling and predecessor; changes shows the script's diff and the
// commits between; verify passes, then fails naming imagegen:commit once
// the image's sidecar is edited; and with Redis flushed, trace --config
// answers from the sidecar. Needs QEMU (skipped under -short).
func TestTraceQEMU(t *testing.T) {
	base := servicetest.QEMUImage(t)
	dir := t.TempDir()
	e := newTraceEnv(t, fmt.Sprintf(`  local: {type: qemu, dir: %s, memory: 256, boot_timeout: 2m, shutdown_timeout: 1m}
  sim-a: {type: simulated, launch_delay: 10ms, snapshot_delay: 10ms, state_file: %s}
`, dir, filepath.Join(dir, "sim.json")), 5*time.Minute)
	images := map[string]string{"local": base, "sim-a": "debian-12"}
	script1 := "set -e\necho one > /root/marker\nsync\n"
	script2 := "set -e\necho two > /root/marker\nsync\n"
	b1 := e.push(strings.Repeat("0", 40), traceSHA1, helloSpec(script1, images), 5*time.Minute)
	e.gh.SetCommits(traceRepo, traceSHA1, traceSHA2, []githubtest.Commit{{SHA: traceSHA2, Message: "Write two", Author: "Mona"}})
	b2 := e.push(traceSHA1, traceSHA2, helloSpec(script2, images), 5*time.Minute)
	img1, img2, sib := b1.Clouds["local"].ImageID, b2.Clouds["local"].ImageID, b2.Clouds["sim-a"].ImageID
	for _, im := range []string{img1, img2} {
		if _, err := os.Stat(filepath.Join(dir, im+".qcow2")); err != nil {
			t.Fatalf("image %s: %v", im, err)
		}
	}

	code, out, errOut := e.cli("trace", "--server", e.base, "--cloud", "local", img2)
	t.Logf("imagegen trace (qemu):\n%s", out)
	wantOut(t, "trace", code, out, errOut, 0, "image       "+img2, "on cloud local", "commit      "+traceSHA2,
		"siblings    sim-a:  "+sib, "previous    "+img1, "base image  "+base)

	code, out, errOut = e.cli("changes", "--server", e.base, "--cloud", "local", img2)
	t.Logf("imagegen changes (qemu):\n%s", out)
	wantOut(t, "changes", code, out, errOut, 0, "from  "+img1, "commits: 1", "  2222222 Write two  (Mona)",
		"-echo one > /root/marker\n+echo two > /root/marker\n", "packages: identical (0)")

	pub := e.publicKey()
	verify := func() (int, string, string) {
		return e.cli("verify", "--key", pub, "--server", e.base, "--config", e.cfgPath, "--cloud", "local", img2)
	}
	code, out, errOut = verify()
	wantOut(t, "verify (untouched)", code, out, errOut, 0, "ok    tags:")

	// Someone edits the image's commit in its sidecar.
	sidecar := filepath.Join(dir, img2+".json")
	b, err := os.ReadFile(sidecar)
	if err != nil {
		t.Fatal(err)
	}
	var pv qemu.Provenance
	if err := json.Unmarshal(b, &pv); err != nil {
		t.Fatal(err)
	}
	if pv.Tags[clouds.TagProvenance] != b2.Clouds["local"].ProvenanceSHA256 || pv.Tags[clouds.TagCommit] != traceSHA2 {
		t.Fatalf("sidecar tags %v; want the provenance digest %s", pv.Tags, b2.Clouds["local"].ProvenanceSHA256)
	}
	pv.Tags[clouds.TagCommit] = traceSHA1
	if b, err = json.Marshal(pv); err != nil || os.WriteFile(sidecar, b, 0o644) != nil {
		t.Fatal("rewrite the sidecar")
	}
	code, out, errOut = verify()
	wantOut(t, "verify (commit edited)", code, out, errOut, 1, `FAIL  tag imagegen:commit changed from "`+traceSHA2+`" to "`+traceSHA1+`"`)

	e.flushRedis()
	if code, body := e.get("/api/v1/images/local/" + img1); code != 404 {
		t.Errorf("after the flush, the server still knows %s: %d %s", img1, code, body)
	}
	code, out, errOut = e.cli("trace", "--config", e.cfgPath, "--cloud", "local", img1)
	wantOut(t, "trace --config (qemu)", code, out, errOut, 0, "image              "+img1, "commit             "+traceSHA1,
		"generator          hello", "build              "+b1.ID, "provenance sha256  "+b1.Clouds["local"].ProvenanceSHA256)
}
