package builds_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayout holds the dependency rules of docs/ARCHITECTURE.md: the core
// knows no transport, forge or database library, and the worker's side
// (queue, builds, store, github) does not import the HTTP server.
func TestLayout(t *testing.T) {
	// go test puts its own go first on PATH.
	goBin := "go"
	deps := func(pkgs ...string) []string {
		out, err := exec.Command(goBin, append([]string{"list", "-deps"}, pkgs...)...).Output()
		if err != nil {
			t.Fatalf("go list -deps %v: %v", pkgs, err)
		}
		return strings.Fields(string(out))
	}
	const m = "github.com/imagegen/imagegen/"
	rules := []struct {
		pkgs      []string
		forbidden []string
	}{
		{[]string{"./"}, []string{"github.com/hibiken/asynq", "github.com/google/go-github/", "github.com/redis/go-redis/",
			m + "server", m + "queue", m + "store", m + "github"}},
		{[]string{"../queue", "../store", "../github", "./"}, []string{m + "server"}},
		{[]string{"../clouds/...", "../builder/..."}, []string{m + "builds", m + "github", m + "store", m + "queue", m + "server", "github.com/redis/go-redis/"}},
		// Libraries every layer may use: they know no imagegen package above internal/.
		{[]string{"../manifest", "../provenance"}, []string{m + "builder", m + "builds", m + "clouds", m + "config", m + "github", m + "store", m + "queue", m + "server"}},
	}
	for _, r := range rules {
		for _, d := range deps(r.pkgs...) {
			for _, f := range r.forbidden {
				if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) || strings.HasPrefix(d, f+"/") {
					t.Errorf("%v depends on %s", r.pkgs, d)
				}
			}
		}
	}
}
