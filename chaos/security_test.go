package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/store"
)

// routesServer is the server with one real build ("b1"), so routes that
// look the build up first get as far as the credential check; extra is
// more config (read_access, ...).
func routesServer(t *testing.T, extra string) *echo.Echo {
	t.Helper()
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	yml := fmt.Sprintf("redis: %s\nbase_url: https://ig.example\ngithub: {token: t, webhook_secret: whsec-routes-0123456789}\napi_tokens: [api-token-routes-0123456789abcdef]\nencryption_key: %s\nclouds:\n  sim: {type: simulated}\n%s",
		rd.URL, strings.Repeat("7e", 32), extra)
	cfg := configtest.Config(t, yml)
	qc, err := queue.NewClient(rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	reruns := builds.NewReruns(builds.Deps{Config: cfg, Store: st, Queue: qc})
	srv, err := server.New(server.Options{Config: cfg, Store: st, Queue: qc, Reruns: reruns})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := srv.Handler().(*echo.Echo)
	if !ok {
		t.Fatalf("the server's handler is a %T, not echo: this test cannot list its routes", srv.Handler())
	}
	now := time.Now().UTC()
	b := &builds.Build{ID: "b1", Repo: "octo/images", Commit: strings.Repeat("a", 40), Generator: "g", Created: now,
		Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: builder.StateFailed, Queued: now, Finished: now}}}
	if _, err := st.Create(context.Background(), b, &spec.Spec{Name: "g", Script: "true", Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian"}}}); err != nil {
		t.Fatal(err)
	}
	return e
}

var routeParam = regexp.MustCompile(`:[^/]+|\*`)

// walkRoutes sends a request to every route of e that include accepts, its
// params filled in ("b1"), once without credentials and once with a wrong
// token, and wants the status want for each; it fails when no route was
// checked and returns how many were.
func walkRoutes(t *testing.T, e *echo.Echo, include func(r *echo.Route) bool, want int) int {
	t.Helper()
	checked, client := 0, 0
	for _, r := range e.Routes() {
		// echo_route_*: echo's internal not-found / method-not-allowed entries.
		if strings.HasPrefix(r.Method, "echo_route_") || !include(r) {
			continue
		}
		path := routeParam.ReplaceAllString(r.Path, "b1")
		for _, auth := range []string{"", "Bearer wrong-token-0123456789abcdef"} {
			body, ctype := `{"clouds":["sim"]}`, "application/json"
			if !strings.HasPrefix(path, "/api/") {
				body, ctype = "cloud=sim&token=", "application/x-www-form-urlencoded" // the pages' forms
			}
			req := httptest.NewRequest(r.Method, path, strings.NewReader(body))
			req.Header.Set("Content-Type", ctype)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			// Each request from its own address: wrong tokens from one
			// would soon be answered 429 (the failure limit), not 401.
			client++
			req.RemoteAddr = fmt.Sprintf("198.51.%d.%d:1234", client/250, client%250+1)
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("%s %s (route %s) with authorization %q answered %d, want %d: %.300s", r.Method, path, r.Path, auth, rec.Code, want, rec.Body)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no route found: the walk checked nothing")
	}
	return checked
}

// TestMutatingRoutesNeedToken walks every route the server registers (the
// API and the build pages): each one that is not GET/HEAD, other than the
// webhook (signed instead), refuses a request without credentials with 401.
// A route added later without the token check fails here.
func TestMutatingRoutesNeedToken(t *testing.T) {
	e := routesServer(t, "")
	n := walkRoutes(t, e, func(r *echo.Route) bool {
		return r.Method != http.MethodGet && r.Method != http.MethodHead && r.Path != "/webhook"
	}, http.StatusUnauthorized)
	t.Logf("%d mutating routes checked", n)
}

// publicRoutes are the GET routes anyone may read: health for probes, the
// sign-in page and the pages' CSS and script.
var publicRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/login": true, "/assets/*": true}

// TestReadRoutesNeedToken walks every GET route: with read_access: token
// (the default), each one but publicRoutes answers 401 without credentials
// and with a wrong token — the API, the pages, their live streams and
// /metrics. With read_access: public, build logs still do. A read route
// added later without the rule fails here.
func TestReadRoutesNeedToken(t *testing.T) {
	isRead := func(r *echo.Route) bool { return r.Method == http.MethodGet && !publicRoutes[r.Path] }
	isLog := func(r *echo.Route) bool { return isRead(r) && strings.Contains(r.Path, "/log") }
	t.Run("read_access: token", func(t *testing.T) {
		n := walkRoutes(t, routesServer(t, ""), isRead, http.StatusUnauthorized)
		t.Logf("%d read routes checked", n)
	})
	t.Run("read_access: public", func(t *testing.T) {
		n := walkRoutes(t, routesServer(t, "read_access: public\n"), isLog, http.StatusUnauthorized)
		if n < 3 { // the API's log, the log page and its live stream
			t.Errorf("%d log routes found, want at least 3", n)
		}
	})
}
