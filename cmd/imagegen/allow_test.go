package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestStartupWarnsWhoMayBuild: serve (with its worker, or without) and
// worker each say once, as a WARN line at start, that every installation
// may build everywhere when no allow is configured; with one, neither says it.
func TestStartupWarnsWhoMayBuild(t *testing.T) {
	const warning = `"level":"WARN","msg":"no allow: is configured: every repository where the GitHub App is installed (or the token reaches) may build on every cloud; set a top-level allow: {repos: [OWNER/*]} (the default of every cloud), or allow: on each cloud"`
	rd := servicetest.StartRedis(t)
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	for _, tc := range []struct {
		name, allow string
		want        int
	}{
		{"no allow", "", 1},
		{"a top-level allow", `allow: {repos: ["fg/*"]}`, 0},
	} {
		file := filepath.Join(t.TempDir(), "imagegen.yaml")
		cfg := fmt.Sprintf("listen: 127.0.0.1:0\nredis: %s\ngithub: {token: t, webhook_secret: whsec-0123456789abcdef}\n%s\nclouds:\n  sim: {type: simulated}\n", rd.URL, tc.allow)
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"serve"}, {"serve", "--no-worker"}, {"worker"}} {
			t.Run(tc.name+": "+strings.Join(args, " "), func(t *testing.T) {
				out := &servicetest.Buffer{}
				e := &env{stdin: strings.NewReader(""), stdout: out, stderr: out, lookup: func(string) (string, bool) { return "", false }}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() {
					var err error
					if args[0] == "serve" {
						err = serveCmd(ctx, e, append(args[1:], "--config", file), reg)
					} else {
						err = workerCmd(ctx, e, []string{"--config", file}, reg)
					}
					done <- err
				}()
				started := `"msg":"worker started"`
				if len(args) == 2 {
					started = `"msg":"listening"`
				}
				waitFor(t, "start", func() bool {
					return strings.Contains(out.String(), started) || strings.Contains(out.String(), `"msg":"stopped"`)
				})
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("%v\n%s", err, out.String())
				}
				if n := strings.Count(out.String(), warning); n != tc.want {
					t.Errorf("the warning %d times; want %d:\n%s", n, tc.want, out.String())
				}
			})
		}
	}
}
