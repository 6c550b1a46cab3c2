package chaos

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegen/imagegen/github/githubtest"
)

// TestAcceptedDeliverySurvivesRedis: a push answered 202 is built even when
// Redis goes away right after the answer, before any worker has seen it:
// restarted (SIGTERM) with appendfsync everysec, as `make run` runs it, or
// killed (SIGKILL) with appendfsync always. The worker starts only after
// Redis is back, so the task can only come from Redis's append-only file.
func TestAcceptedDeliverySurvivesRedis(t *testing.T) {
	tests := []struct {
		name  string
		fsync string
		sig   syscall.Signal
	}{
		{"restart with appendfsync everysec", "everysec", syscall.SIGTERM},
		{"crash with appendfsync always", "always", syscall.SIGKILL},
	}
	dir := t.TempDir()
	bin := buildImagegen(t, dir)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const (
				repo     = "chaos/durable"
				whSecret = "whsec-durable-0123456789"
			)
			sub := t.TempDir()
			rd := startRedisFsync(t, sub, tc.fsync)
			gh := githubtest.NewServer(t)
			app := gh.AppConfig(t)
			addr := freeAddr(t)
			cfgFile := filepath.Join(sub, "imagegen.yaml")
			cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
build: {timeout: 1m, cleanup_timeout: 5s}
clouds:
  sim: {type: simulated, launch_delay: 10ms}
`, addr, rd.url(), app.AppID, app.PrivateKeyFile, whSecret, gh.URL())
			if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			procs := &processes{t: t, bin: bin, dir: sub}
			srv := procs.start("serve", "serve", "--no-worker", "--config", cfgFile)
			waitReady(t, "http://"+addr, 30*time.Second)

			sha := fmt.Sprintf("%040x", 0xd0ab1e+i)
			gh.SetFile(repo, sha, ".imagegen/g.yaml", []byte("script: echo durable\nclouds:\n  sim: {image: debian-12, ssh_user: debian}\n"))
			push := githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: sha})
			if resp := githubtest.Delivery(t, "http://"+addr+"/webhook", "push", fmt.Sprintf("durable-%d", i), []byte(whSecret), push); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("push answered %d, want 202", resp.StatusCode)
			}
			rd.stop(tc.sig)
			rd.start(t)
			waitReady(t, "http://"+addr, 30*time.Second)

			procs.start("worker", "worker", "--config", cfgFile)
			deadline := time.Now().Add(60 * time.Second)
			for gh.LatestStatuses(repo, sha)["imagegen/g/sim"].State != "success" {
				if time.Now().After(deadline) {
					t.Fatalf("the accepted push was not built after Redis came back: statuses %+v", gh.LatestStatuses(repo, sha))
				}
				time.Sleep(50 * time.Millisecond)
			}
			procs.byName("worker").stop("worker")
			srv.stop("serve")
		})
	}
}
