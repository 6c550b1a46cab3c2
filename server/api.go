package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/internal/secret"
)

func (s *Server) listBuilds(c echo.Context) error {
	limit := 50
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 500 {
			return echo.NewHTTPError(http.StatusBadRequest, "limit must be a number from 1 to 500")
		}
		limit = n
	}
	bs, err := s.store.List(c.Request().Context(), builds.ListOptions{
		Repo: c.QueryParam("repo"), Generator: c.QueryParam("generator"), Limit: limit,
		Match: s.access.Filter(tokenOf(c)),
	})
	if err != nil {
		return err
	}
	if bs == nil {
		bs = []*builds.Build{}
	}
	return c.JSON(http.StatusOK, map[string]any{"builds": bs})
}

// build reads the build of the :id param. A build the request's token may
// not see is not found, as if it did not exist.
func (s *Server) build(c echo.Context) (*builds.Build, error) {
	b, _, err := s.store.Get(c.Request().Context(), c.Param("id"))
	if errors.Is(err, builds.ErrNotFound) || (err == nil && !s.access.MayRead(tokenOf(c), b.Repo)) {
		return nil, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no build %q (builds are kept for %s)", c.Param("id"), s.cfg.Build.Retention))
	}
	return b, err
}

func (s *Server) getBuild(c echo.Context) error {
	b, err := s.build(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b)
}

// getLog serves one cloud's log as text ("time [stream] text" lines), or as
// JSON lines with ?format=json.
func (s *Server) getLog(c echo.Context) error {
	b, err := s.build(c)
	if err != nil {
		return err
	}
	if t := tokenOf(c); !s.access.MayReadLogs(t, b.Repo) {
		if t == nil { // canReadLogs let no such request in: a second lock
			return unauthorized(c, "build logs need Authorization: Bearer TOKEN")
		}
		// read_access: public showed the build; its logs are not public.
		return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("this token may not read the build logs of %s", b.Repo))
	}
	cloud := c.QueryParam("cloud")
	if cloud == "" && len(b.Clouds) == 1 {
		cloud = b.CloudNames()[0]
	}
	if b.Clouds[cloud] == nil {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("?cloud= must name one of the build's clouds: %s", strings.Join(b.CloudNames(), ", ")))
	}
	lines, dropped, err := s.store.Log(c.Request().Context(), b.ID, cloud)
	if err != nil {
		return err
	}
	if c.QueryParam("format") == "json" {
		if lines == nil {
			lines = []builds.LogEntry{}
		}
		return c.JSON(http.StatusOK, map[string]any{"build": b.ID, "cloud": cloud, "dropped_lines": dropped, "lines": lines})
	}
	var out strings.Builder
	if dropped > 0 {
		fmt.Fprintf(&out, "[imagegen] %d earlier lines dropped (build.log_limit keeps the tail)\n", dropped)
	}
	for _, l := range lines {
		fmt.Fprintf(&out, "%s [%s] %s\n", l.Time.UTC().Format("2006-01-02T15:04:05.000Z"), l.Stream, l.Text)
	}
	return c.String(http.StatusOK, out.String())
}

func (s *Server) lineage(c echo.Context) error {
	repo, gen := c.QueryParam("repo"), c.QueryParam("generator")
	if repo == "" || gen == "" {
		return echo.NewHTTPError(http.StatusBadRequest, "repo and generator are required: /api/v1/images?repo=OWNER/NAME&generator=NAME")
	}
	var imgs []builds.LineageEntry
	if s.access.MayRead(tokenOf(c), repo) { // another repository's lineage is empty to this token
		var err error
		if imgs, err = s.store.Images(c.Request().Context(), repo, gen); err != nil {
			return err
		}
	}
	if imgs == nil {
		imgs = []builds.LineageEntry{}
	}
	return c.JSON(http.StatusOK, map[string]any{"repo": repo, "generator": gen, "images": imgs})
}

// RerunRequest is the body of POST /api/v1/builds/{id}/rerun.
type RerunRequest struct {
	Clouds    []string                 `json:"clouds"`
	Passwords map[string]secret.String `json:"passwords"`
}

func (s *Server) rerun(c echo.Context) error {
	if _, err := s.build(c); err != nil { // a build of a repository the token does not see: 404
		return err
	}
	var req RerunRequest
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// Never echo the body: it may hold a password.
		return echo.NewHTTPError(http.StatusBadRequest, `the body must be JSON: {"clouds": ["NAME"], "passwords": {"NAME": "..."}}`)
	}
	id, err := s.reruns.Rerun(c.Request().Context(), c.Param("id"), builds.RerunRequest{Clouds: req.Clouds, Passwords: req.Passwords})
	var rerr *builds.RequestError
	var derr *builds.DeniedError
	switch {
	case errors.Is(err, builds.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no build %q", c.Param("id")))
	case errors.As(err, &rerr):
		return echo.NewHTTPError(http.StatusBadRequest, rerr.Msg)
	case errors.As(err, &derr):
		// The token may re-run, but the cloud does not take this repository.
		logOf(c).Warn("re-run refused by an allow rule", "build", c.Param("id"), "token", tokenOf(c).Name, "reason", derr.Msg)
		return echo.NewHTTPError(http.StatusForbidden, derr.Msg)
	case err != nil:
		return err
	case id == "":
		return echo.NewHTTPError(http.StatusBadRequest, "nothing to re-run")
	}
	logOf(c).Info("re-run accepted", "build", id, "rerun_of", c.Param("id"), "token", tokenOf(c).Name)
	return c.JSON(http.StatusAccepted, map[string]string{"build": id, "url": builds.BuildURL(s.cfg.BaseURL, id)})
}
