package server_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// TestLatestRoute: GET /api/v1/latest answers the newest image of the
// lineage on a cloud (from a branch; that moved a channel), 404 with the
// reason when there is none (also to a token limited to other
// repositories), 400 without repo, generator and cloud, 401 without a token.
func TestLatestRoute(t *testing.T) {
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := configtest.Config(t, fmt.Sprintf(`redis: %s
github: {token: ghp_test0123456789, webhook_secret: %s}
api_tokens:
  - %s
  - {token: %s, scopes: [read], repos: ["fg/*"]}
clouds:
  sim-a: {type: simulated}
`, rd.URL, webhookSecret, plainTok, fgReadTok))
	srv, d := newServer(t, cfg, rdb, nil, nil)
	st := d.Store.(*store.Store)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	for i, e := range []builds.LineageEntry{
		{ImageID: "img-1", Branch: "main", Channel: "stable", Tested: "passed"},
		{ImageID: "img-2", Branch: "main", Tested: "passed"},
		{ImageID: "img-3", Branch: "dev", Tested: "passed"},
		{ImageID: "img-other-cloud", Branch: "main", Cloud: "sim-b"},
	} {
		e.Build, e.Repo, e.Generator, e.Commit, e.ImageName = fmt.Sprintf("b%d", i), "octo/images", "web", fmt.Sprintf("%040d", i), "web-"+e.ImageID
		if e.Cloud == "" {
			e.Cloud = "sim-a"
		}
		e.Created = t0.Add(time.Duration(i) * time.Hour)
		if err := st.AddImage(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	e := &accessEnv{t: t, http: httptest.NewServer(srv.Handler()), logs: &servicetest.Buffer{}}
	t.Cleanup(e.http.Close)
	const q = "/api/v1/latest?repo=octo/images&generator=web"
	runAccessCases(t, e, []accessCase{
		{"GET", q + "&cloud=sim-a", "", 401, []string{msgNoToken}, nil},
		{"GET", q, plainTok, 400, []string{`{"error":"repo, generator and cloud are required: /api/v1/latest?repo=OWNER/NAME\u0026generator=NAME\u0026cloud=CLOUD[\u0026branch=BRANCH][\u0026channel=CHANNEL]"}`}, nil},
		{"GET", q + "&cloud=sim-a", plainTok, 200, []string{`"id":"img-3"`, `"name":"web-img-3"`, `"commit":"0000000000000000000000000000000000000002"`, `"built_at":"2026-11-23T22:00:00Z"`, `"branch":"dev"`, `"tested":"passed"`}, nil},
		{"GET", q + "&cloud=sim-a&branch=main", plainTok, 200, []string{`"id":"img-2"`, `"build":"b1"`}, nil},
		{"GET", q + "&cloud=sim-a&channel=stable", plainTok, 200, []string{`"id":"img-1"`, `"channel":"stable"`}, nil},
		{"GET", q + "&cloud=sim-a&branch=dev&channel=stable", plainTok, 404, []string{`{"error":"no image of generator \"web\" of octo/images on cloud \"sim-a\" from branch \"dev\" in channel \"stable\" has succeeded (and passed its test, if it has one)"}`}, nil},
		{"GET", q + "&cloud=nowhere", plainTok, 404, []string{`{"error":"no image of generator \"web\" of octo/images on cloud \"nowhere\" has succeeded (and passed its test, if it has one)"}`}, nil},
		{"GET", q + "&cloud=sim-a", fgReadTok, 404, []string{`{"error":"no image of generator \"web\" of octo/images on cloud \"sim-a\" has succeeded`}, []string{"img-"}},
	})
}
