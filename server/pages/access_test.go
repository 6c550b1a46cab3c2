package pages_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/server/pages"
)

const (
	otherToken = "other-token-0123456789abcdef"  // a second plain token
	orgToken   = "org-read-token-0123456789abcd" // read, octo-org/* only
	otherRepo  = "someone-else/images"           // a repository orgToken does not see
	loginForm  = "Content-Type: application/x-www-form-urlencoded"
	limitedMsg = "Too many failed sign-ins from your address. Try again in "
)

// signIn posts the login form with token from client (a cookie jar) and
// returns the answer.
func (e *env) signIn(client *http.Client, token, next string, headers ...string) response {
	e.t.Helper()
	form := url.Values{"token": {token}, "next": {next}}
	return e.do(client, http.MethodPost, "/login", strings.NewReader(form.Encode()), append([]string{loginForm}, headers...)...)
}

// TestLoginNext: after signing in, the browser goes back to the page it
// came from, and never anywhere else: every hostile next goes to /builds
// (or to its cleaned, same-origin path).
func TestLoginNext(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct{ next, want string }{
		{"", "/builds"},
		{"/builds/abc", "/builds/abc"},
		{"/builds?repo=octo-org/images&state=failed", "/builds?repo=octo-org/images&state=failed"},
		{"/generators/octo-org/images/dstat", "/generators/octo-org/images/dstat"},
		{"/builds/x#frag", "/builds/x"},
		{"/\t/example.org/", "/builds"}, // browsers drop the tab: //example.org/
		{"/\n/example.org/", "/builds"},
		{"/\r\n/example.org", "/builds"},
		{"\t//example.org", "/builds"},
		{"//example.org/", "/builds"},
		{"///example.org", "/builds"},
		{"/\\example.org", "/builds"}, // browsers read \ as /
		{"/\\/example.org", "/builds"},
		{"\\\\example.org", "/builds"},
		{"/%09/example.org/", "/builds"},
		{"/%5Cexample.org", "/builds"},
		{"/%5C%5Cexample.org", "/builds"},
		{"https://example.org/", "/builds"},
		{"http:/example.org", "/builds"},
		{"HTTPS://example.org", "/builds"},
		{"javascript:alert(1)", "/builds"},
		{"data:text/html,hi", "/builds"},
		{" //example.org", "/builds"},
		{"/ /example.org", "/builds"},
		{"/\x00/example.org", "/builds"},
		{"/\x7f/example.org", "/builds"},
		{"/\u00a0/example.org", "/builds"},
		{"/\u3000/example.org", "/builds"},
		{"/builds/../..//example.org", "/example.org"}, // cleaned: a path on this server
		{"/.//example.org", "/example.org"},
		{"/builds?next=//example.org", "/builds?next=//example.org"}, // a query is not where a browser goes
		{"/" + strings.Repeat("a", 3000), "/builds"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.next), func(t *testing.T) {
			r := e.signIn(browser(t), apiToken, c.next)
			loc := r.header.Get("Location")
			if r.code != http.StatusSeeOther || loc != c.want {
				t.Fatalf("%d to %q, want 303 to %q", r.code, loc, c.want)
			}
			// What a browser makes of it: tabs and newlines dropped, \ read as /.
			seen := strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(loc)
			u, err := url.Parse("https://imagegen.example.org/login")
			if err != nil {
				t.Fatal(err)
			}
			to, err := u.Parse(seen)
			if err != nil || to.Host != "imagegen.example.org" {
				t.Errorf("Location %q leaves the site (%v, %v)", loc, to, err)
			}
		})
	}
	// The sign-in page carries next in its form the same way.
	r := e.do(nil, http.MethodGet, "/login?next="+url.QueryEscape("/\t/example.org/"), nil)
	mustContain(t, "login page", r.body, `name="next" value="/builds"`)
}

