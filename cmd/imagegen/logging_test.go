package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRedisFailureLogsJSON: serve or worker whose Redis does not answer
// logs, on stderr, JSON lines only: go-redis's own messages (a pool that
// cannot dial) go through the service's slog logger, with component redis,
// not as plain text next to it.
func TestRedisFailureLogsJSON(t *testing.T) {
	for _, cmd := range []string{"serve", "worker"} {
		t.Run(cmd, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "imagegen.yaml")
			// A port nothing listens on: every dial fails at once.
			cfg := fmt.Sprintf("listen: %s\nredis: redis://%s/0\ngithub: {webhook_secret: whsec-logging-0123456789}\n", freeAddr(t), freeAddr(t))
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			p := startHelper(t, cmd, "--config", file)
			waitFor(t, "go-redis giving up dialing", func() bool { return strings.Contains(p.out.String(), "failed to dial") })
			time.Sleep(200 * time.Millisecond) // a line being written
			// Killed, not stopped: a stop while Redis is away ends the
			// command with its error, which is no log line.
			_ = p.cmd.Process.Kill()
			err := <-p.done
			p.done <- err // for the cleanup
			lines := strings.Split(strings.TrimSpace(p.out.String()), "\n")
			redisLines := 0
			for _, l := range lines {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Errorf("stderr line is not JSON: %q", l)
					continue
				}
				if m["component"] == "redis" {
					redisLines++
					if m["level"] != "WARN" || !strings.Contains(fmt.Sprint(m["msg"]), "failed to dial") {
						t.Errorf("go-redis's line %v; want level WARN and its message", m)
					}
				}
			}
			if redisLines == 0 {
				t.Errorf("no line of go-redis's with component redis in:\n%s", p.out.String())
			}
		})
	}
}
