package servicetest

import (
	"os/exec"
	"testing"
)

// Need is the one rule for tests that need a real program (redis-server,
// sshd, QEMU, Chromium, …): under -short (make unit) the test is skipped with
// a line saying what it needs; in a full run (make test) a missing program
// fails the test, because a skipped test must never pass as green in CI.
// It returns the programs' paths, in order.
func Need(t testing.TB, what string, programs ...string) []string {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s: skipped under -short (make unit); make test runs it", what)
	}
	paths := make([]string, len(programs))
	for i, p := range programs {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("needs %s, but %s is not installed (%v): run scripts/install-deps.sh test (make test does)", what, p, err)
		}
		paths[i] = path
	}
	return paths
}