// TestSessionRevokedWithToken: a session opens pages only while the token
// that made it is configured. Restarted without that token (same Redis,
// same keys), the server refuses its sessions; another token's still work.
func TestSessionRevokedWithToken(t *testing.T) {
	both := "[" + apiToken + ", " + otherToken + "]"
	e := newEnv(t, envOptions{apiTokens: both})
	e.record(rec{id: "b1", clouds: map[string]*builds.CloudRecord{"sim-a": {State: "queued"}}})
	removed, kept := browser(t), browser(t)
	for c, tok := range map[*http.Client]string{removed: apiToken, kept: otherToken} {
		if r := e.signIn(c, tok, "/builds"); r.code != http.StatusSeeOther {
			t.Fatalf("sign in: %d", r.code)
		}
		if r := e.do(c, http.MethodGet, "/builds/b1", nil); r.code != 200 {
			t.Fatalf("signed in: %d", r.code)
		}
	}
	// The same service, restarted with apiToken removed from api_tokens.
	after := newEnv(t, envOptions{redis: e.redis, apiTokens: "[" + otherToken + "]"})
	for _, p := range []string{"/builds", "/builds/b1", "/builds/b1/log/sim-a"} {
		r := after.do(removed, http.MethodGet, p, nil)
		if r.code != http.StatusUnauthorized {
			t.Errorf("GET %s with the removed token's session: %d, want 401", p, r.code)
		}
		mustContain(t, p, r.body, "These pages need a signed link (as placed on GitHub) or an API token.")
		if r := after.do(kept, http.MethodGet, p, nil); r.code != 200 {
			t.Errorf("GET %s with the kept token's session: %d, want 200", p, r.code)
		}
	}
	// Put back, the token's sessions open again: they were refused for the
	// token, not lost.
	back := newEnv(t, envOptions{redis: e.redis, apiTokens: both})
	if r := back.do(removed, http.MethodGet, "/builds/b1", nil); r.code != 200 {
		t.Errorf("with the token configured again: %d", r.code)
	}
	// A session is tied to the token's value, not its place in the list.
	swapped := newEnv(t, envOptions{redis: e.redis, apiTokens: "[" + otherToken + ", " + apiToken + "-rotated]"})
	if r := swapped.do(removed, http.MethodGet, "/builds/b1", nil); r.code != http.StatusUnauthorized {
		t.Errorf("with the token rotated: %d, want 401", r.code)
	}
}

