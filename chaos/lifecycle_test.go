package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// TestKilledDuringTest: a worker SIGKILLed while the new image is being
// tested (the simulated cloud, its state in a file, playing its VMs on a
// real sshd; the test script sleeps) leaves no test VM behind, and the
// untested image is never the latest: GET /api/v1/latest answers 404 until
// the retried attempt has tested its own image, and then names that one; the
// sweep removes the killed attempt's image.
func TestKilledDuringTest(t *testing.T) {
	dir := t.TempDir()
	bin := buildImagegen(t, dir)
	rd := startRedis(t, dir)
	sshd := servicetest.StartSSHD(t)
	host, port, _ := strings.Cut(sshd.Addr, ":")
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	const (
		repo     = "chaos/lifecycle"
		whSecret = "whsec-lifecycle-0123456789"
		apiToken = "api-token-lifecycle-0123456789"
	)
	addr := freeAddr(t)
	base := "http://" + addr
	state := filepath.Join(dir, "sim-cloud.json")
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
api_tokens: [%q]
encryption_key: %s
build: {timeout: 2m, cleanup_timeout: 10s, sweep_interval: 2s}
clouds:
  sim: {type: simulated, launch_delay: 50ms, snapshot_delay: 100ms, state_file: %q, ssh: {host: %s, port: %s, user: %s, private_key_file: %q, host_key: '%s'}}
`, addr, rd.url(), app.AppID, app.PrivateKeyFile, whSecret, gh.URL(), apiToken, strings.Repeat("d7", 32),
		state, host, port, sshd.User, sshd.WriteClientKey(t), sshd.HostKey)
	cfgFile := filepath.Join(dir, "imagegen.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := &processes{t: t, bin: bin, dir: dir}
	procs.start("serve", "serve", "--no-worker", "--config", cfgFile)
	worker := procs.start("worker-0", "worker", "--config", cfgFile)
	waitReady(t, base, 30*time.Second)

	marker := filepath.Join(dir, "marker")
	const sha = "1e57c4a0500000000000000000000000000000aa"
	gh.SetFile(repo, sha, ".imagegen/web.yaml", []byte("script: echo built > "+marker+
		"\ntest: |\n  sleep 3\n  grep -q built "+marker+"\nclouds:\n  sim: {image: debian-12, ssh_user: debian}\n"))
	body := githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: sha})
	resp := githubtest.Delivery(t, base+"/webhook", "push", "lc-chaos-1", []byte(whSecret), body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	h := sha256.Sum256([]byte("lc-chaos-1\x00web"))
	build := hex.EncodeToString(h[:8])

	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: rd.addr})
	defer rdb.Close()
	st := store.New(rdb, 0, 0)
	sim := simulated.New(simulated.Options{StateFile: state})
	latest := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/latest?repo="+repo+"&generator=web&cloud=sim", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var v struct {
			ID string `json:"id"`
		}
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &v)
		return resp.StatusCode, v.ID
	}

	// Wait for the test stage, then kill the worker in the middle of it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _, err := st.Get(ctx, build)
		if err == nil && b.Clouds["sim"].State == builder.StateTesting && b.Clouds["sim"].Phase == builder.PhaseTest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build never reached its test stage: %+v, %v", b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the test script runs
	worker.kill()
	untested := sim.Images()
	if len(untested) != 1 {
		t.Fatalf("images when the worker was killed: %+v, want the one under test", untested)
	}
	if untested[0].Tags[clouds.TagTested] != "" {
		t.Fatalf("the image under test is tagged %s", untested[0].Tags[clouds.TagTested])
	}
	servers := 0
	for _, r := range sim.Live() {
		if r.Kind == clouds.KindServer {
			servers++
		}
	}
	if servers != 2 {
		t.Errorf("%d servers when killed, want the build VM and the test VM", servers)
	}
	procs.start("worker-1", "worker", "--config", cfgFile)

	// Until the retry has tested its own image, nothing is the latest.
	deadline = time.Now().Add(4 * time.Minute)
	ended := false
	for time.Now().Before(deadline) && !ended {
		code, id := latest()
		b, _, _ := st.Get(ctx, build)
		final := b != nil && b.Clouds["sim"].State.Final()
		if id == untested[0].ID {
			t.Fatalf("the untested image %s is the latest", id)
		}
		if !final && code != http.StatusNotFound {
			t.Fatalf("latest answered %d %q before the build ended", code, id)
		}
		ended = final
		time.Sleep(200 * time.Millisecond)
	}
	if !ended {
		t.Fatal("the build did not end after the worker was killed")
	}
	b, _, _ := st.Get(ctx, build)
	c := b.Clouds["sim"]
	if c.State != builder.StateSucceeded || c.Attempts < 2 || c.Test == nil || c.Test.Result != clouds.TestedPassed || c.ImageID == untested[0].ID {
		t.Fatalf("record %+v (test %+v): want succeeded on a later attempt, tested, with its own image", c, c.Test)
	}
	if code, id := latest(); code != http.StatusOK || id != c.ImageID {
		t.Errorf("latest: %d %q, want %s", code, id, c.ImageID)
	}
	// The sweep (every 2 s) removes the killed attempt's image; no VM is left.
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && (len(sim.Live()) > 0 || len(sim.Images()) != 1) {
		time.Sleep(250 * time.Millisecond)
	}
	if live := sim.Live(); len(live) > 0 {
		t.Errorf("left in the cloud: %v", live)
	}
	imgs := sim.Images()
	if len(imgs) != 1 || imgs[0].ID != c.ImageID || imgs[0].Tags[clouds.TagTested] != clouds.TestedPassed {
		t.Errorf("images after the sweep: %+v; want only %s, tagged passed", imgs, c.ImageID)
	}
	if st := gh.LatestStatuses(repo, sha)["imagegen/web/sim"]; st.State != "success" {
		t.Errorf("status %+v", st)
	}
}
