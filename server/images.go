package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/provenance"
)

// The image routes (docs/api.md, "Images"): an image id, on a cloud or
// alone, to the build that made it; what changed since the image before;
// its signed provenance; and the key that signs it. Reads, under the API's
// rule: an image of a repository the token may not see is not found.

// EnvelopeType is the media type of a served provenance envelope.
const EnvelopeType = "application/vnd.dsse.envelope.v1+json"

// notRecorded is the 404 of an image imagegen has no record of.
func (s *Server) notRecorded(cloud, id string) error {
	where := ""
	if cloud != "" {
		where = " on cloud " + fmt.Sprintf("%q", cloud)
	}
	return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf(
		"no record of image %q%s (records are kept for %s; the cloud's own tags still say where an image came from: imagegen trace --config FILE --cloud NAME ID)",
		id, where, s.cfg.Build.Retention))
}

// imageStory serves GET /api/v1/images/:cloud/:image_id.
func (s *Server) imageStory(c echo.Context) error {
	return s.story(c, c.Param("cloud"), c.Param("image_id"))
}

// imageByID serves GET /api/v1/images/:image_id: the story when the id is
// recorded on one cloud; 409 naming the clouds when on more. Clouds whose
// image is of a repository the token may not see are left out, so neither
// answer tells of them.
func (s *Server) imageByID(c echo.Context) error {
	id := c.Param("image_id")
	ctx := c.Request().Context()
	all, err := s.store.ImageClouds(ctx, id)
	if err != nil {
		return err
	}
	var names []string
	for _, name := range all {
		e, err := s.store.Image(ctx, name, id)
		if err == nil && s.access.MayRead(tokenOf(c), e.Repo) {
			names = append(names, name)
		}
	}
	switch len(names) {
	case 0:
		return s.notRecorded("", id)
	case 1:
		return s.story(c, names[0], id)
	}
	amb := &builds.AmbiguousError{ID: id, Clouds: names}
	return c.JSON(http.StatusConflict, map[string]any{"error": amb.Error(), "clouds": amb.Clouds})
}

func (s *Server) story(c echo.Context, cloud, id string) error {
	st, err := s.images.Story(c.Request().Context(), cloud, id)
	if errors.Is(err, builds.ErrNotFound) || (err == nil && !s.access.MayRead(tokenOf(c), st.Repo)) {
		return s.notRecorded(cloud, id)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// imageChanges serves GET /api/v1/images/:cloud/:image_id/changes[?since=ID].
func (s *Server) imageChanges(c echo.Context) error {
	cloud, id, since := c.Param("cloud"), c.Param("image_id"), c.QueryParam("since")
	ctx := c.Request().Context()
	for _, want := range []string{id, since} {
		if want == "" {
			continue
		}
		e, err := s.store.Image(ctx, cloud, want)
		if errors.Is(err, builds.ErrNotFound) || (err == nil && !s.access.MayRead(tokenOf(c), e.Repo)) {
			return s.notRecorded(cloud, want)
		}
		if err != nil {
			return err
		}
	}
	ch, err := s.images.Changes(ctx, cloud, id, since)
	if errors.Is(err, builds.ErrNotFound) {
		return s.notRecorded(cloud, id) // expired between the look-ups
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ch)
}

// imageProvenance serves GET /api/v1/images/:cloud/:image_id/provenance:
// the DSSE envelope as stored, byte for byte (its SHA-256 is the image's
// imagegen:provenance-sha256).
func (s *Server) imageProvenance(c echo.Context) error {
	cloud, id := c.Param("cloud"), c.Param("image_id")
	ctx := c.Request().Context()
	e, err := s.store.Image(ctx, cloud, id)
	if errors.Is(err, builds.ErrNotFound) || (err == nil && !s.access.MayRead(tokenOf(c), e.Repo)) {
		return s.notRecorded(cloud, id)
	}
	if err != nil {
		return err
	}
	env, err := s.images.Provenance(ctx, cloud, id)
	if errors.Is(err, builds.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("image %q on cloud %q has no stored provenance (built before provenance, or its build record expired)", id, cloud))
	}
	if err != nil {
		return err
	}
	c.Response().Header().Set("X-Imagegen-Provenance-Sha256", provenance.Digest(env))
	return c.Blob(http.StatusOK, EnvelopeType, env)
}

// provenanceKey serves GET /api/v1/provenance/key: the public key, PEM,
// that imagegen verify --key takes; 404 when the server signs nothing.
func (s *Server) provenanceKey(c echo.Context) error {
	pem, err := s.signer.PublicKeyPEM()
	if errors.Is(err, provenance.ErrNoKey) {
		return echo.NewHTTPError(http.StatusNotFound, "this server signs no provenance: provenance.signing_key_file is not set, so its statements are unsigned")
	}
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "application/x-pem-file", pem)
}