// TestPagesRepoLimit: a token limited to octo-org/* sees none of another
// repository's builds on the pages — signed in or by bearer token — but a
// signed link to one still opens it.
func TestPagesRepoLimit(t *testing.T) {
	e := newEnv(t, envOptions{apiTokens: fmt.Sprintf(`[%s, {token: %s, scopes: [read], repos: ["octo-org/*"]}]`, apiToken, orgToken)})
	mine := e.record(rec{id: "mine", clouds: map[string]*builds.CloudRecord{"sim-a": {State: "failed"}}})
	theirs := e.record(rec{id: "theirs", repo: otherRepo, clouds: map[string]*builds.CloudRecord{"sim-a": {State: "failed"}}})
	e.logLine(theirs.ID, "sim-a", "stdout", "their secret-ish output")
	e.succeed(mine, "sim-a", "img-mine", "dstat-mine", time.Now().UTC())
	e.succeed(theirs, "sim-a", "img-theirs", "dstat-theirs", time.Now().UTC())

	session := browser(t)
	if r := e.signIn(session, orgToken, "/builds"); r.code != http.StatusSeeOther {
		t.Fatalf("sign in: %d", r.code)
	}
	bearer := "Authorization: Bearer " + orgToken
	cases := []struct {
		path      string
		code      int
		want, not string
	}{
		{"/builds", 200, "/builds/mine", "/builds/theirs"},
		{"/builds?repo=" + url.QueryEscape(otherRepo), 200, "Builds", "/builds/theirs"},
		{"/builds/mine", 200, "dstat", ""},
		{"/builds/theirs", 404, `There is no build &#34;theirs&#34;`, otherRepo},
		{"/builds/theirs/log/sim-a", 404, "There is no build", "secret-ish"},
		{"/builds/theirs/events", 404, "There is no build", ""},
		{"/builds/theirs/log/sim-a/events", 404, "There is no build", "secret-ish"},
		{"/generators/octo-org/images/dstat", 200, "img-mine", ""},
		{"/generators/" + otherRepo + "/dstat", 200, "dstat", "img-theirs"},
	}
	for _, c := range cases {
		for how, do := range map[string]func() response{
			"session": func() response { return e.do(session, http.MethodGet, c.path, nil) },
			"bearer":  func() response { return e.do(nil, http.MethodGet, c.path, nil, bearer) },
		} {
			r := do()
			if r.code != c.code {
				t.Errorf("GET %s (%s): %d, want %d", c.path, how, r.code, c.code)
				continue
			}
			mustContain(t, c.path, r.body, c.want)
			if c.not != "" {
				mustNotContain(t, c.path+" ("+how+")", r.body, c.not)
			}
		}
	}
	// The full token sees both.
	if r := e.get("/builds/theirs"); r.code != 200 {
		t.Errorf("the unlimited token: %d", r.code)
	}
	// A link from GitHub opens its build, signed in or not.
	p := pages.BuildPath(theirs.ID)
	link := p + "?t=" + e.signer.Token(p, time.Now().Add(time.Hour))
	if r := e.do(session, http.MethodGet, link, nil); r.code != 200 {
		t.Errorf("a signed link to the other repository's build, signed in: %d", r.code)
	}
	if r := e.do(session, http.MethodGet, p+"/log/sim-a", nil); r.code != 200 || !strings.Contains(r.body, "secret-ish") {
		t.Errorf("its log through the link's cookie: %d", r.code)
	}

	// The re-run form: the token must see the build and have the rerun scope.
	rerun := func(c *http.Client, id, token string) response {
		form := url.Values{"token": {token}, "cloud": {"sim-a"}}
		return e.do(c, http.MethodPost, "/builds/"+id+"/rerun", strings.NewReader(form.Encode()), loginForm)
	}
	r := rerun(nil, "mine", orgToken)
	if r.code != http.StatusForbidden {
		t.Errorf("re-run with a read-only token: %d", r.code)
	}
	mustContain(t, "read-only re-run", r.body, "That token may not re-run builds: it lacks the rerun scope.")
	if r := rerun(nil, "theirs", orgToken); r.code != http.StatusNotFound || strings.Contains(r.body, otherRepo) {
		t.Errorf("re-run of a build the token does not see: %d, want 404 without the build", r.code)
	}
	// Nobody with a wrong token learns anything about the build.
	r = rerun(nil, "theirs", "wrong-token-0123456789abcdef")
	if r.code != http.StatusUnauthorized {
		t.Errorf("re-run with a wrong token: %d", r.code)
	}
	mustContain(t, "wrong-token re-run", r.body, "That is not a valid API token.")
	mustNotContain(t, "wrong-token re-run", r.body, otherRepo, "img-theirs", "sim-a")
}

