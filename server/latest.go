package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builds"
)

// LatestImage is the answer of GET /api/v1/latest: the newest good image
// of a generator on a cloud (its build succeeded and its test, if any,
// passed), for Terraform, Heat templates and scripts (imagegen latest).
type LatestImage struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Commit    string    `json:"commit"`
	BuiltAt   time.Time `json:"built_at"`
	Build     string    `json:"build"`
	Repo      string    `json:"repo"`
	Generator string    `json:"generator"`
	Cloud     string    `json:"cloud"`
	Branch    string    `json:"branch,omitempty"`
	Channel   string    `json:"channel,omitempty"`
	Tested    string    `json:"tested,omitempty"` // passed, skipped; "" when the spec has no test
	BaseImage string    `json:"base_image,omitempty"`
}

// latest serves GET /api/v1/latest?repo=R&generator=G&cloud=C[&branch=B][&channel=N].
func (s *Server) latest(c echo.Context) error {
	q := builds.LatestQuery{Repo: c.QueryParam("repo"), Generator: c.QueryParam("generator"), Cloud: c.QueryParam("cloud"),
		Branch: c.QueryParam("branch"), Channel: c.QueryParam("channel")}
	if q.Repo == "" || q.Generator == "" || q.Cloud == "" {
		return echo.NewHTTPError(http.StatusBadRequest, "repo, generator and cloud are required: /api/v1/latest?repo=OWNER/NAME&generator=NAME&cloud=CLOUD[&branch=BRANCH][&channel=CHANNEL]")
	}
	var e *builds.LineageEntry
	err := builds.ErrNotFound
	if s.access.MayRead(tokenOf(c), q.Repo) { // another repository's images are not found for this token
		e, err = builds.Latest(c.Request().Context(), s.store, q)
	}
	if errors.Is(err, builds.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, q.NotFound())
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, LatestImage{
		ID: e.ImageID, Name: e.ImageName, Commit: e.Commit, BuiltAt: e.Created, Build: e.Build,
		Repo: e.Repo, Generator: e.Generator, Cloud: e.Cloud, Branch: e.Branch, Channel: e.Channel,
		Tested: e.Tested, BaseImage: e.BaseImage,
	})
}
