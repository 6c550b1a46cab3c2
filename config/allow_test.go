package config

import (
	"slices"
	"strings"
	"testing"
)

// TestAllow: a cloud's own allow is its rule, whole; the others take the
// top-level one; repositories match case-insensitively, branches exactly.
func TestAllow(t *testing.T) {
	src := `allow: {repos: ["fg/*"], branches: [main]}
github: {allow_repos: ["fg/*", "fg-lab/*"]}
clouds:
  hotel-openstack: {type: other, allow: {repos: ["fg/images", "fg-lab/*"], branches: [main, "release/*"]}}
  box: {type: other, allow: {branches: [main]}}
  plain: {type: other}
`
	c, err := Parse([]byte(src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if w := c.BuildWarnings(); len(w) != 0 {
		t.Errorf("warnings %q with an allow on every cloud", w)
	}
	tests := []struct {
		cloud, repo, branch string
		repoOK, branchOK    bool
	}{
		{"hotel-openstack", "fg/images", "main", true, true},
		{"hotel-openstack", "FG/Images", "release/1.2", true, true},
		{"hotel-openstack", "fg-lab/x", "release/1.2/hotfix", true, false}, // * stops at /
		{"hotel-openstack", "fg/other", "Main", false, false},              // branches are case-sensitive
		{"hotel-openstack", "acme/x", "", false, false},
		{"box", "acme/x", "main", true, true}, // its own allow replaces the top-level one whole
		{"box", "acme/x", "dev", true, false},
		{"plain", "fg/anything", "main", true, true},
		{"plain", "fgx/images", "main", false, true},
		{"plain", "fg/images", "dev", true, false},
	}
	for _, tc := range tests {
		a := c.AllowFor(tc.cloud)
		if got := a.AllowsRepo(tc.repo); got != tc.repoOK {
			t.Errorf("cloud %s (%s): AllowsRepo(%q) = %v, want %v", tc.cloud, a.Key, tc.repo, got, tc.repoOK)
		}
		if got := a.AllowsBranch(tc.branch); got != tc.branchOK {
			t.Errorf("cloud %s (%s): AllowsBranch(%q) = %v, want %v", tc.cloud, a.Key, tc.branch, got, tc.branchOK)
		}
	}
	if c.AllowFor("plain").Key != "top-level allow" || c.AllowFor("box").Key != "allow" {
		t.Errorf("keys %q, %q", c.AllowFor("plain").Key, c.AllowFor("box").Key)
	}
	for repo, want := range map[string]bool{"fg/images": true, "FG-Lab/x": true, "acme/x": false, "": false} {
		if got := c.GitHub.AcceptsRepo(repo); got != want {
			t.Errorf("github.allow_repos: AcceptsRepo(%q) = %v, want %v", repo, got, want)
		}
	}

	// Without any allow, every cloud is open, and nil rules allow everything.
	open, err := Parse([]byte("clouds: {a: {type: other}}\n"), "imagegen.yaml", testRegistry(), lookupFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	if a := open.AllowFor("a"); a != nil || !a.AllowsRepo("any/thing") || !a.AllowsBranch("") || !open.GitHub.AcceptsRepo("any/thing") {
		t.Errorf("no allow configured: %+v", a)
	}
}

// TestAllowWarnings: serve and worker say at start, loudly, who may build
// where when nobody limited it.
func TestAllowWarnings(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // "": no warning
	}{
		{"no allow anywhere", "clouds: {a: {type: other}, b: {type: other}}\n",
			"no allow: is configured: every repository where the GitHub App is installed (or the token reaches) may build on every cloud; set a top-level allow: {repos: [OWNER/*]} (the default of every cloud), or allow: on each cloud"},
		{"one cloud open", "clouds: {a: {type: other, allow: {repos: [fg/*]}}, b: {type: other}}\n",
			"cloud b has no allow: and there is no top-level allow: every repository where the GitHub App is installed (or the token reaches) may build on it"},
		{"two clouds open", "clouds: {a: {type: other, allow: {repos: [fg/*]}}, b: {type: other}, c: {type: other}}\n",
			"clouds b, c have no allow: and there is no top-level allow: every repository where the GitHub App is installed (or the token reaches) may build on them"},
		{"top-level allow", "allow: {repos: [fg/*]}\nclouds: {a: {type: other}}\n", ""},
		{"every cloud its own", "clouds: {a: {type: other, allow: {branches: [main]}}}\n", ""},
		{"no clouds", "clouds: {}\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
			if err != nil {
				t.Fatal(err)
			}
			got := c.BuildWarnings()
			if tc.want == "" {
				if len(got) != 0 {
					t.Errorf("warnings %q, want none", got)
				}
				return
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("warnings %q\nwant [%q]", got, tc.want)
			}
			// serve logs Warnings(): the same line, once.
			n := 0
			for _, w := range c.Warnings() {
				if w == tc.want {
					n++
				}
			}
			if n != 1 {
				t.Errorf("Warnings() has it %d times, want once", n)
			}
		})
	}
}

// TestAllowConfigErrors: every mistake in an allow rule or
// github.allow_repos is refused at load, naming the key (and, on a cloud,
// the line of its allow).
func TestAllowConfigErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"bad repo patterns", "allow: {repos: [fg, 'fg/[', '*', 'a/b/c']}\n", []string{
			`imagegen.yaml: allow.repos[0]: "fg" is not an OWNER/NAME pattern (fg/images, fg/*, */*)`,
			`imagegen.yaml: allow.repos[1]: "fg/[" is not an OWNER/NAME pattern`,
			`imagegen.yaml: allow.repos[2]: "*" is not an OWNER/NAME pattern`,
			`imagegen.yaml: allow.repos[3]: "a/b/c" is not an OWNER/NAME pattern`}},
		{"bad branch patterns", "allow: {branches: [main, 'release/[', refs/heads/main, '']}\n", []string{
			`imagegen.yaml: allow.branches[1]: "release/[" is not a valid pattern (path.Match: syntax error in pattern)`,
			`imagegen.yaml: allow.branches[2]: "refs/heads/main" is a ref: write the branch name (main)`,
			`imagegen.yaml: allow.branches[3]: is empty: a branch name or pattern (main, release/*)`}},
		{"empty allow", "allow: {}\n", []string{
			`imagegen.yaml: allow: sets neither repos nor branches: say who may build (repos: ["fg/*"], branches: [main]); to allow every repository, write repos: ["*/*"]`}},
		{"empty lists", "allow: {repos: [], branches: }\n", []string{
			`imagegen.yaml: allow.repos: is empty: list the repositories that may build (fg/images, fg/*), or leave repos out to allow every repository`,
			`imagegen.yaml: allow.branches: is empty: list the branches that may build (main, release/*), or leave branches out to allow every branch`}},
		{"unknown key", "allow: {repo: [fg/*]}\n", []string{`imagegen.yaml:1:9: unknown key "repo" in allow: did you mean "repos"?`}},
		{"cloud: bad pattern", "clouds:\n  hotel:\n    type: other\n    allow: {repos: [fg]}\n", []string{
			`imagegen.yaml:4:12: clouds.hotel.allow.repos[0]: "fg" is not an OWNER/NAME pattern (fg/images, fg/*, */*)`}},
		{"cloud: empty allow", "clouds:\n  hotel: {type: other, allow: {}}\n", []string{
			`imagegen.yaml:2:31: clouds.hotel.allow: sets neither repos nor branches`}},
		{"cloud: unknown key", "clouds:\n  hotel: {type: other, allow: {branch: [main]}}\n", []string{
			`imagegen.yaml:2:32: unknown key "branch" in clouds.hotel.allow: did you mean "branches"? (known: branches, repos)`}},
		{"cloud: not a mapping", "clouds:\n  hotel: {type: other, allow: [fg/*]}\n", []string{
			`imagegen.yaml:2:31: clouds.hotel.allow: must be a mapping: {repos: [...], branches: [...]}`}},
		{"cloud: allow and driver errors together", "clouds:\n  hotel: {type: tiny, regoin: x, allow: {branches: ['[']}}\n", []string{
			`imagegen.yaml:2:41: clouds.hotel.allow.branches[0]: "[" is not a valid pattern`,
			`unknown key "regoin" for type tiny`}},
		{"github.allow_repos", "github: {allow_repos: [fg, 'fg/*']}\n", []string{
			`imagegen.yaml: github.allow_repos[0]: "fg" is not an OWNER/NAME pattern (fg/images, fg/*, */*)`}},
		{"github.allow_repos empty", "github: {allow_repos: []}\n", []string{
			`imagegen.yaml: github.allow_repos: is empty: list the repositories whose deliveries are accepted (fg/images, fg/*), or leave it out to accept every repository`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tc.want {
				if !slices.ContainsFunc(lines, func(l string) bool {
					return strings.HasPrefix(l, w) || strings.Contains(l, w) && !strings.HasPrefix(w, "imagegen.yaml")
				}) {
					t.Errorf("error:\n%v\nlacks a line starting with\n%s", err, w)
				}
			}
		})
	}
}
