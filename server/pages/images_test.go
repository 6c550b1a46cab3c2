package pages_test

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
)

// withScript records a build of dstat whose spec has the given script.
func (e *env) withScript(id, commit, script string, created time.Time) *builds.Build {
	e.t.Helper()
	sp := &spec.Spec{Name: "dstat", File: ".imagegen/dstat.yaml", Script: script, Clouds: map[string]spec.CloudSpec{"sim-a": {Image: "base-sim-a"}}}
	sp.Digest = spec.ComputeDigest(sp)
	b := &builds.Build{ID: id, Repo: testRepo, Commit: commit, Ref: "refs/heads/main", Generator: "dstat", SpecFile: sp.File, Digest: sp.Digest, Created: created,
		Clouds: map[string]*builds.CloudRecord{"sim-a": {Cloud: "sim-a", State: builder.StateRunning, BaseImage: "base-sim-a", Queued: created}}}
	if ok, err := e.store.Create(context.Background(), b, sp); err != nil || !ok {
		e.t.Fatalf("create build: %v %v", ok, err)
	}
	return b
}

// TestImageSearch: the search box takes an image id to its build's row on
// the lineage page; an id on two clouds asks which; an unknown id says
// imagegen has no record of it and what still knows.
func TestImageSearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	t0 := time.Now().UTC().Add(-2 * time.Hour)
	b := e.record(rec{id: "g-1", created: t0, clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}, "sim-b": {State: builder.StateRunning}}})
	e.succeed(b, "sim-a", "img-1", "dstat-a1", t0.Add(time.Minute))
	e.succeed(b, "sim-b", "img-1", "dstat-b1", t0.Add(time.Minute))
	o := e.record(rec{id: "g-2", created: t0, clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}}})
	e.succeed(o, "sim-a", "img-2", "dstat-a2", t0.Add(2*time.Minute))

	r := e.get("/builds")
	accessible(t, "list with search box", r.body)
	mustContain(t, "search box", r.body, `<form class="image-search" role="search" method="get" action="/images">`, `<label for="image-search">Image id</label>`)

	r = e.get("/images?id=img-2")
	if r.code != http.StatusSeeOther || r.header.Get("Location") != "/generators/octo-org/images/dstat#build-g-2" {
		t.Errorf("search img-2: %d Location %q", r.code, r.header.Get("Location"))
	}
	r = e.get("/images?id=img-1")
	if r.code != http.StatusConflict {
		t.Errorf("search img-1 (two clouds): %d", r.code)
	}
	accessible(t, "choice", r.body)
	mustContain(t, "choice", r.body, `Image id &#34;img-1&#34; is on more than one cloud: choose one.`,
		`<a href="/images?cloud=sim-a&amp;id=img-1">dstat-a1 on sim-a: dstat in octo-org/images</a>`, `<a href="/images?cloud=sim-b&amp;id=img-1">`)
	if r = e.get("/images?id=img-1&cloud=sim-b"); r.code != http.StatusSeeOther || r.header.Get("Location") != "/generators/octo-org/images/dstat#build-g-1" {
		t.Errorf("search img-1 on sim-b: %d %q", r.code, r.header.Get("Location"))
	}
	r = e.get("/images?id=%3Cb%3Eami-0%3C%2Fb%3E")
	if r.code != http.StatusNotFound {
		t.Errorf("search unknown: %d", r.code)
	}
	mustContain(t, "unknown", r.body, `imagegen has no record of image &#34;&lt;b&gt;ami-0&lt;/b&gt;&#34;`, "imagegen trace --config FILE --cloud NAME")
	if r = e.get("/images?id="); r.code != http.StatusBadRequest {
		t.Errorf("empty search: %d", r.code)
	}
	if r = e.do(nil, http.MethodGet, "/images?id=img-2", nil); r.code == http.StatusSeeOther {
		t.Errorf("search without a token (read_access: token) redirected to the lineage")
	}
}

// TestLineageChanges: the lineage page says, row by row, what changed since
// the build before: the script's diff (escaped: the script is the
// repository's), the commits' comparison, the base image.
func TestLineageChanges(t *testing.T) {
	e := newEnv(t, envOptions{})
	t0 := time.Now().UTC().Add(-2 * time.Hour)
	b1 := e.withScript("l-1", "1111111111111111111111111111111111111111", "echo one\n", t0)
	e.succeed(b1, "sim-a", "img-1", "dstat-1", t0.Add(time.Minute))
	b2 := e.withScript("l-2", "2222222222222222222222222222222222222222", "echo one\necho <script>alert(1)</script>\n", t0.Add(time.Hour))
	e.succeed(b2, "sim-a", "img-2", "dstat-2", t0.Add(time.Hour+time.Minute))

	r := e.get("/generators/octo-org/images/dstat")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	accessible(t, "lineage", r.body)
	rows := regexp.MustCompile(`(?s)<tr id="build-[^"]+">\n<td><time.*?</tr>`).FindAllString(r.body, -1)
	if len(rows) != 2 {
		t.Fatalf("want 2 rows, got %d", len(rows))
	}
	mustContain(t, "newest row", rows[0], `<tr id="build-l-2">`, `<summary>script changed</summary>`,
		`since build <a href="/builds/l-1"><code>l-1</code></a>, on sim-a`,
		`/octo-org/images/compare/1111111111111111111111111111111111111111...2222222222222222222222222222222222222222">the commits between</a>`,
		"&#43;echo &lt;script&gt;alert(1)&lt;/script&gt;", "packages: no package manifest is recorded for these images")
	mustNotContain(t, "newest row", rows[0], "<script>")
	mustContain(t, "oldest row", rows[1], `<summary>first image</summary>`)
	mustNotContain(t, "oldest row", rows[1], "packages:")
}