// TestPagesPublic: read_access: public opens the lists, builds and lineage
// to everyone; logs still need a link or a token unless public_logs.
func TestPagesPublic(t *testing.T) {
	cases := []struct {
		name  string
		extra string
		log   int
	}{
		{"public", "read_access: public\n", 401},
		{"public with public_logs", "read_access: public\npublic_logs: true\n", 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{extra: c.extra})
			b := e.record(rec{id: "b1", clouds: map[string]*builds.CloudRecord{"sim-a": {State: "failed"}}})
			e.logLine(b.ID, "sim-a", "stdout", "hello from the log")
			e.succeed(b, "sim-a", "img-b1", "dstat-b1", time.Now().UTC())
			for _, p := range []string{"/builds", "/builds/b1", "/generators/octo-org/images/dstat"} {
				if r := e.do(nil, http.MethodGet, p, nil); r.code != 200 {
					t.Errorf("GET %s anonymous: %d", p, r.code)
				}
			}
			r := e.do(nil, http.MethodGet, "/builds/b1/log/sim-a", nil)
			if r.code != c.log {
				t.Fatalf("the log anonymous: %d, want %d", r.code, c.log)
			}
			if c.log == 401 {
				mustContain(t, "log", r.body, "Build logs need a signed link (as placed on GitHub) or an API token.")
				mustNotContain(t, "log", r.body, "hello from the log")
				if r := e.do(nil, http.MethodGet, "/builds/b1/log/sim-a/events", nil); r.code != 401 {
					t.Errorf("the live log anonymous: %d", r.code)
				}
			}
			// A link and a token open the log either way.
			p := pages.BuildPath(b.ID) + "/log/sim-a"
			if r := e.do(nil, http.MethodGet, p+"?t="+e.signer.Token(p, time.Now().Add(time.Hour)), nil); r.code != 200 {
				t.Errorf("the log by link: %d", r.code)
			}
			if r := e.get(p); r.code != 200 {
				t.Errorf("the log by token: %d", r.code)
			}
			// A wrong token is refused, not ignored.
			r = e.do(nil, http.MethodGet, "/builds", nil, "Authorization: Bearer wrong-token-0123456789abcdef")
			if r.code != 401 {
				t.Errorf("a wrong token on a public page: %d", r.code)
			}
			mustContain(t, "wrong token", r.body, "That is not a valid API token.")
		})
	}
}

// TestLoginFailureLimit: 300 wrong tokens on /login from one address get
// 10 answers of 401, then 429 with Retry-After, the right token too; the
// API's failures count towards the same limit; other addresses go on. The
// log has the address, not the token.
func TestLoginFailureLimit(t *testing.T) {
	e := newEnv(t, envOptions{extra: "trusted_proxies: [127.0.0.1/32]\n"})
	const wrong = "wrong-login-token-0123456789"
	from := func(ip string) string { return "X-Forwarded-For: " + ip }
	counts := map[int]int{}
	start := time.Now()
	var last response
	for range 300 {
		r := e.signIn(browser(t), wrong, "/builds", from("203.0.113.7"))
		counts[r.code]++
		if r.code == http.StatusTooManyRequests {
			last = r
		}
	}
	t.Logf("300 wrong tokens on /login in %s", time.Since(start))
	if counts[401] != 10 || counts[429] != 290 {
		t.Errorf("answers %v; want 10 × 401 and 290 × 429", counts)
	}
	retry := last.header.Get("Retry-After")
	if retry == "" || retry == "0" {
		t.Errorf("Retry-After %q", retry)
	}
	mustContain(t, "429", last.body, limitedMsg+retry+" seconds.", `name="token"`)
	if r := e.signIn(browser(t), apiToken, "/builds", from("203.0.113.7")); r.code != http.StatusTooManyRequests {
		t.Errorf("the right token from the limited address: %d, want 429", r.code)
	}
	if r := e.do(nil, http.MethodGet, "/builds", nil, "Authorization: Bearer "+apiToken, from("203.0.113.7")); r.code != http.StatusTooManyRequests {
		t.Errorf("a page with a bearer token from the limited address: %d, want 429", r.code)
	}
	if r := e.signIn(browser(t), apiToken, "/builds", from("203.0.113.8")); r.code != http.StatusSeeOther {
		t.Errorf("another address: %d, want 303", r.code)
	}
	// The API and the pages share one limit.
	for range 10 {
		e.do(nil, http.MethodGet, "/api/v1/builds", nil, "Authorization: Bearer "+wrong, from("203.0.113.9"))
	}
	if r := e.signIn(browser(t), apiToken, "/builds", from("203.0.113.9")); r.code != http.StatusTooManyRequests {
		t.Errorf("/login after 10 failures on the API: %d, want 429", r.code)
	}
	logs := e.logs.String()
	for _, want := range []string{`"client":"203.0.113.7","where":"pages POST /login"`, `"client":"203.0.113.9","where":"api GET /api/v1/builds"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s", want)
		}
	}
	if strings.Contains(logs, wrong) || strings.Contains(logs, apiToken) {
		t.Error("the log holds a token")
	}
}
