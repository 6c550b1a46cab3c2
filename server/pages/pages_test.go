package pages_test

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// accessible checks what every page must have: a viewport for narrow
// screens, a language, and no state told by colour alone.
func accessible(t *testing.T, what, body string) {
	t.Helper()
	mustContain(t, what, body, `<meta name="viewport" content="width=device-width, initial-scale=1">`, `<html lang="en">`, `/assets/pages.css`)
	// Every state badge carries its text after the (aria-hidden) symbol.
	for _, m := range regexp.MustCompile(`<span class="state st-[a-z]+"><span aria-hidden="true">[^<]+</span> ([^<]*)</span>`).FindAllStringSubmatch(body, -1) {
		if strings.TrimSpace(m[1]) == "" {
			t.Errorf("%s: a state badge without text", what)
		}
	}
}

func TestListPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Recent: the index drops builds older than build.retention.
	base := time.Now().UTC().Add(-5 * time.Hour)
	// 30 builds of dstat in octo-org/images, alternating states, plus two others.
	for i := range 30 {
		st := builder.StateSucceeded
		if i%3 == 0 {
			st = builder.StateFailed
		}
		e.record(rec{id: fmt.Sprintf("d%02d", i), created: base.Add(time.Duration(i) * time.Minute),
			clouds: map[string]*builds.CloudRecord{"sim-a": {State: st}, "sim-b": {State: builder.StateSucceeded}}})
	}
	e.record(rec{id: "other-gen", generator: "htop", created: base.Add(time.Hour), clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning, Phase: builder.PhaseScript}}})
	e.record(rec{id: "other-repo", repo: "someone/else", created: base.Add(2 * time.Hour), clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateQueued}}})

	ids := func(body string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`<td data-label="Build"><a href="/builds/([^"]+)"><code>`).FindAllStringSubmatch(body, -1) {
			out = append(out, m[1])
		}
		return out
	}
	cases := []struct {
		name, query string
		first, last string
		n           int
		newer       bool
		older       string
	}{
		{"newest first, first page", "", "other-repo", "d07", 25, false, "/builds?page=2"},
		{"second page", "?page=2", "d06", "d00", 7, true, ""},
		{"past the end", "?page=3", "", "", 0, true, ""},
		{"by repository", "?repo=someone%2Felse", "other-repo", "other-repo", 1, false, ""},
		{"by generator", "?generator=htop", "other-gen", "other-gen", 1, false, ""},
		{"by state", "?state=failed&repo=octo-org%2Fimages", "d27", "d00", 10, false, ""},
		{"by state and generator, none", "?state=failed&generator=htop", "", "", 0, false, ""},
		{"by state, paged", "?state=succeeded&generator=dstat", "d29", "d01", 20, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.get("/builds" + c.query)
			if r.code != 200 {
				t.Fatalf("%d %s", r.code, r.body)
			}
			got := ids(r.body)
			if len(got) != c.n || (c.n > 0 && (got[0] != c.first || got[len(got)-1] != c.last)) {
				t.Fatalf("builds %v: want %d from %s to %s", got, c.n, c.first, c.last)
			}
			if strings.Contains(r.body, `rel="prev"`) != c.newer {
				t.Errorf("newer link present = %v, want %v", !c.newer, c.newer)
			}
			if c.older != "" {
				mustContain(t, c.name, r.body, `href="`+c.older+`" rel="next"`)
			} else {
				mustNotContain(t, c.name, r.body, `rel="next"`)
			}
			if c.n == 0 {
				mustContain(t, c.name, r.body, "<p>No builds")
			}
			accessible(t, c.name, r.body)
		})
	}
	r := e.get("/builds")
	mustContain(t, "list", r.body,
		`<th scope="col">State</th>`, `<caption>Builds, newest first</caption>`,
		`<span class="state st-pending"><span aria-hidden="true">▶</span> running: running script</span>`,
		`<span class="state st-fail"><span aria-hidden="true">✗</span> failed</span>`,
		`<a href="/generators/octo-org/images/htop">htop</a>`,
		`<a href="https://github.com/octo-org/images/commit/`+testSHA+`" title="`+testSHA+`"><code>3f78685</code></a>`,
		`<option value="failed">failed</option>`)
	// Filters keep their values, and paging links keep the filters.
	r = e.get("/builds?state=succeeded&generator=dstat")
	mustContain(t, "filters", r.body, `<option value="succeeded" selected>`, `name="generator" value="dstat"`)
	if r := e.get("/builds?state=sideways"); r.code != 400 {
		t.Errorf("unknown state: %d", r.code)
	}
}

func TestBuildPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := e.record(rec{id: "b-page", created: start, clouds: map[string]*builds.CloudRecord{
		"sim-a":  {State: builder.StateRunning, Phase: builder.PhaseSSH, Started: start, Attempts: 1},
		"sim-b":  {State: builder.StateFailed, Started: start, Finished: start.Add(75 * time.Second), ExitCode: 2, Attempts: 1, Error: "script exited 2: <script>alert(1)</script>"},
		"locked": {State: builder.StateWaiting, AsksPassword: true},
	}})
	r := e.get("/builds/" + b.ID)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	accessible(t, "build", r.body)
	mustContain(t, "build", r.body,
		`<a href="https://github.com/octo-org/images/commit/`+testSHA+`"><code>`+testSHA+`</code></a>`,
		`<a href="/generators/octo-org/images/dstat">dstat</a>`,
		`sha256:9a0364b9e99bb480`,
		`<th scope="row">sim-a</th>`,
		`<span aria-hidden="true">▶</span> running: waiting for SSH</span>`,
		`<span aria-hidden="true">✗</span> failed</span>`,
		`<span aria-hidden="true">⏸</span> waiting for a password</span>`,
		`script exited 2: &lt;script&gt;alert(1)&lt;/script&gt;`,
		`exit code 2`, `1m15s`, `<code>base-sim-b</code>`,
		`<a href="/builds/b-page/log/sim-b">log</a>`,
		// live while something runs: the stream, and a reload without JavaScript
		`data-events="/builds/b-page/events"`, `<noscript><meta http-equiv="refresh" content="10"></noscript>`, `/assets/live.js`,
		// the re-run form asks for the password of the password: ask cloud only
		`<input type="password" id="pw-locked" name="password_locked"`,
		`<input type="password" id="rerun-token" name="token"`)
	mustNotContain(t, "build", r.body, `<script>alert(1)`, `id="pw-sim-a"`)

	// Finished: shows the image, stops following.
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.State, c.Phase, c.Finished = builder.StateSucceeded, "", start.Add(3*time.Minute+5*time.Second)
		c.ImageID, c.ImageName = "img-0a1b2c", "dstat-20260301-1200-3f78685"
		c.Phases = []builder.PhaseTiming{{Phase: builder.PhaseLaunch, Duration: 2500 * time.Millisecond}, {Phase: builder.PhaseScript, Duration: 61 * time.Second}}
	})
	e.update(b.ID, "locked", func(c *builds.CloudRecord) { c.State = builder.StateCanceled })
	r = e.get("/builds/" + b.ID)
	mustContain(t, "finished build", r.body,
		`<div class="image-name">dstat-20260301-1200-3f78685</div><code class="image-id">img-0a1b2c</code>`,
		`3m05s`, `<li>launching 2.5s</li>`, `<li>running script 1m01s</li>`,
		`<span aria-hidden="true">⊘</span> canceled</span>`)
	mustNotContain(t, "finished build", r.body, `data-events=`, `http-equiv="refresh"`, `/assets/live.js`)

	if r := e.get("/builds/nope"); r.code != 404 || !strings.Contains(r.body, `There is no build &#34;nope&#34;`) {
		t.Errorf("unknown build: %d %s", r.code, r.body)
	}
}

