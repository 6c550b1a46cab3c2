package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/store"
)

// TestLatestAgainstLiveServer: a real imagegen serve (with its worker)
// builds pushes on the simulated cloud playing its VMs on a real sshd, each
// image tested on a fresh "VM"; `imagegen latest` prints the id of the
// newest image whose test passed, skipping a newer one whose test failed,
// and says so when there is none.
func TestLatestAgainstLiveServer(t *testing.T) {
	const (
		secret = "whsec-latest-0123456789"
		token  = "api-token-latest-0123456789"
		repo   = "lab/images"
	)
	rd := servicetest.StartRedis(t)
	sshd := servicetest.StartSSHD(t)
	host, port, _ := strings.Cut(sshd.Addr, ":")
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr := freeAddr(t)
	base := "http://" + addr
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %s, webhook_secret: %s, api_url: %s}
api_tokens: [%q]
build: {timeout: 1m, cleanup_timeout: 10s}
clouds:
  sim: {type: simulated, ssh: {host: %s, port: %s, user: %s, private_key_file: %s, host_key: '%s'}}
`, addr, rd.URL, app.AppID, app.PrivateKeyFile, secret, gh.URL(), token, host, port, sshd.User, sshd.WriteClientKey(t), sshd.HostKey)
	file := filepath.Join(t.TempDir(), "imagegen.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startHelper(t, "serve", "--config", file)
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	marker := filepath.Join(t.TempDir(), "marker")
	// push builds the spec with test at sha, and waits for its status.
	push := func(n int, test string) string {
		sha := fmt.Sprintf("%040x", 0x1a7e57000+n)
		gh.SetFile(repo, sha, ".imagegen/web.yaml", []byte("script: echo built > "+marker+"\nchannel: stable\ntest: |\n  "+test+"\nclouds:\n  sim: {image: debian-12, ssh_user: debian}\n"))
		body := githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: sha})
		resp := githubtest.Delivery(t, base+"/webhook", "push", fmt.Sprintf("latest-%d", n), []byte(secret), body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push %d: %d", n, resp.StatusCode)
		}
		var st string
		waitFor(t, fmt.Sprintf("push %d's status", n), func() bool {
			st = gh.LatestStatuses(repo, sha)["imagegen/web/sim"].State
			return st == "success" || st == "failure"
		})
		return st
	}
	latest := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		e := &env{stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
			if k == "IMAGEGEN_API_TOKEN" {
				return token, true
			}
			return "", false
		}}
		code := run(context.Background(), e, append([]string{"latest", "--server", base, "--repo", repo, "--generator", "web"}, args...))
		return code, out.String(), errOut.String()
	}

	if code, _, errOut := latest("--cloud", "sim"); code != 1 || !strings.Contains(errOut, `404 Not Found: no image of generator "web" of lab/images on cloud "sim" has succeeded (and passed its test, if it has one)`) {
		t.Errorf("before any build: exit %d, %q", code, errOut)
	}
	if st := push(1, "grep -q built "+marker); st != "success" {
		t.Fatalf("push 1: %s", st)
	}
	code, first, errOut := latest("--cloud", "sim")
	if code != 0 || !strings.HasPrefix(first, "sim-") || strings.Count(first, "\n") != 1 {
		t.Fatalf("imagegen latest: exit %d, %q, %q", code, first, errOut)
	}
	if st := push(2, "exit 9"); st != "failure" {
		t.Fatalf("push 2 (failing test): %s", st)
	}
	if code, out, _ := latest("--cloud", "sim", "--branch", "main"); code != 0 || out != first {
		t.Errorf("after a failed test: %q, want still %q", out, first)
	}
	if st := push(3, "test -f "+marker); st != "success" {
		t.Fatalf("push 3: %s", st)
	}
	code, third, _ := latest("--cloud", "sim", "--channel", "stable")
	if code != 0 || third == first || !strings.HasPrefix(third, "sim-") {
		t.Errorf("after push 3: %q (first %q)", third, first)
	}
	if code, out, _ := latest("--cloud", "sim", "--json"); code != 0 || !strings.Contains(out, `"id": "`+strings.TrimSpace(third)+`"`) || !strings.Contains(out, `"tested": "passed"`) {
		t.Errorf("--json: %q", out)
	}
	// Without a token (read_access: token): 401, said.
	var out, errOut2 bytes.Buffer
	e := &env{stdout: &out, stderr: &errOut2, lookup: func(string) (string, bool) { return "", false }}
	if code := run(context.Background(), e, []string{"latest", "--server", base, "--repo", repo, "--generator", "web", "--cloud", "sim"}); code != 1 || !strings.Contains(errOut2.String(), "401") {
		t.Errorf("without a token: exit %d, %q", code, errOut2.String())
	}
	srv.stop(t, "serve")
}

// TestPrune: imagegen prune --dry-run shows the plan of each generator's
// keep: over the cloud's images and the records; without --dry-run it
// deletes those, and only those.
func TestPrune(t *testing.T) {
	rd := servicetest.StartRedis(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "sim.json")
	file := filepath.Join(dir, "imagegen.yaml")
	cfgText := fmt.Sprintf("redis: %s\ngithub: {token: t, webhook_secret: s}\nbuild: {timeout: 30s, cleanup_timeout: 5s}\nclouds:\n  sim: {type: simulated, state_file: %s}\n", rd.URL, state)
	if err := os.WriteFile(file, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, registry())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rdb.Close()
	st := store.New(rdb, 0, 0)
	gh := &githubtest.Mem{Files: fstest.MapFS{
		".imagegen/web.yaml":   {Data: []byte("script: echo\nkeep: 2\nclouds:\n  sim: {image: debian-12, ssh_user: u}\n")},
		".imagegen/other.yaml": {Data: []byte("script: echo\nclouds:\n  sim: {image: debian-12, ssh_user: u}\n")},
	}}
	qc, err := queue.NewClient(rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := builds.Deps{Config: cfg, Store: st, GitHub: gh, Queue: qc}
	pl, rn := builds.NewPlanner(d), builds.NewRunner(d)
	ctx := context.Background()
	var webImages []string
	for i := range 4 {
		delivery := fmt.Sprintf("p%d", i)
		if err := pl.Plan(ctx, builds.Push{Delivery: delivery, Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: strings.Repeat("0", 40), Created: true, After: fmt.Sprintf("%040d", i+1)}); err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"web", "other"} {
			id := planID(delivery, g)
			if err := rn.Run(ctx, builds.RunRequest{Build: id, Cloud: "sim", Attempt: 1}); err != nil {
				t.Fatal(err)
			}
			if g == "web" {
				b, _, _ := st.Get(ctx, id)
				webImages = append(webImages, b.Clouds["sim"].ImageID)
			}
		}
	}
	// The builds' own retention has kept web's two newest.
	sim := simulated.New(simulated.Options{StateFile: state})
	imgs := sim.Images()
	if len(imgs) != 2+4 {
		t.Fatalf("%d images after the builds, want web's 2 and other's 4", len(imgs))
	}
	// Now keep: 1 in the newest build's spec, recorded as a new build.
	gh.Files[".imagegen/web.yaml"] = &fstest.MapFile{Data: []byte("script: echo\nkeep: 1\nclouds:\n  sim: {image: debian-12, ssh_user: u}\n")}
	if err := pl.Plan(ctx, builds.Push{Delivery: "p-keep1", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: strings.Repeat("0", 40), Created: true, After: strings.Repeat("9", 40)}); err != nil {
		t.Fatal(err)
	}
	runPrune := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		e := &env{stdout: &out, stderr: &errOut, lookup: func(string) (string, bool) { return "", false }}
		code := run(ctx, e, append([]string{"prune", "--config", file}, args...))
		return code, out.String(), errOut.String()
	}
	code, out, errOut := runPrune("--dry-run")
	if code != 0 || !strings.Contains(out, webImages[2]) || !strings.Contains(out, "would delete") || !strings.Contains(out, webImages[3]) {
		t.Fatalf("prune --dry-run: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("imagegen prune --dry-run:\n%s", out)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, webImages[3]) && !strings.Contains(line, "keep") || strings.Contains(line, webImages[2]) && !strings.Contains(line, "would delete") {
			t.Errorf("plan line %q", line)
		}
		if strings.Contains(line, " other ") {
			t.Errorf("a generator without keep: is in the plan: %q", line)
		}
	}
	if n := len(sim.Images()); n != 6 {
		t.Errorf("--dry-run deleted something: %d images", n)
	}
	if code, out, errOut := runPrune(); code != 0 || !strings.Contains(out, "delete") {
		t.Fatalf("prune: exit %d\n%s\n%s", code, out, errOut)
	}
	left := map[string]bool{}
	for _, im := range sim.Images() {
		left[im.ID] = true
	}
	if len(left) != 5 || left[webImages[2]] || !left[webImages[3]] {
		t.Errorf("after prune: %v; want web's newest and other's 4", left)
	}
}

// planID is builds' build id of a delivery's generator.
func planID(delivery, generator string) string {
	h := sha256.Sum256([]byte(delivery + "\x00" + generator))
	return hex.EncodeToString(h[:8])
}
