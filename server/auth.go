package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/server/access"
)

// The API's rule (docs/api.md, "Who may call what"): with read_access:
// token, every read needs a token with the read scope, and sees the
// repositories the token is limited to (others' builds are not found);
// with read_access: public, reads are open but build logs still need a
// token unless public_logs; a re-run needs the rerun scope. A token that
// is presented is always checked, even where none is needed.

// tokenKey holds the request's token (*access.Token) in the echo context.
const tokenKey = "token"

// tokenOf is the request's authenticated token; nil: none was presented.
func tokenOf(c echo.Context) *access.Token {
	t, _ := c.Get(tokenKey).(*access.Token)
	return t
}

// bearer authenticates the request's bearer token, if it has an
// Authorization header at all (nil, nil when not).
func (s *Server) bearer(c echo.Context) (*access.Token, error) {
	h := c.Request().Header.Get("Authorization")
	if h == "" {
		return nil, nil
	}
	scheme, got, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(got) == "" {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="imagegen"`)
		return nil, echo.NewHTTPError(http.StatusUnauthorized, "the Authorization header must be: Bearer TOKEN")
	}
	t, err := s.access.Authenticate(c.RealIP(), strings.TrimSpace(got), "api "+c.Request().Method+" "+c.Path())
	var lim *access.LimitedError
	switch {
	case errors.As(err, &lim):
		c.Response().Header().Set("Retry-After", strconv.Itoa(lim.Seconds()))
		return nil, echo.NewHTTPError(http.StatusTooManyRequests, lim.Error())
	case err != nil:
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="imagegen", error="invalid_token"`)
		return nil, echo.NewHTTPError(http.StatusUnauthorized, "invalid token")
	}
	return t, nil
}

// unauthorized is the 401 of a request that needed a token and had none.
func unauthorized(c echo.Context, msg string) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="imagegen"`)
	return echo.NewHTTPError(http.StatusUnauthorized, msg)
}

// guard authenticates the request's token and lets it through when allowed
// says so; allowed gets the token (nil: none) and returns the error to answer.
func (s *Server) guard(allowed func(c echo.Context, t *access.Token) error) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			t, err := s.bearer(c)
			if err != nil {
				return err
			}
			if err := allowed(c, t); err != nil {
				return err
			}
			c.Set(tokenKey, t)
			return next(c)
		}
	}
}

// canRead guards builds and lineage; which repositories a token sees is
// left to the handler (it knows the build).
func (s *Server) canRead(c echo.Context, t *access.Token) error {
	if t == nil && !s.access.Public() {
		return unauthorized(c, "missing Authorization: Bearer TOKEN (this server's read_access is token)")
	}
	return nil
}

// canReadLogs guards build logs.
func (s *Server) canReadLogs(c echo.Context, t *access.Token) error {
	switch {
	case t == nil && s.access.Public() && !s.access.PublicLogs():
		return unauthorized(c, "build logs need Authorization: Bearer TOKEN (public_logs is off)")
	case t == nil && !s.access.PublicLogs():
		return unauthorized(c, "missing Authorization: Bearer TOKEN (this server's read_access is token)")
	}
	return nil
}

// canRerun guards re-runs: a token with the rerun scope.
func (s *Server) canRerun(c echo.Context, t *access.Token) error {
	switch {
	case !s.access.HasTokens():
		return echo.NewHTTPError(http.StatusForbidden, "this server has no api_tokens configured, so the API's mutating routes are off")
	case t == nil:
		return unauthorized(c, "missing Authorization: Bearer TOKEN")
	case !t.Has(config.ScopeRerun):
		return echo.NewHTTPError(http.StatusForbidden, "this token may not re-run builds: it lacks the rerun scope")
	}
	return nil
}

// canReadMetrics guards /metrics on the main listener (without
// metrics_listen): public with read_access: public; otherwise a token with
// read on every repository, as the metrics count every repository's builds.
func (s *Server) canReadMetrics(c echo.Context, t *access.Token) error {
	switch {
	case s.cfg.MetricsListen != "":
		return echo.NewHTTPError(http.StatusNotFound, "/metrics is served on metrics_listen, not here")
	case s.access.Public():
		return nil
	case t == nil:
		return unauthorized(c, "missing Authorization: Bearer TOKEN (this server's read_access is token; or set metrics_listen)")
	case !t.AllRepos():
		return echo.NewHTTPError(http.StatusForbidden, "/metrics counts every repository's builds: use a token without repos")
	}
	return nil
}