func TestLogPage(t *testing.T) {
	e := newEnv(t, envOptions{logLimit: 300})
	b := e.record(rec{id: "b-log", clouds: map[string]*builds.CloudRecord{
		"sim-a": {State: builder.StateRunning},
		"sim-b": {State: builder.StateFailed, Error: "exit 1"},
	}})
	for i := range 8 {
		e.logLine(b.ID, "sim-a", builder.StreamStdout, fmt.Sprintf("line %d <b>bold</b> & [redacted]", i))
	}
	e.logLine(b.ID, "sim-b", builder.StreamStderr, "boom")
	r := e.get("/builds/b-log/log/sim-a")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	accessible(t, "log", r.body)
	// 300 bytes keep only the tail: the page says how many were dropped, and
	// the live tail starts right after the last line shown.
	lines, next, err := e.store.LogSince(context.Background(), b.ID, "sim-a", 0)
	if err != nil || next != 8 || len(lines) == 0 || len(lines) == 8 {
		t.Fatalf("LogSince: %d lines, next %d, %v (want a trimmed log of 8)", len(lines), next, err)
	}
	mustContain(t, "log", r.body,
		`line 7 &lt;b&gt;bold&lt;/b&gt; &amp; [redacted]`,
		fmt.Sprintf("%d earlier lines were dropped", 8-len(lines)),
		`data-events="/builds/b-log/log/sim-a/events?from=8"`,
		`<span class="s">[stdout]</span>`, `<a href="/builds/b-log">Build <code>b-log</code></a>`,
		`running</span>`)
	mustNotContain(t, "log", r.body, "<b>bold</b>", "line 0 ")

	r = e.get("/builds/b-log/log/sim-b")
	mustContain(t, "failed log", r.body, `<pre class="error" id="cloud-error">exit 1</pre>`, `[stderr]`, `boom`)
	mustNotContain(t, "failed log", r.body, "data-events=")
	if r := e.get("/builds/b-log/log/sim-c"); r.code != 404 || !strings.Contains(r.body, "it has: sim-a, sim-b") {
		t.Errorf("unknown cloud: %d", r.code)
	}
}

func TestGeneratorPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Recent: the lineage drops images older than build.retention.
	t0 := time.Now().UTC().Add(-3 * time.Hour)
	old := e.record(rec{id: "g-old", commit: "1111111111111111111111111111111111111111", created: t0,
		clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}, "sim-b": {State: builder.StateRunning}}})
	e.succeed(old, "sim-a", "img-a1", "dstat-a1", t0.Add(time.Minute))
	e.succeed(old, "sim-b", "img-b1", "dstat-b1", t0.Add(2*time.Minute))
	nw := e.record(rec{id: "g-new", commit: "2222222222222222222222222222222222222222", created: t0.Add(time.Hour),
		clouds: map[string]*builds.CloudRecord{"sim-b": {State: builder.StateRunning}}})
	e.succeed(nw, "sim-b", "img-b2", "dstat-b2", t0.Add(time.Hour+time.Minute))
	// another generator's image stays off this page
	other := e.record(rec{id: "g-other", generator: "htop", clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}}})
	e.succeed(other, "sim-a", "img-htop", "htop-1", t0)

	r := e.get("/generators/octo-org/images/dstat")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	accessible(t, "generator", r.body)
	mustContain(t, "generator", r.body, `<th scope="col">sim-a</th><th scope="col">sim-b</th>`,
		`href="/builds?generator=dstat&amp;repo=octo-org%2Fimages"`)
	mustNotContain(t, "generator", r.body, "img-htop")
	// Rows newest first; one row per build with each cloud's image in its column.
	rows := regexp.MustCompile(`(?s)<tr id="build-[^"]+">\n<td><time.*?</tr>`).FindAllString(r.body, -1)
	if len(rows) != 2 {
		t.Fatalf("want 2 rows, got %d:\n%s", len(rows), r.body)
	}
	mustContain(t, "newest row", rows[0], "commit/2222222", `<span class="hint">none</span>`, `<code class="image-id">img-b2</code>`, `href="/builds/g-new"`)
	mustContain(t, "oldest row", rows[1], "commit/1111111", `<code class="image-id">img-a1</code>`, `<code class="image-id">img-b1</code>`, "from <code>base-sim-a</code>")
	if strings.Index(rows[1], "img-a1") > strings.Index(rows[1], "img-b1") {
		t.Error("sim-a's image must be in the sim-a column, before sim-b's")
	}
	r = e.get("/generators/octo-org/images/nothing")
	mustContain(t, "empty generator", r.body, "No images recorded for this generator yet.")
}

