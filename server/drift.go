package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// driftRoutes adds the read routes of images' manifests and drift to the
// API group: every build is read through s.build, as the other read routes
// read theirs.
func (s *Server) driftRoutes(api *echo.Group) {
	api.GET("/builds/:id/manifests/:cloud", s.getManifest, s.guard(s.canRead))
	api.GET("/builds/:id/drift", s.getDrift, s.guard(s.canRead))
	api.GET("/drift", s.diffBuilds, s.guard(s.canRead))
}

// getManifest serves a cloud's manifest of a build: CycloneDX JSON.
func (s *Server) getManifest(c echo.Context) error {
	b, err := s.build(c)
	if err != nil {
		return err
	}
	cloud := c.Param("cloud")
	rec := b.Clouds[cloud]
	if rec == nil {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("build %s has no cloud %q (its clouds: %s)", b.ID, cloud, strings.Join(b.CloudNames(), ", ")))
	}
	if rec.ManifestSHA256 == "" {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("build %s has no manifest from cloud %s: %s", b.ID, cloud, noManifestReason(rec)))
	}
	doc, err := builds.ManifestDocument(c.Request().Context(), s.store, b.ID, cloud)
	if errors.Is(err, builds.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("build %s has no manifest from cloud %s: it was not stored", b.ID, cloud))
	}
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("ETag", `"`+rec.ManifestSHA256+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	return c.Blob(http.StatusOK, manifest.MediaType, doc)
}

// noManifestReason says why a cloud's record has no manifest.
func noManifestReason(rec *builds.CloudRecord) string {
	switch {
	case rec.ManifestError != "":
		return rec.ManifestError
	case !rec.State.Final():
		return fmt.Sprintf("its part of the build is %s; the manifest is collected once the script has succeeded", rec.State)
	case rec.State != builder.StateSucceeded:
		return "its part of the build ended before the script succeeded"
	default:
		return "none was recorded (a build from before imagegen collected manifests)"
	}
}

// getDrift serves a build's drift: across its clouds, and each cloud
// against its previous image.
func (s *Server) getDrift(c echo.Context) error {
	b, err := s.build(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// The spec holds the drift: settings; s.build has checked the build.
	_, sp, err := s.store.Get(ctx, b.ID)
	if err != nil {
		return err
	}
	d, err := builds.BuildDrift(ctx, s.store, b, sp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

// diffBuilds serves /api/v1/drift?from=BUILD&to=BUILD[&cloud=NAME]: how the
// images of one build differ from another's.
func (s *Server) diffBuilds(c echo.Context) error {
	from, to, cloud := c.QueryParam("from"), c.QueryParam("to"), c.QueryParam("cloud")
	if from == "" || to == "" {
		return echo.NewHTTPError(http.StatusBadRequest, "from and to are required: /api/v1/drift?from=BUILD&to=BUILD[&cloud=NAME]")
	}
	for _, id := range []string{from, to} {
		if _, err := s.buildAt(c, id); err != nil {
			return err
		}
	}
	d, err := builds.DiffBuilds(c.Request().Context(), s.store, from, to, cloud)
	var rerr *builds.RequestError
	switch {
	case errors.Is(err, builds.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, err.Error())
	case errors.As(err, &rerr):
		return echo.NewHTTPError(http.StatusBadRequest, rerr.Msg)
	case err != nil:
		return err
	}
	return c.JSON(http.StatusOK, d)
}

// buildAt is s.build for a build named elsewhere than the :id parameter (a
// query parameter), so that whatever s.build checks of a build and of the
// request applies to it too.
func (s *Server) buildAt(c echo.Context, id string) (*builds.Build, error) {
	names, values := c.ParamNames(), c.ParamValues()
	defer func() {
		c.SetParamNames(names...)
		c.SetParamValues(values...)
	}()
	c.SetParamNames("id")
	c.SetParamValues(id)
	return s.build(c)
}
