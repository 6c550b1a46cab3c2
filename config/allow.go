package config

import (
	"errors"
	"fmt"
	"path"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/internal/strictyaml"
)

// Allow is who may build on a cloud: allow: {repos: [...], branches: [...]}
// on a cloud entry, or at the top level, where it is the rule of every cloud
// without its own. A cloud's own allow replaces the top-level one whole (it
// is not merged with it key by key). A key left out limits nothing.
type Allow struct {
	// Repos are OWNER/NAME patterns (path.Match, case-insensitive, as
	// GitHub's names are): "fg/images", "fg-lab/*", "*/*".
	Repos []string `yaml:"repos"`
	// Branches are branch name patterns (path.Match, case-sensitive, as
	// git's are; "*" does not reach past a "/"): "main", "release/*".
	Branches []string `yaml:"branches"`

	// Key is where the rule is set, for messages: "allow" on a cloud,
	// "top-level allow" for the default.
	Key string `yaml:"-"`
	// given are the keys the config wrote (an empty list is not a missing one).
	given map[string]bool
}

// UnmarshalYAML decodes an allow mapping and remembers which keys it gave,
// so that "repos: []" (or "repos:" with nothing) is refused rather than read
// as "every repository".
func (a *Allow) UnmarshalYAML(n *yaml.Node) error {
	type fields Allow // without this method
	if err := n.Decode((*fields)(a)); err != nil {
		return err
	}
	a.given = map[string]bool{}
	if n.Kind == yaml.MappingNode {
		for _, f := range strictyaml.Pairs(n) {
			a.given[f.Key.Value] = true
		}
	}
	return nil
}

// AllowsRepo reports whether repo (OWNER/NAME) may build under the rule; a
// nil rule allows every repository.
func (a *Allow) AllowsRepo(repo string) bool {
	return a == nil || a.Repos == nil || MatchRepo(a.Repos, repo)
}

// AllowsBranch reports whether a build of branch (a name, not a ref; ""
// for none) may run under the rule; a nil rule allows every branch.
func (a *Allow) AllowsBranch(branch string) bool {
	if a == nil || a.Branches == nil {
		return true
	}
	if branch == "" {
		return false
	}
	for _, pat := range a.Branches {
		if ok, _ := path.Match(pat, branch); ok {
			return true
		}
	}
	return false
}

// MatchRepo reports whether repo (OWNER/NAME) matches one of patterns
// (path.Match, case-insensitive). It is the one matcher of repository
// patterns: API tokens' repos, allow.repos and github.allow_repos.
func MatchRepo(patterns []string, repo string) bool {
	repo = strings.ToLower(repo)
	for _, pat := range patterns {
		if ok, _ := path.Match(strings.ToLower(pat), repo); ok {
			return true
		}
	}
	return false
}

// checkRepoPatterns refuses what is not an OWNER/NAME pattern in pats, the
// value of key.
func (p *problems) checkRepoPatterns(key string, pats []string) {
	for j, r := range pats {
		owner, name, ok := strings.Cut(r, "/")
		_, err := path.Match(r, "")
		if !ok || owner == "" || name == "" || strings.Contains(name, "/") || err != nil {
			p.bad(fmt.Sprintf("%s[%d]", key, j), "%q is not an OWNER/NAME pattern (fg/images, fg/*, */*)", r)
		}
	}
}

// AllowFor returns the rule of cloud: its own allow, else the top-level
// one; nil when neither is set (every repository may build there).
func (c *Config) AllowFor(cloud string) *Allow {
	if a := c.cloudAllow[cloud]; a != nil {
		return a
	}
	return c.Allow
}

// OpenClouds lists the configured clouds that have no allow rule, neither
// their own nor the top-level one, sorted.
func (c *Config) OpenClouds() []string {
	var open []string
	for _, name := range c.CloudNames() {
		if c.AllowFor(name) == nil {
			open = append(open, name)
		}
	}
	return open
}

// BuildWarnings lists what serve and every worker say at start about who
// may build where.
func (c *Config) BuildWarnings() []string {
	open := c.OpenClouds()
	switch {
	case len(c.Clouds) == 0 || len(open) == 0:
		return nil
	case c.Allow == nil && len(c.cloudAllow) == 0:
		return []string{"no allow: is configured: every repository where the GitHub App is installed (or the token reaches) may build on every cloud; " +
			"set a top-level allow: {repos: [OWNER/*]} (the default of every cloud), or allow: on each cloud"}
	}
	return []string{fmt.Sprintf("%s %s %s no allow: and there is no top-level allow: every repository where the GitHub App is installed (or the token reaches) may build on %s",
		plural(len(open), "cloud", "clouds"), strings.Join(open, ", "), plural(len(open), "has", "have"), plural(len(open), "it", "them"))}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// finishAllow checks the top-level allow and github.allow_repos.
func (c *Config) finishAllow(p *problems) {
	if c.Allow != nil {
		c.Allow.Key = "top-level allow"
		p.checkAllow("allow", c.Allow)
	}
	if c.GitHub.AllowRepos != nil && len(c.GitHub.AllowRepos) == 0 {
		p.bad("github.allow_repos", "is empty: list the repositories whose deliveries are accepted (fg/images, fg/*), or leave it out to accept every repository")
	}
	p.checkRepoPatterns("github.allow_repos", c.GitHub.AllowRepos)
}

// checkAllow checks an allow rule, the value of key.
func (p *problems) checkAllow(key string, a *Allow) {
	if !a.given["repos"] && !a.given["branches"] {
		p.bad(key, `sets neither repos nor branches: say who may build (repos: ["fg/*"], branches: [main]); to allow every repository, write repos: ["*/*"]`)
		return
	}
	if a.given["repos"] && len(a.Repos) == 0 {
		p.bad(key+".repos", "is empty: list the repositories that may build (fg/images, fg/*), or leave repos out to allow every repository")
	}
	if a.given["branches"] && len(a.Branches) == 0 {
		p.bad(key+".branches", "is empty: list the branches that may build (main, release/*), or leave branches out to allow every branch")
	}
	p.checkRepoPatterns(key+".repos", a.Repos)
	for j, b := range a.Branches {
		k := fmt.Sprintf("%s.branches[%d]", key, j)
		_, err := path.Match(b, "")
		switch {
		case b == "":
			p.bad(k, "is empty: a branch name or pattern (main, release/*)")
		case strings.HasPrefix(b, "refs/"):
			p.bad(k, "%q is a ref: write the branch name (%s)", b, strings.TrimPrefix(strings.TrimPrefix(b, "refs/"), "heads/"))
		case err != nil:
			p.bad(k, "%q is not a valid pattern (path.Match: %v)", b, err)
		}
	}
}

// cloudAllowOf reads and checks the allow key of cloud name's entry (v its
// value); errors carry the allow mapping's position.
func (c *Config) cloudAllowOf(name string, v *yaml.Node) (*Allow, error) {
	key := "clouds." + name + ".allow"
	if v.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d:%d: %s: must be a mapping: {repos: [...], branches: [...]}", c.File, v.Line, v.Column, key)
	}
	a := &Allow{}
	if err := strictyaml.Decode(c.File, v, a, strictyaml.KeyCheck{Context: "in " + key}); err != nil {
		return nil, err
	}
	a.Key = "allow"
	p := &problems{file: fmt.Sprintf("%s:%d:%d", c.File, v.Line, v.Column)}
	p.checkAllow(key, a)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return a, nil
}