func TestRerunForm(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "b-rerun", clouds: map[string]*builds.CloudRecord{
		"sim-a":  {State: builder.StateFailed, Error: "exit 1"},
		"locked": {State: builder.StateWaiting, AsksPassword: true},
	}})
	const password = "hunter2-very-secret-pw"
	post := func(c *http.Client, form url.Values) response {
		return e.do(c, http.MethodPost, "/builds/"+b.ID+"/rerun", strings.NewReader(form.Encode()), "Content-Type: application/x-www-form-urlencoded")
	}
	cases := []struct {
		name string
		form url.Values
		code int
		say  string
	}{
		{"no token", url.Values{"cloud": {"sim-a"}}, 401, "not a valid API token"},
		{"bad token", url.Values{"cloud": {"sim-a"}, "token": {"bad-token-0123456789"}}, 401, "not a valid API token"},
		{"no cloud", url.Values{"token": {apiToken}}, 400, "Choose at least one cloud"},
		{"password missing", url.Values{"token": {apiToken}, "cloud": {"locked"}}, 400, "need a password"},
		{"password for a cloud not re-run", url.Values{"token": {apiToken}, "cloud": {"sim-a"}, "password_locked": {password}}, 303, ""},
		{"unknown cloud", url.Values{"token": {apiToken}, "cloud": {"sim-z"}}, 400, "has no cloud"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(nil, c.form)
			if r.code != c.code {
				t.Fatalf("%d, want %d\n%s", r.code, c.code, r.body)
			}
			if c.say != "" {
				mustContain(t, c.name, r.body, c.say)
			}
			mustNotContain(t, c.name, r.body, password, apiToken)
		})
	}

	c := browser(t)
	r := post(c, url.Values{"token": {apiToken}, "cloud": {"sim-a", "locked"}, "password_locked": {password}})
	if r.code != http.StatusSeeOther {
		t.Fatalf("re-run: %d %s", r.code, r.body)
	}
	newID := strings.TrimPrefix(r.header.Get("Location"), "/builds/")
	nb, _, err := e.store.Get(context.Background(), newID)
	if err != nil {
		t.Fatalf("new build %q: %v", newID, err)
	}
	if nb.RerunOf != b.ID || len(nb.Clouds) != 2 || nb.Clouds["locked"] == nil {
		t.Errorf("new build: %+v", nb)
	}
	// The token was good, so the browser is signed in and the new page opens.
	if r := e.do(c, http.MethodGet, "/builds/"+newID, nil); r.code != 200 || !strings.Contains(r.body, "Re-run of") {
		t.Errorf("new build's page: %d", r.code)
	}
	old, _, _ := e.store.Get(context.Background(), b.ID)
	if old.Clouds["locked"].State != builder.StateCanceled {
		t.Errorf("old waiting cloud: %s, want canceled (re-run elsewhere)", old.Clouds["locked"].State)
	}
	// The password travels sealed: never in the logs, nor in Redis in clear.
	if strings.Contains(e.logs.String(), password) {
		t.Error("the password reached the logs")
	}
	keys, err := e.rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		dump, _ := e.rdb.Dump(context.Background(), k).Result()
		if strings.Contains(dump, password) {
			t.Errorf("Redis key %s holds the password in clear", k)
		}
	}
}

// TestGoldenBuildPage compares a finished build's page with the golden file
// (go test -run Golden -update rewrites it).
func TestGoldenBuildPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	b := e.record(rec{id: "0123456789abcdef", created: t0, clouds: map[string]*builds.CloudRecord{
		"sim-a":  {State: builder.StateRunning, Started: t0.Add(time.Second), Attempts: 1},
		"sim-b":  {State: builder.StateFailed, Started: t0.Add(time.Second), Finished: t0.Add(47 * time.Second), Attempts: 2, ExitCode: 100, Error: "script exited 100\nE: Unable to locate package dstat"},
		"locked": {State: builder.StateCanceled, AsksPassword: true, Finished: t0, Error: "re-run as build fedcba9876543210"},
	}})
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.State, c.Finished = builder.StateSucceeded, t0.Add(2*time.Minute+13*time.Second)
		c.ImageID, c.ImageName = "ami-0a1b2c3d4e5f67890", "dstat-20260301-1200-3f78685"
		c.Phases = []builder.PhaseTiming{
			{Phase: builder.PhaseLaunch, Duration: 12300 * time.Millisecond}, {Phase: builder.PhaseSSH, Duration: 20 * time.Second},
			{Phase: builder.PhaseScript, Duration: 64 * time.Second}, {Phase: builder.PhaseSnapshot, Duration: 35 * time.Second},
		}
	})
	r := e.get("/builds/" + b.ID)
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	golden := filepath.Join("testdata", "golden", "build.html")
	if *update {
		if err := os.WriteFile(golden, []byte(r.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to make it)", err)
	}
	if r.body != string(want) {
		t.Errorf("the build page differs from %s (go test -run Golden -update, then review the diff):\n%s", golden, r.body)
	}
}
