package builds

import (
	"fmt"
	"strings"

	"github.com/imagegen/imagegen/config"
)

// DeniedError refuses a build's part on a cloud whose allow rule (config:
// allow:) does not let the build's repository, or its branch, use it.
type DeniedError struct{ Msg string }

func (e *DeniedError) Error() string { return e.Msg }

// denied says why a build of repo (OWNER/NAME) at ref may not run on cloud
// under cfg's allow rules; "" when it may. The plan, the re-runs and the
// runner all ask it, so each refuses what the config of the moment refuses.
func denied(cfg *config.Config, cloud, repo, ref string) string {
	a := cfg.AllowFor(cloud)
	if a == nil {
		return ""
	}
	if !a.AllowsRepo(repo) {
		return fmt.Sprintf("cloud %s does not allow repository %s (%s.repos: %s)", cloud, repo, a.Key, strings.Join(a.Repos, ", "))
	}
	if a.Branches == nil {
		return ""
	}
	branch, isBranch := strings.CutPrefix(ref, "refs/heads/")
	if isBranch && a.AllowsBranch(branch) {
		return ""
	}
	rule := fmt.Sprintf("(%s.branches: %s)", a.Key, strings.Join(a.Branches, ", "))
	switch {
	case ref == "":
		return fmt.Sprintf("cloud %s allows only some branches and the build has none recorded %s", cloud, rule)
	case !isBranch:
		return fmt.Sprintf("cloud %s does not allow ref %s: not a branch %s", cloud, ref, rule)
	}
	return fmt.Sprintf("cloud %s does not allow branch %s %s", cloud, branch, rule)
}
