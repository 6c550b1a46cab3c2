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

// TestMutatingRoutesNeedToken walks every route the server registers (the
// API and the build pages): each one that is not GET/HEAD, other than the
// webhook (signed instead), refuses a request without credentials with 401.
// A route added later without the token check fails here.
func TestMutatingRoutesNeedToken(t *testing.T) {
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	yml := fmt.Sprintf("redis: %s\nbase_url: https://ig.example\ngithub: {token: t, webhook_secret: whsec-routes-0123456789}\napi_tokens: [api-token-routes-0123456789abcdef]\nencryption_key: %s\nclouds:\n  sim: {type: simulated}\n",
		rd.URL, strings.Repeat("7e", 32))
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
	// A real build, so routes that look the build up first get as far as
	// the credential check.
	now := time.Now().UTC()
	b := &builds.Build{ID: "b1", Repo: "octo/images", Commit: strings.Repeat("a", 40), Generator: "g", Created: now,
		Clouds: map[string]*builds.CloudRecord{"sim": {Cloud: "sim", State: builder.StateFailed, Queued: now, Finished: now}}}
	if _, err := st.Create(context.Background(), b, &spec.Spec{Name: "g", Script: "true", Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian"}}}); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`:[^/]+|\*`)
	checked := 0
	for _, r := range e.Routes() {
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodHead || r.Path == "/webhook":
			continue
		case strings.HasPrefix(r.Method, "echo_route_"):
			continue // echo's internal not-found / method-not-allowed entries
		}
		path := param.ReplaceAllString(r.Path, "b1")
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
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s (route %s) with authorization %q answered %d, want 401: %s", r.Method, path, r.Path, auth, rec.Code, rec.Body)
			}
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no mutating route found: the walk checked nothing")
	}
	t.Logf("%d mutating routes checked", checked)
}
