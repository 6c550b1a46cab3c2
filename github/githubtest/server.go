// Package githubtest is a fake GitHub REST API for tests, close enough for the real
// go-github client and ghinstallation, plus real webhook payloads and signing helpers.
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// Call is one request the server received.
type Call struct {
	Method string
	Path   string // without the Enterprise prefix
	Prefix string // "/api/v3" when the request came in under it, else ""
	Query  url.Values
	Body   []byte
	// Auth says who made it: "app:<id>" (an App JWT that verified),
	// "installation:<id>" (an installation token), "token" (the token of
	// TokenConfig), "invalid" or "" (none). Never the credential itself.
	Auth string
	// Status is what the server answered.
	Status int
}

// Server is a fake GitHub API. Create it with NewServer; it is closed when
// the test ends.
type Server struct {
	ts *httptest.Server

	appID    int64
	token    string
	lifetime time.Duration // of installation tokens

	mu        sync.Mutex
	key       *rsa.PrivateKey             // the App's key, made by AppConfig
	files     map[string]map[string]entry // repo@ref → path → entry
	changed   map[string]*comparison      // repo|base|head
	statuses  map[string][]builds.Status
	checkRuns map[string][]*checkRun // repo → runs in creation order
	runsByID  map[int64]*checkRun
	instToks  map[string]instToken
	calls     []Call
	faults    []fault
	nextID    int64
	// followDirs makes the contents API resolve paths through symlinked
	// directories (SetFollowSymlinkedDirs).
	followDirs bool
	// branches are the heads SetBranch set: repo + "\x00" + branch → sha.
	branches map[string]string
}

type entry struct {
	content []byte
	symlink string // target, for a symlink
}

type instToken struct {
	installation int64
	expires      time.Time
}

type checkRun struct {
	repo string
	run  CheckRun
}

type fault struct {
	method, prefix string
	status, n      int
	headers        map[string]string
}

// NewServer starts a fake GitHub on 127.0.0.1.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		appID:     4242,
		token:     "ghp_fake" + randHex(16),
		files:     map[string]map[string]entry{},
		changed:   map[string]*comparison{},
		statuses:  map[string][]builds.Status{},
		checkRuns: map[string][]*checkRun{},
		runsByID:  map[int64]*checkRun{},
		instToks:  map[string]instToken{},
		nextID:    1000,
		lifetime:  time.Hour,
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.ts.Close)
	return s
}

// URL is the api_url to configure, with the trailing slash. URL()+"api/v3/"
// is the same API as GitHub Enterprise Server serves it.
func (s *Server) URL() string { return s.ts.URL + "/" }

// AppID is the id of the fake App.
func (s *Server) AppID() int64 { return s.appID }

// AppConfig returns a config for the fake App: a fresh RSA key written to
// t.TempDir(), its id and this server's URL. The server verifies App JWTs
// with that key's public half.
func (s *Server) AppConfig(t testing.TB) config.GitHub {
	t.Helper()
	s.mu.Lock()
	if s.key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			s.mu.Unlock()
			t.Fatalf("githubtest: generating the App key: %v", err)
		}
		s.key = k
	}
	key := s.key
	s.mu.Unlock()
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	file := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(file, pemKey, 0o600); err != nil {
		t.Fatalf("githubtest: writing the App key: %v", err)
	}
	return config.GitHub{
		AppID:          s.appID,
		PrivateKeyFile: file,
		PrivateKey:     secret.New(string(pemKey)),
		APIURL:         s.URL(),
	}
}

// TokenConfig returns a config for token mode, with the one token the server accepts.
func (s *Server) TokenConfig() config.GitHub {
	return config.GitHub{Token: secret.New(s.token), APIURL: s.URL()}
}

// SetFile puts a file into repo ("owner/name") at ref; directories appear as
// needed.
func (s *Server) SetFile(repo, ref, p string, content []byte) {
	s.set(repo, ref, p, entry{content: slices.Clone(content)})
}

// SetTokenLifetime sets how long the installation tokens issued from now on
// stay valid (GitHub: one hour). Under a minute, ghinstallation fetches a new
// one for every request, which tests of token refresh use.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// SetFollowSymlinkedDirs makes the contents API resolve a path through a
// symlink to a directory of the repository and answer for its target, with
// the target's paths. GitHub does not document what it does there (it
// documents following a symlink named by the path to a regular file, which
// the server always does): tests use this to check imagegen refuses either way.
func (s *Server) SetFollowSymlinkedDirs(follow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.followDirs = follow
}

// SetFiles puts several files into repo at ref, by path.
func (s *Server) SetFiles(repo, ref string, files map[string]string) {
	for p, content := range files {
		s.SetFile(repo, ref, p, []byte(content))
	}
}

