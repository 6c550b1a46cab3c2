package server

import (
	"net/http"

	"github.com/imagegen/imagegen/github"
)

// answerRepoNotAllowed ignores a delivery about a repository that
// github.allow_repos leaves out. 200, not 403: GitHub records any other
// answer as a failed delivery, which the operator's redelivery (by hand, or
// the scripts GitHub documents that redeliver every failed delivery) would
// send again, forever; the delivery was received, and deliberately ignored.
var answerRepoNotAllowed = fixedAnswer(http.StatusOK, "not_allowed", "ignored: repository not allowed")

// acceptRepo answers a delivery about a repository that github.allow_repos
// leaves out; nil means it goes on.
func (s *Server) acceptRepo(payload []byte) *answer {
	if s.cfg.GitHub.AllowRepos == nil || s.cfg.GitHub.AcceptsRepo(github.DeliveryRepo(payload)) {
		return nil
	}
	return answerRepoNotAllowed
}
