package chaos

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/github/githubtest"
)

// TestHostileSpecsThroughTheWebhook pushes hostile generator specs, served by
// the fake GitHub, to a real `imagegen serve` (with its worker): each one gets
// a failed check run with a clear error, the service answers quickly, and its
// memory stays bounded.
func TestHostileSpecsThroughTheWebhook(t *testing.T) {
	const (
		repo     = "chaos/hostile"
		whSecret = "whsec-hostile-0123456789"
	)
	dir := t.TempDir()
	bin := buildImagegen(t, dir)
	rd := startRedis(t, dir)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr := freeAddr(t)
	cfgFile := filepath.Join(dir, "imagegen.yaml")
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
build: {timeout: 1m, cleanup_timeout: 5s}
clouds:
  sim: {type: simulated}
`, addr, rd.url(), app.AppID, app.PrivateKeyFile, whSecret, gh.URL())
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := &processes{t: t, bin: bin, dir: dir}
	srv := procs.start("serve", "serve", "--config", cfgFile)
	waitReady(t, "http://"+addr, 30*time.Second)

	const sha = "bad0000000000000000000000000000000000bad"
	cloudPart := "clouds:\n  sim: {image: debian-12, ssh_user: debian}\n"
	bomb := "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\nscript: echo\n" + cloudPart
	tests := []struct {
		name, spec string
		extra      map[string]string // other files at the commit
		symlink    [2]string         // path, target
		want       string            // in the check run's summary
	}{
		{name: "huge", spec: "script: |\n  " + strings.Repeat("echo 0123456789abcdef\n  ", 60000) + "\n" + cloudPart, want: "over the limit of"},
		{name: "hugefile", spec: "script_file: scripts/big.sh\n" + cloudPart, extra: map[string]string{"scripts/big.sh": strings.Repeat("#", 2<<20)}, want: "limit"},
		{name: "escape", spec: "script_file: scripts/passwd\n" + cloudPart, symlink: [2]string{"scripts/passwd", "../../../../etc/passwd"}, want: "symlink"},
		{name: "bomb", spec: bomb, want: "alias"},
		{name: "deep", spec: strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n", want: "invalid"},
	}
	files := map[string]string{}
	for _, tc := range tests {
		files[".imagegen/"+tc.name+".yaml"] = tc.spec
		for p, c := range tc.extra {
			files[p] = c
		}
		if tc.symlink[0] != "" {
			gh.SetSymlink(repo, sha, tc.symlink[0], tc.symlink[1])
		}
	}
	// A good generator sorted after the bad ones: they must not keep it from building.
	files[".imagegen/zgood.yaml"] = "script: echo good\n" + cloudPart
	gh.SetFiles(repo, sha, files)
	push := githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: sha})
	t0 := time.Now()
	if resp := githubtest.Delivery(t, "http://"+addr+"/webhook", "push", "hostile-1", []byte(whSecret), push); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push answered %d", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for (len(gh.CheckRuns(repo)) < len(tests)+1 || gh.LatestStatuses(repo, sha)["imagegen/zgood/sim"].State != "success") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d check runs %s after the push", len(gh.CheckRuns(repo)), time.Since(t0).Round(time.Millisecond))
	runs := map[string]string{}
	if st := gh.LatestStatuses(repo, sha)["imagegen/zgood/sim"]; st.State != "success" {
		t.Errorf("the good generator next to the hostile ones: status %+v, want success", st)
	}
	for _, cr := range gh.CheckRuns(repo) {
		if cr.Name == "imagegen: zgood" {
			continue
		}
		if cr.Conclusion != "failure" {
			t.Errorf("check run %q concluded %q, want failure", cr.Name, cr.Conclusion)
		}
		runs[cr.Name] = cr.Title + "\n" + cr.Summary
	}
	for _, tc := range tests {
		got, ok := runs["imagegen: "+tc.name]
		switch {
		case !ok:
			t.Errorf("%s: no check run", tc.name)
		case !strings.Contains(got, tc.want):
			t.Errorf("%s: check run says %q, want it to mention %q", tc.name, got, tc.want)
		}
	}
	if hwm := peakRSS(t, srv.cmd.Process.Pid); hwm > 512<<20 {
		t.Errorf("serve's peak memory was %d MiB reading hostile specs; want under 512 MiB", hwm>>20)
	} else {
		t.Logf("serve's peak memory: %d MiB", hwm>>20)
	}
	srv.stop("serve")
	if os.Getenv("CHAOS_DEBUG") != "" {
		b, _ := os.ReadFile(srv.log)
		t.Logf("%s", b)
	}
}

// peakRSS reads a process's peak resident set (VmHWM) from /proc.
func peakRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