// SetSymlink puts a symlink at p. Like GitHub, reading it answers with the
// target's content when the target is a file in the repository, and
// describes the link otherwise.
func (s *Server) SetSymlink(repo, ref, p, target string) {
	s.set(repo, ref, p, entry{symlink: target})
}

func (s *Server) set(repo, ref, p string, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := repo + "@" + ref
	if s.files[k] == nil {
		s.files[k] = map[string]entry{}
	}
	s.files[k][strings.Trim(p, "/")] = e
}

// comparison is what the compare API answers for base...head.
type comparison struct {
	files   []map[string]any
	commits int
	list    []Commit // SetCommits: the commits themselves
}

// Commit is a commit the compare API lists (SetCommits).
type Commit struct {
	SHA, Message, Author string
	Date                 time.Time
}

func (s *Server) comparison(repo, base, head string) *comparison {
	k := repo + "|" + base + "|" + head
	c := s.changed[k]
	if c == nil {
		c = &comparison{commits: 1}
		s.changed[k] = c
	}
	return c
}

// SetChanged adds files, as modified, to what the compare API lists between
// base and head. Like GitHub, the API lists at most 300 files.
func (s *Server) SetChanged(repo, base, head string, files []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.comparison(repo, base, head)
	for _, f := range files {
		c.files = append(c.files, map[string]any{"filename": f, "status": "modified", "sha": gitSHA([]byte(f))})
	}
}

// SetRenamed adds a rename from → to to the comparison of base and head.
func (s *Server) SetRenamed(repo, base, head, from, to string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.comparison(repo, base, head)
	c.files = append(c.files, map[string]any{"filename": to, "previous_filename": from, "status": "renamed", "sha": gitSHA([]byte(to))})
}

// SetCommitCount sets how many commits lie between base and head (default
// 1). The compare API pages through commits; every page lists the files.
func (s *Server) SetCommitCount(repo, base, head string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.comparison(repo, base, head).commits = n
}

// SetCommits sets the commits between base and head, oldest first, as the
// compare API lists them (with their messages and authors).
func (s *Server) SetCommits(repo, base, head string, commits []Commit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.comparison(repo, base, head)
	c.list, c.commits = slices.Clone(commits), len(commits)
}

// Statuses returns every status posted for sha, in order.
func (s *Server) Statuses(repo, sha string) []builds.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.statuses[repo+"@"+sha])
}

// LatestStatuses returns the latest status per context, as GitHub shows them.
func (s *Server) LatestStatuses(repo, sha string) map[string]builds.Status {
	out := map[string]builds.Status{}
	for _, st := range s.Statuses(repo, sha) {
		out[st.Context] = st
	}
	return out
}

// CheckRun is a check run as the fake GitHub keeps it: what imagegen wrote,
// and the id GitHub gave it.
type CheckRun struct {
	ID int64
	builds.CheckRun
}

// CheckRuns returns the current state of each check run in repo, in creation order.
func (s *Server) CheckRuns(repo string) []CheckRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CheckRun
	for _, cr := range s.checkRuns[repo] {
		out = append(out, cr.run)
	}
	return out
}

// InstallationTokens returns every installation token the server issued,
// for tests that check no credential leaks into logs or errors.
func (s *Server) InstallationTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for tok := range s.instToks {
		out = append(out, tok)
	}
	return out
}

// Calls returns every request received, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallCount returns len(Calls()) without copying them.
func (s *Server) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// FailNext makes the next n requests whose method matches (empty: any) and
// whose path (without the Enterprise prefix) starts with pathPrefix fail with
// status and headers, with the body GitHub sends for it: a secondary rate
// limit message for 403/429 with Retry-After, a rate limit message when
// X-RateLimit-Remaining is "0".
func (s *Server) FailNext(method, pathPrefix string, status int, n int, headers map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{method: method, prefix: pathPrefix, status: status, n: n, headers: headers})
}

