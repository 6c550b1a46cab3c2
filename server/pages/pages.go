// Package pages serves imagegen's build pages in the browser: the build list,
// a build, a cloud's log with live tail, a generator's image lineage, and re-runs.
package pages

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/server/access"
	"github.com/imagegen/imagegen/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options are what the pages need.
type Options struct {
	Config *config.Config
	Store  *store.Store
	Reruns *builds.Reruns // re-runs from the build page
	Logger *slog.Logger
	// Access is who may see what, shared with the API (one failure limit
	// for both); nil: made from Config.
	Access *access.Policy
	// Poll is how often a live tail looks for new lines and states; default 500ms.
	Poll time.Duration
	// Refresh is how often a running build's page reloads itself when
	// JavaScript is off; default 10s.
	Refresh time.Duration
	// Now is the clock (nil: time.Now), for durations of running builds.
	Now func() time.Time
}

// Pages are the HTTP handlers of the build pages.
type Pages struct {
	cfg     *config.Config
	store   *store.Store
	reruns  *builds.Reruns
	log     *slog.Logger
	access  *access.Policy
	signer  *Signer
	poll    time.Duration
	refresh time.Duration
	now     func() time.Time
	secure  bool // cookies only over https, when the base URL is https
	tmpl    map[string]*template.Template
	web     string         // the GitHub web URL, for commit links
	images  *builds.Images // what changed between images (images.go)
}

// pageNames are the templates, each rendered inside layout.html.
var pageNames = []string{"list", "build", "log", "generator", "error", "login"}

