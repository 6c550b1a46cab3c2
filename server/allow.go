package server

import (
	"net/http"

	"github.com/imagegen/imagegen/builds"
)

// answerRepoNotAllowed ignores a delivery about a repository that
// github.allow_repos leaves out. 200, not 403: GitHub records any other
// answer as a failed delivery, which the operator's redelivery (by hand, or
// the scripts GitHub documents that redeliver every failed delivery) would
// send again, forever; the delivery was received, and deliberately ignored.
var answerRepoNotAllowed = fixedAnswer(http.StatusOK, "not_allowed", "ignored: repository not allowed")

// acceptRepo answers a delivery about a repository that github.allow_repos
// leaves out; nil means it goes on (a delivery about no repository, such as
// a ping, too).
func (s *Server) acceptRepo(ev builds.Event) *answer {
	repo, ok := builds.EventRepo(ev)
	if s.cfg.GitHub.AllowRepos == nil || !ok || s.cfg.GitHub.AcceptsRepo(repo) {
		return nil
	}
	return answerRepoNotAllowed
}