// RateLimitHeaders returns headers for FailNext saying the primary rate
// limit is exhausted until reset.
func RateLimitHeaders(reset time.Time) map[string]string {
	return map[string]string{
		"X-RateLimit-Limit":     "5000",
		"X-RateLimit-Remaining": "0",
		"X-RateLimit-Used":      "5000",
		"X-RateLimit-Reset":     strconv.FormatInt(reset.Unix(), 10),
	}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	p := r.URL.Path
	prefix := ""
	if rest, ok := strings.CutPrefix(p, "/api/v3/"); ok {
		prefix, p = "/api/v3", "/"+rest
	}
	c := Call{Method: r.Method, Path: p, Prefix: prefix, Query: r.URL.Query(), Body: body, Auth: s.auth(r)}
	// Recorded before answering, so a client that has its answer finds its
	// call in Calls; the status is filled in as it is written.
	s.mu.Lock()
	s.calls = append(s.calls, c)
	idx := len(s.calls) - 1
	s.mu.Unlock()
	rw := &recorder{ResponseWriter: w, s: s, idx: idx}

	h := rw.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-GitHub-Request-Id", randHex(8))
	if f, ok := s.fault(r.Method, p); ok {
		writeFault(rw, f)
		return
	}
	h.Set("X-RateLimit-Limit", "5000")
	h.Set("X-RateLimit-Remaining", "4999")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))

	seg := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case r.Method == http.MethodPost && len(seg) == 4 && seg[0] == "app" && seg[1] == "installations" && seg[3] == "access_tokens":
		s.accessToken(rw, c, seg[2])
		return
	case len(seg) >= 3 && seg[0] == "repos":
	default:
		writeError(rw, http.StatusNotFound, "Not Found")
		return
	}
	switch {
	case c.Auth == "" || c.Auth == "invalid":
		writeError(rw, http.StatusUnauthorized, "Bad credentials")
		return
	case strings.HasPrefix(c.Auth, "app:"):
		writeError(rw, http.StatusForbidden, "A JSON web token cannot be used to access this resource; use an installation token")
		return
	}
	s.repos(rw, r, c, seg[1]+"/"+seg[2], seg[3:])
}

// repos answers the calls under /repos/{owner}/{name}/ (rest is the path
// after it) that c, authenticated, makes.
func (s *Server) repos(rw http.ResponseWriter, r *http.Request, c Call, repo string, rest []string) {
	body := c.Body
	switch {
	case r.Method == http.MethodGet && len(rest) >= 1 && rest[0] == "contents":
		s.contents(rw, r, repo, strings.Join(rest[1:], "/"))
	case r.Method == http.MethodGet && len(rest) >= 2 && rest[0] == "branches":
		s.branch(rw, repo, rest[1:])
	case r.Method == http.MethodGet && len(rest) == 2 && rest[0] == "compare":
		s.compare(rw, r, repo, rest[1])
	case r.Method == http.MethodPost && len(rest) == 2 && rest[0] == "statuses":
		s.createStatus(rw, repo, rest[1], body)
	case r.Method == http.MethodGet && len(rest) == 3 && rest[0] == "commits" && rest[2] == "check-runs":
		if c.Auth == "token" {
			writeError(rw, http.StatusForbidden, "You must authenticate via a GitHub App.")
			return
		}
		s.listCheckRuns(rw, r, repo, rest[1])
	case len(rest) >= 1 && rest[0] == "check-runs":
		if c.Auth == "token" {
			writeError(rw, http.StatusForbidden, "You must authenticate via a GitHub App.")
			return
		}
		switch {
		case r.Method == http.MethodPost && len(rest) == 1:
			s.createCheckRun(rw, repo, body)
		case (r.Method == http.MethodPatch || r.Method == http.MethodGet) && len(rest) == 2:
			id, err := strconv.ParseInt(rest[1], 10, 64)
			if err != nil {
				writeError(rw, http.StatusNotFound, "Not Found")
				return
			}
			s.checkRun(rw, r.Method, repo, id, body)
		default:
			writeError(rw, http.StatusNotFound, "Not Found")
		}
	default:
		writeError(rw, http.StatusNotFound, "Not Found")
	}
}

// recorder notes the status of call idx before it reaches the client.
type recorder struct {
	http.ResponseWriter
	s   *Server
	idx int
}

func (r *recorder) WriteHeader(code int) {
	r.s.mu.Lock()
	r.s.calls[r.idx].Status = code
	r.s.mu.Unlock()
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) fault(method, p string) (fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.faults {
		f := &s.faults[i]
		if f.n > 0 && (f.method == "" || f.method == method) && strings.HasPrefix(p, f.prefix) {
			f.n--
			return *f, true
		}
	}
	return fault{}, false
}

func writeFault(w http.ResponseWriter, f fault) {
	for k, v := range f.headers {
		w.Header().Set(k, v)
	}
	msg, doc := http.StatusText(f.status), "https://docs.github.com/rest"
	switch {
	case f.headers["X-RateLimit-Remaining"] == "0":
		msg = "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID."
		doc = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
	case f.status == http.StatusForbidden || f.status == http.StatusTooManyRequests:
		msg = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
		doc = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	}
	w.WriteHeader(f.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": doc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to tell it
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

// validation answers 422 the way GitHub does for a bad field.
func validation(w http.ResponseWriter, resource, field, code, msg string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message": "Validation Failed",
		"errors": []map[string]string{
			{"resource": resource, "field": field, "code": code, "message": msg},
		},
		"documentation_url": "https://docs.github.com/rest",
	})
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// wrapBase64 breaks base64 into lines, as GitHub sends file content.
func wrapBase64(s string) string {
	var b strings.Builder
	for len(s) > 60 {
		b.WriteString(s[:60])
		b.WriteByte('\n')
		s = s[60:]
	}
	b.WriteString(s)
	b.WriteByte('\n')
	return b.String()
}