// New prepares the pages; it fails only on a broken template.
func New(o Options) (*Pages, error) {
	if o.Config == nil || o.Store == nil || o.Reruns == nil {
		return nil, errors.New("pages: Config, Store and Reruns are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Poll <= 0 {
		o.Poll = 500 * time.Millisecond
	}
	if o.Refresh <= 0 {
		o.Refresh = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Access == nil {
		o.Access = access.New(o.Config, o.Logger)
	}
	p := &Pages{
		cfg: o.Config, store: o.Store, reruns: o.Reruns, log: o.Logger, access: o.Access, signer: NewSigner(o.Config),
		poll: o.Poll, refresh: o.Refresh, now: o.Now, tmpl: map[string]*template.Template{},
		secure: strings.HasPrefix(o.Config.BaseURL, "https://"),
		web:    githubWeb(o.Config.GitHub.APIURL),
		images: builds.NewImages(o.Config, o.Store, nil),
	}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("pages: template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	if !p.signer.Enabled() {
		o.Logger.Warn("build page links are not signed: set pages.link_key or encryption_key so links on GitHub open without a login")
	}
	return p, nil
}

// Register builds the pages and adds their routes to e. The server calls it
// once while building its routes.
func Register(e *echo.Echo, o Options) error {
	p, err := New(o)
	if err != nil {
		return err
	}
	p.Routes(e)
	return nil
}

// Routes adds the pages' routes to e.
func (p *Pages) Routes(e *echo.Echo) {
	static, _ := fs.Sub(staticFS, "static")
	e.GET("/assets/*", echo.WrapHandler(http.StripPrefix("/assets/", http.FileServer(http.FS(static)))))
	e.GET("/login", p.loginPage)
	small := middleware.BodyLimit("64K") // a token, a few cloud names and passwords
	e.POST("/login", p.login, small)
	e.GET("/builds", p.auth(readsBuilds, p.list))
	e.GET("/builds/:id", p.auth(readsBuilds, p.build))
	e.GET("/builds/:id/events", p.auth(readsBuilds, p.buildEvents))
	e.GET("/builds/:id/manifests/:cloud", p.auth(readsBuilds, p.manifest))
	e.GET("/builds/:id/log/:cloud", p.auth(readsLogs, p.logPage))
	e.GET("/builds/:id/log/:cloud/events", p.auth(readsLogs, p.logEvents))
	e.POST("/builds/:id/rerun", p.rerun, small)
	e.GET("/generators/:owner/:repo/:generator", p.auth(readsBuilds, p.generator))
	e.GET("/images", p.auth(readsBuilds, p.searchImage))
}

// SignedURL is a link to path that opens without a login for ttl.
func (p *Pages) SignedURL(path string, ttl time.Duration) string {
	return p.signer.SignedURL(p.cfg.BaseURL, path, ttl)
}

// What a page shows, for the read rule.
type reads int

const (
	readsBuilds reads = iota // builds and lineage: read_access: public opens them
	readsLogs                // build logs: public only with public_logs too
)

// auth lets a request through with an API token (bearer or session), a
// signed link, or when read_access opens what the page shows to everyone;
// it answers 401 with a sign-in page otherwise, and 429 to a client over
// the failure limit. Which repositories a token sees is left to the page.
func (p *Pages) auth(what reads, next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		now := p.now()
		v, err := p.authorize(c, r.URL.Path, now)
		var lim *access.LimitedError
		if errors.As(err, &lim) {
			return p.tooMany(c, "error", lim)
		}
		public := p.access.Public()
		if what == readsLogs {
			public = p.access.PublicLogs()
		}
		if errors.Is(err, access.ErrInvalid) || (v.token == nil && !v.link && !public) {
			msg := "These pages need a signed link (as placed on GitHub) or an API token."
			switch {
			case errors.Is(err, access.ErrInvalid):
				msg = "That is not a valid API token."
			case errors.Is(err, ErrExpired):
				msg = "This link has expired. Sign in with an API token to see the page."
			case err != nil:
				msg = "This link is not valid for this page. Sign in with an API token to see the page."
			case what == readsLogs && p.access.Public():
				msg = "Build logs need a signed link (as placed on GitHub) or an API token."
			}
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="imagegen"`)
			return p.render(c, http.StatusUnauthorized, "login", loginData{
				Page: Page{Title: "Sign in"}, Message: msg, Next: r.URL.Path, Tokens: p.access.HasTokens(),
			})
		}
		if t := r.URL.Query().Get("t"); v.link && t != "" && p.signer.Verify(r.URL.Path, t, now) == nil {
			p.setLinkCookie(c.Response(), r.URL.Path, t)
		}
		c.Set(viewerKey, v)
		return next(c)
	}
}

// viewerKey holds the request's viewer in the echo context.
const viewerKey = "viewer"

func viewerOf(c echo.Context) viewer {
	v, _ := c.Get(viewerKey).(viewer)
	return v
}

// mayRead reports whether v may see repo's builds and lineage: a link
// (auth checked it covers the page), read_access: public, or a token with
// read on repo.
func (p *Pages) mayRead(v viewer, repo string) bool {
	return v.link || p.access.MayRead(v.token, repo)
}

// mayReadLogs is mayRead for build logs.
func (p *Pages) mayReadLogs(v viewer, repo string) bool {
	return v.link || p.access.MayReadLogs(v.token, repo)
}

// tooMany answers a client over the failure limit: 429, Retry-After, and
// the page (login or error) saying when to try again.
func (p *Pages) tooMany(c echo.Context, page string, lim *access.LimitedError) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(lim.Seconds()))
	msg := fmt.Sprintf("Too many failed sign-ins from your address. Try again in %d seconds.", lim.Seconds())
	if page == "login" {
		return p.render(c, http.StatusTooManyRequests, "login", loginData{
			Page: Page{Title: "Sign in"}, Message: msg, Next: safeNext(c.FormValue("next")), Tokens: p.access.HasTokens(),
		})
	}
	return p.errorPage(c, http.StatusTooManyRequests, msg)
}

// Page is what every page's layout needs.
type Page struct {
	Title   string
	Refresh int  // seconds between reloads without JavaScript; 0: none
	Live    bool // load the live-tail script
}

func (p *Pages) render(c echo.Context, code int, name string, data any) error {
	var b strings.Builder
	if err := p.tmpl[name].ExecuteTemplate(&b, "layout", data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // a ?t= must not leak to the sites a page links to
	h.Set("Cache-Control", "no-store")
	return c.HTML(code, b.String())
}

func (p *Pages) errorPage(c echo.Context, code int, msg string) error {
	return p.render(c, code, "error", errorData{Page: Page{Title: http.StatusText(code)}, Code: code, Message: msg})
}

type errorData struct {
	Page
	Code    int
	Message string
	Links   []link // choices (an image id on several clouds)
}

type loginData struct {
	Page
	Message string
	Next    string
	Tokens  bool // api_tokens are configured
}

func (p *Pages) loginPage(c echo.Context) error {
	return p.render(c, http.StatusOK, "login", loginData{Page: Page{Title: "Sign in"}, Next: safeNext(c.QueryParam("next")), Tokens: p.access.HasTokens()})
}

// login signs a browser in with an API token, then goes back to the page.
// Failures count towards the client's limit, as the API's do.
func (p *Pages) login(c echo.Context) error {
	next := safeNext(c.FormValue("next"))
	t, err := p.access.Authenticate(c.RealIP(), c.FormValue("token"), "pages POST /login")
	var lim *access.LimitedError
	switch {
	case errors.As(err, &lim):
		return p.tooMany(c, "login", lim)
	case err != nil:
		return p.render(c, http.StatusUnauthorized, "login", loginData{
			Page: Page{Title: "Sign in"}, Message: "That is not a valid API token.", Next: next, Tokens: p.access.HasTokens(),
		})
	}
	p.setSession(c.Response(), t, p.now())
	return c.Redirect(http.StatusSeeOther, next)
}

// safeNext keeps a redirect on this server: an absolute path, cleaned, with
// its query; anything else goes to the build list. A browser drops tabs and
// newlines from a URL and reads "\" as "/", so "/\t/example.org" or
// "/\\example.org" would leave the site: control characters, backslashes,
// spaces and non-ASCII are refused outright, raw or percent-encoded.
func safeNext(s string) string {
	const home = "/builds"
	if len(s) > 2048 || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return home
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return home
	}
	for _, part := range []string{s, u.Path, u.RawQuery} {
		if strings.IndexFunc(part, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '\\' }) >= 0 {
			return home
		}
	}
	clean := path.Clean(u.EscapedPath())
	if !strings.HasPrefix(clean, "/") || strings.HasPrefix(clean, "//") {
		return home
	}
	if u.RawQuery != "" {
		clean += "?" + u.RawQuery
	}
	return clean
}

// getBuild reads the build of the :id param; a missing one, or one the
// viewer may not see (a token limited to other repositories), is a 404 page.
func (p *Pages) getBuild(c echo.Context) (*builds.Build, error) {
	b, err := p.readBuild(c)
	if b != nil && !p.mayRead(viewerOf(c), b.Repo) {
		return nil, p.noBuild(c)
	}
	return b, err
}

// readBuild reads the build of the :id param, whoever asks; a missing one is a 404 page.
func (p *Pages) readBuild(c echo.Context) (*builds.Build, error) {
	b, _, err := p.store.Get(c.Request().Context(), c.Param("id"))
	if errors.Is(err, builds.ErrNotFound) {
		return nil, p.noBuild(c)
	}
	return b, err
}

func (p *Pages) noBuild(c echo.Context) error {
	return p.errorPage(c, http.StatusNotFound, fmt.Sprintf("There is no build %q (builds are kept for %s).", c.Param("id"), p.cfg.Build.Retention))
}

type listData struct {
	Page
	Repo, Generator, State string
	States                 []string
	Builds                 []buildRow
	Newer, Older           string
	PageNum                int
}

type buildRow struct {
	ID, URL, Repo, Generator, GeneratorURL string
	Commit                                 commitView
	Created                                timeView
	State                                  stateView
	Clouds                                 []cloudBadge
}

type cloudBadge struct {
	Name  string
	State stateView
}

const pageSize = 25

func (p *Pages) list(c echo.Context) error {
	q := c.QueryParams()
	page, _ := strconv.Atoi(q.Get("page"))
	// Paging reads every record before the page: keep that bounded.
	page = min(max(page, 1), 400)
	state := q.Get("state")
	if state != "" && !validState(state) {
		return p.errorPage(c, http.StatusBadRequest, fmt.Sprintf("Unknown state %q.", state))
	}
	bs, more, err := p.store.Page(c.Request().Context(), store.PageOptions{
		Repo: q.Get("repo"), Generator: q.Get("generator"), State: builder.State(state),
		Offset: (page - 1) * pageSize, Limit: pageSize, Match: p.access.Filter(viewerOf(c).token),
	})
	if err != nil {
		return err
	}
	d := listData{
		Page: Page{Title: "Builds"}, Repo: q.Get("repo"), Generator: q.Get("generator"), State: state,
		States: states, PageNum: page,
	}
	for _, b := range bs {
		row := buildRow{
			ID: b.ID, URL: BuildPath(b.ID), Repo: b.Repo, Generator: b.Generator,
			GeneratorURL: generatorPath(b.Repo, b.Generator), Commit: p.commit(b.Repo, b.Commit),
			Created: timeOf(b.Created), State: stateOf(b.State, ""),
		}
		for _, name := range b.CloudNames() {
			row.Clouds = append(row.Clouds, cloudBadge{Name: name, State: stateOf(b.Clouds[name].State, b.Clouds[name].Phase)})
		}
		d.Builds = append(d.Builds, row)
	}
	link := func(n int) string {
		v := url.Values{}
		for _, k := range []string{"repo", "generator", "state"} {
			if q.Get(k) != "" {
				v.Set(k, q.Get(k))
			}
		}
		if n > 1 {
			v.Set("page", strconv.Itoa(n))
		}
		if len(v) == 0 {
			return "/builds"
		}
		return "/builds?" + v.Encode()
	}
	if page > 1 {
		d.Newer = link(page - 1)
	}
	if more {
		d.Older = link(page + 1)
	}
	return p.render(c, http.StatusOK, "list", d)
}

type buildData struct {
	Page
	ID, Repo, RepoURL, Generator, GeneratorURL, SpecFile, Digest, Ref string
	Commit                                                            commitView
	Created                                                           timeView
	RerunOf                                                           string
	State                                                             stateView
	Clouds                                                            []cloudView
	Events                                                            string // the live update stream; "" when the build is done
	Rerun                                                             rerunForm
	Drift                                                             *driftView // nil: no cloud has a manifest
}

type rerunForm struct {
	Enabled bool // api_tokens are configured
	Clouds  []rerunCloud
	Error   string
	Action  string
}

type rerunCloud struct {
	Name         string
	AsksPassword bool
	Checked      bool
}

func (p *Pages) build(c echo.Context) error {
	b, err := p.getBuild(c)
	if b == nil {
		return err
	}
	d := p.buildData(b, "")
	d.Drift = p.driftView(c.Request().Context(), b)
	return p.render(c, http.StatusOK, "build", d)
}

func (p *Pages) buildData(b *builds.Build, rerunErr string) buildData {
	d := buildData{
		Page: Page{Title: fmt.Sprintf("%s at %s", b.Generator, shortSHA(b.Commit))},
		ID:   b.ID, Repo: b.Repo, RepoURL: p.web + "/" + b.Repo, Generator: b.Generator,
		GeneratorURL: generatorPath(b.Repo, b.Generator), SpecFile: b.SpecFile, Digest: b.Digest, Ref: b.Ref,
		Commit: p.commit(b.Repo, b.Commit), Created: timeOf(b.Created), RerunOf: b.RerunOf,
		State: stateOf(b.State, ""), Clouds: p.cloudViews(b),
		Rerun: rerunForm{Enabled: p.access.HasTokens(), Error: rerunErr, Action: "/builds/" + b.ID + "/rerun"},
	}
	if live(b.State) {
		d.Events = "/builds/" + b.ID + "/events"
		d.Refresh = int(p.refresh / time.Second)
		d.Live = true
	}
	for _, name := range b.CloudNames() {
		asks := b.Clouds[name].AsksPassword
		if e := p.cfg.Clouds[name]; e != nil {
			asks = e.AsksPassword()
		}
		d.Rerun.Clouds = append(d.Rerun.Clouds, rerunCloud{Name: name, AsksPassword: asks, Checked: b.Clouds[name].State != builder.StateSucceeded})
	}
	return d
}

// live reports whether a build's page should follow it: while something
// runs or is queued (a cloud waiting for a password waits for a person).
func live(s builder.State) bool { return s == builder.StateQueued || s == builder.StateRunning }

type logData struct {
	Page
	BuildID, BuildURL, Generator, Cloud string
	State                               stateView
	Dropped                             int
	Lines                               []logLine
	Events                              string
	Error                               string
}

type logLine struct {
	Time   string
	Stream string
	Text   string
}

func lineOf(l builds.LogEntry) logLine {
	return logLine{Time: l.Time.UTC().Format("15:04:05.000"), Stream: l.Stream, Text: l.Text}
}

func (p *Pages) logPage(c echo.Context) error {
	b, err := p.getBuild(c)
	if b == nil {
		return err
	}
	if !p.mayReadLogs(viewerOf(c), b.Repo) { // auth let no such request in: a second lock
		return p.noBuild(c)
	}
	cloud := c.Param("cloud")
	rec := b.Clouds[cloud]
	if rec == nil {
		return p.errorPage(c, http.StatusNotFound, fmt.Sprintf("Build %s has no cloud %q (it has: %s).", b.ID, cloud, strings.Join(b.CloudNames(), ", ")))
	}
	// One read for lines and numbering, so the live tail starts right after them.
	lines, next, err := p.store.LogSince(c.Request().Context(), b.ID, cloud, 0)
	if err != nil {
		return err
	}
	d := logData{
		Page:    Page{Title: fmt.Sprintf("%s on %s: log", b.Generator, cloud)},
		BuildID: b.ID, BuildURL: BuildPath(b.ID), Generator: b.Generator, Cloud: cloud,
		State: stateOf(rec.State, rec.Phase), Dropped: next - len(lines), Error: rec.Error,
	}
	for _, l := range lines {
		d.Lines = append(d.Lines, lineOf(l))
	}
	if !rec.State.Final() && rec.State != builder.StateWaiting {
		d.Events = fmt.Sprintf("/builds/%s/log/%s/events?from=%d", b.ID, url.PathEscape(cloud), next)
		d.Live = true
	}
	return p.render(c, http.StatusOK, "log", d)
}

type generatorData struct {
	Page
	Repo, RepoURL, Generator, BuildsURL string
	Clouds                              []string
	Rows                                []lineageRow
}

type lineageRow struct {
	Build, BuildURL string
	Commit          commitView
	Digest          string
	Created         timeView
	Images          []lineageCell // one per column of Clouds
	Changes         *rowChanges   // since the build before (images.go); nil: not compared
}

type lineageCell struct {
	ImageID, ImageName, BaseImage string
}

func (p *Pages) generator(c echo.Context) error {
	repo := c.Param("owner") + "/" + c.Param("repo")
	gen := c.Param("generator")
	var imgs []builds.LineageEntry
	if p.mayRead(viewerOf(c), repo) { // another repository's lineage is empty to this token
		var err error
		if imgs, err = p.store.Images(c.Request().Context(), repo, gen); err != nil {
			return err
		}
	}
	d := generatorData{
		Page: Page{Title: fmt.Sprintf("%s in %s", gen, repo)},
		Repo: repo, RepoURL: p.web + "/" + repo, Generator: gen,
		BuildsURL: "/builds?" + url.Values{"repo": {repo}, "generator": {gen}}.Encode(),
	}
	// One row per build (so per commit), one column per cloud: which commit
	// made which image on each cloud reads across, newest first.
	col := map[string]int{}
	for _, e := range imgs {
		if _, ok := col[e.Cloud]; !ok {
			col[e.Cloud] = 0
			d.Clouds = append(d.Clouds, e.Cloud)
		}
	}
	sortStrings(d.Clouds)
	for i, name := range d.Clouds {
		col[name] = i
	}
	row := map[string]int{}
	for _, e := range imgs { // newest first already
		i, ok := row[e.Build]
		if !ok {
			i = len(d.Rows)
			row[e.Build] = i
			d.Rows = append(d.Rows, lineageRow{
				Build: e.Build, BuildURL: BuildPath(e.Build), Commit: p.commit(e.Repo, e.Commit),
				Digest: e.Digest, Created: timeOf(e.Created), Images: make([]lineageCell, len(d.Clouds)),
			})
		}
		d.Rows[i].Images[col[e.Cloud]] = lineageCell{ImageID: e.ImageID, ImageName: e.ImageName, BaseImage: e.BaseImage}
	}
	p.lineageChanges(c.Request().Context(), &d)
	return p.render(c, http.StatusOK, "generator", d)
}

func generatorPath(repo, gen string) string {
	owner, name, _ := strings.Cut(repo, "/")
	return "/generators/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + "/" + url.PathEscape(gen)
}

// rerun is the re-run form: it checks the API token given in the form, then
// takes the same path as POST /api/v1/builds/{id}/rerun. Passwords go from
// the form into secret.Strings at once and are never logged nor shown again.
// A failure shows the build page again only to whom may see it (a session,
// the build's link, read_access: public); others get a bare error page.
func (p *Pages) rerun(c echo.Context) error {
	b, err := p.readBuild(c)
	if b == nil {
		return err
	}
	form, err := c.FormParams()
	if err != nil {
		return p.errorPage(c, http.StatusBadRequest, "The form could not be read.")
	}
	v, _ := p.authorize(c, c.Request().URL.Path, p.now())
	shows := p.mayRead(v, b.Repo)
	fail := func(code int, msg string) error {
		if shows {
			return p.render(c, code, "build", p.buildData(b, msg))
		}
		return p.errorPage(c, code, msg)
	}
	if !p.access.HasTokens() {
		return fail(http.StatusForbidden, "Re-runs are off: this server has no api_tokens configured.")
	}
	t, err := p.access.Authenticate(c.RealIP(), form.Get("token"), "pages POST /builds/:id/rerun")
	var lim *access.LimitedError
	switch {
	case errors.As(err, &lim):
		c.Response().Header().Set("Retry-After", strconv.Itoa(lim.Seconds()))
		return fail(http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins from your address. Try again in %d seconds.", lim.Seconds()))
	case err != nil:
		return fail(http.StatusUnauthorized, "That is not a valid API token.")
	case !t.Sees(b.Repo) && !shows:
		return p.noBuild(c)
	case !t.Sees(b.Repo):
		return fail(http.StatusForbidden, fmt.Sprintf("That token may not re-run builds of %s.", b.Repo))
	case !t.Has(config.ScopeRerun):
		return fail(http.StatusForbidden, "That token may not re-run builds: it lacks the rerun scope.")
	}
	req := builds.RerunRequest{Clouds: form["cloud"], Passwords: map[string]secret.String{}}
	if len(req.Clouds) == 0 {
		return fail(http.StatusBadRequest, "Choose at least one cloud to re-run.")
	}
	for _, name := range req.Clouds {
		if pw := form.Get("password_" + name); pw != "" {
			req.Passwords[name] = secret.New(pw)
		}
	}
	id, err := p.reruns.Rerun(c.Request().Context(), b.ID, req)
	var rerr *builds.RequestError
	var derr *builds.DeniedError
	switch {
	case errors.As(err, &rerr):
		return fail(http.StatusBadRequest, rerr.Msg)
	case errors.As(err, &derr):
		return fail(http.StatusForbidden, derr.Msg)
	case err != nil:
		return err
	case id == "":
		return fail(http.StatusBadRequest, "Nothing to re-run.")
	}
	p.log.Info("re-run accepted from the build page", "build", id, "rerun_of", b.ID, "token", t.Name)
	// The token was good: sign the browser in with it, so the new build's page opens.
	p.setSession(c.Response(), t, p.now())
	return c.Redirect(http.StatusSeeOther, BuildPath(id))
}
