package builds_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestBuildLogHidesConfigSecrets: a script (on a real sshd) that prints
// every secret of the server's config — API token, webhook secret, GitHub
// token, encryption key, the Redis password in its URL, the pages' link
// key — leaves none of them in the stored log, and neither in the error.
func TestBuildLogHidesConfigSecrets(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	key := sshd.WriteClientKey(t)
	host, port, _ := strings.Cut(sshd.Addr, ":")
	secrets := map[string]string{
		"api token":      "tok_Z2l2ZW1lYWxsdGhlc2VjcmV0cw",
		"webhook secret": "whsec-9f86d081884c7d659a2feaa0",
		"github token":   "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
		"encryption key": strings.Repeat("c4", 32),
		"redis password": "S3cr3t-redis-pw",
		"link key":       "link-key-0d9c8b7a6f5e4d3c",
	}
	var script strings.Builder
	for name, s := range secrets {
		fmt.Fprintf(&script, "echo '%s: %s'\n", name, s)
	}
	script.WriteString("echo '" + secrets["webhook secret"] + "' >&2; exit 3\n")
	gh := &githubtest.Mem{Files: fstest.MapFS{".imagegen/leak.yaml": {Data: []byte(
		"script: |\n" + indent(script.String()) + "clouds:\n  sim: {image: i, ssh_user: " + sshd.User + "}\n")}}}
	yml := fmt.Sprintf(`github: {token: %q, webhook_secret: %q}
api_tokens: [%q]
encryption_key: %q
redis: "redis://:%s@127.0.0.1:6379/0"
pages: {link_key: %q}
build: {timeout: 30s, cleanup_timeout: 5s, ssh_timeout: 10s}
clouds:
  sim: {type: simulated, ssh: {host: %s, port: %s, user: %s, private_key_file: %s, host_key: %q}}
`, secrets["github token"], secrets["webhook secret"], secrets["api token"], secrets["encryption key"],
		secrets["redis password"], secrets["link key"], host, port, sshd.User, key, sshd.HostKey)
	s, _, _ := newServiceWith(t, gh, yml)
	ctx := context.Background()
	p := builds.Push{Delivery: "d", Repo: "o/r", Ref: "refs/heads/main", DefaultBranch: "main", Before: builds.ZeroSHA, Created: true, After: "c0ffee"}
	if err := s.planner.Plan(ctx, p); err != nil {
		t.Fatal(err)
	}
	id := builds.PlanID("d", "leak")
	if err := s.runner.Run(ctx, builds.RunRequest{Build: id, Cloud: "sim"}); err != nil {
		t.Fatal(err)
	}
	b, _, err := s.store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if b.Clouds["sim"].State != builder.StateFailed {
		t.Fatalf("state %s; the script exits 3", b.Clouds["sim"].State)
	}
	lines, _, err := s.store.Log(ctx, id, "sim")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, l := range lines {
		all.WriteString(l.Text + "\n")
	}
	all.WriteString(b.Clouds["sim"].Error)
	for name, v := range secrets {
		if strings.Contains(all.String(), v) {
			t.Errorf("the %s is in the stored log or error", name)
		}
		if !strings.Contains(all.String(), name+": [redacted]") {
			t.Errorf("the log lacks %q:\n%s", name+": [redacted]", all.String())
		}
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
