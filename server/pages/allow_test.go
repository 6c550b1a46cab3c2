package pages_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

// TestRerunFormHonoursAllow: the build page's re-run form, with a token that
// may re-run, is refused for a cloud whose allow rule does not take the
// build's repository: 403, the reason on the page, no build made.
func TestRerunFormHonoursAllow(t *testing.T) {
	e := newEnv(t, envOptions{extra: "allow: {repos: [\"fg/*\"]}\n"})
	b := e.record(rec{id: "b-allow", clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateFailed, Error: "exit 1"}}})
	form := url.Values{"token": {apiToken}, "cloud": {"sim-a"}}
	r := e.do(nil, http.MethodPost, "/builds/"+b.ID+"/rerun", strings.NewReader(form.Encode()), "Content-Type: application/x-www-form-urlencoded")
	if r.code != http.StatusForbidden {
		t.Fatalf("%d, want 403\n%s", r.code, r.body)
	}
	mustContain(t, "refused re-run", r.body, "cloud sim-a does not allow repository octo-org/images (top-level allow.repos: fg/*)")
	if bs, err := e.store.List(context.Background(), builds.ListOptions{}); err != nil || len(bs) != 1 {
		t.Errorf("%d builds (%v) after a refused re-run; want the one", len(bs), err)
	}
}
