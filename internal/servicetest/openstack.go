// This file starts a real Keystone and a real Glance (Debian's keystone and
// glance packages) on 127.0.0.1, once per test binary, for the OpenStack
// driver's tests. (The package doc comment is in redis.go.)

package servicetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// OpenStackPython is the interpreter the services run under: Debian's, whose
// modules the packages installed (the python3 on PATH may be another one).
const OpenStackPython = "/usr/bin/python3"

// OpenStackRegion holds the identity endpoint and the Glance endpoint the
// helper registers; tests borrow regions of their own with Region.
const OpenStackRegion = "RegionOne"

var openStackFiles = []string{OpenStackPython, "/usr/bin/keystone-manage", "/usr/bin/keystone-wsgi-public",
	"/usr/bin/glance-manage", "/usr/bin/glance-api"}

// OpenStack is a real Keystone (v3, Fernet tokens) and a real Glance (v2,
// file store), with a project to build in.
type OpenStack struct {
	KeystoneURL string // the v3 endpoint: clouds.yaml's auth_url
	GlanceURL   string // Glance's root, its endpoint in the catalog

	// AdminPassword is keystone-manage bootstrap's admin's (user admin,
	// project admin, domain Default); the helper and the fake's Nova use it.
	AdminPassword string

	// A domain of its own (so domain names and ids differ), a project in it,
	// a user with the member role there, and an application credential of
	// that user on that project.
	Domain, DomainID         string
	Project, ProjectID       string
	User, UserID, Password   string
	AppCredID, AppCredSecret string

	// BaseImageID is a public, active image for servers to boot from.
	BaseImageID string

	Dir     string           // config, databases, keys, image store, logs
	Timings OpenStackTimings // how long the start took

	client   *http.Client
	procs    []*exec.Cmd
	exited   []chan error
	mu       sync.Mutex
	admin    string // the admin's token, project-scoped
	adminExp time.Time
	services map[string]string // service type → id

	allRegions  []*testRegion
	freeRegions []*testRegion
	lent        map[string]*testRegion
	regionSeq   int
}

// OpenStackTimings says where the start's time went.
type OpenStackTimings struct {
	Setup    time.Duration // the config, db_sync, Fernet keys, bootstrap (scripts/openstack-services.sh)
	Servers  time.Duration // from starting both servers until both answer
	Register time.Duration // the catalog, project, user, application credential, base image
	Total    time.Duration
}

var openStack struct {
	once sync.Once
	os   *OpenStack
	err  error
}

// StartOpenStack returns the binary's Keystone and Glance, starting them on
// the first call (about half a minute on 2 cores; the calls after return at
// once). They run until StopOpenStack, which the package's TestMain calls
// (see OpenStackMain); should the test binary die first, the kernel kills
// them (Pdeathsig). As Need says: skipped under -short, failing when the
// packages are missing (scripts/install-deps.sh test installs them).
func StartOpenStack(t testing.TB) *OpenStack {
	t.Helper()
	Need(t, "a real Keystone and Glance (Debian's keystone and glance, half a minute to start)", openStackFiles...)
	openStack.once.Do(func() {
		openStack.os, openStack.err = startOpenStack()
		if openStack.err == nil {
			tm := openStack.os.Timings
			t.Logf("servicetest: Keystone and Glance ready in %s (setup %s, servers %s, registration %s)",
				tm.Total.Round(time.Millisecond), tm.Setup.Round(time.Millisecond), tm.Servers.Round(time.Millisecond), tm.Register.Round(time.Millisecond))
		}
	})
	if openStack.err != nil {
		t.Fatalf("servicetest: start Keystone and Glance: %v", openStack.err)
	}
	return openStack.os
}

// StopOpenStack stops the services StartOpenStack started, if any, waits for
// them and removes their directory. TestMain calls it after the tests.
// With IMAGEGEN_OPENSTACK_KEEP set the directory stays, for reading the logs.
func StopOpenStack() {
	if o := openStack.os; o != nil {
		o.stop()
		for _, r := range o.allRegions {
			r.proxy.Close()
		}
		if os.Getenv("IMAGEGEN_OPENSTACK_KEEP") != "" {
			fmt.Fprintf(os.Stderr, "servicetest: Keystone's and Glance's files kept in %s\n", o.Dir)
			return
		}
		_ = os.RemoveAll(o.Dir)
	}
}

// OpenStackMain is a TestMain for packages that use StartOpenStack: it runs
// the tests, then stops the services.
func OpenStackMain(m *testing.M) {
	code := m.Run()
	StopOpenStack()
	os.Exit(code)
}

func startOpenStack() (*OpenStack, error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "imagegen-openstack-")
	if err != nil {
		return nil, err
	}
	o := &OpenStack{Dir: dir, AdminPassword: "admin-" + randomHex(12), services: map[string]string{},
		client: &http.Client{Timeout: 60 * time.Second}, lent: map[string]*testRegion{}}
	// Two tries: a port picked free may be taken before the server binds it.
	for try := 0; ; try++ {
		err = o.run()
		if err == nil || try == 1 || !strings.Contains(err.Error(), "in use") {
			break
		}
		o.stop()
	}
	if err != nil {
		o.stop()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	t0 := time.Now()
	if err := o.register(); err != nil {
		err = fmt.Errorf("%w\n%s", err, o.logTails())
		o.stop()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	o.Timings.Register = time.Since(t0)
	o.Timings.Total = time.Since(start)
	return o, nil
}

// run writes the config, prepares the databases and starts both servers.
func (o *OpenStack) run() error {
	kport, err := freePort()
	if err != nil {
		return err
	}
	gport, err := freePort()
	if err != nil {
		return err
	}
	for gport == kport {
		if gport, err = freePort(); err != nil {
			return err
		}
	}
	state := filepath.Join(o.Dir, "state")
	_ = os.RemoveAll(state)
	t0 := time.Now()
	setup := exec.Command(scriptPath("openstack-services.sh"), "setup", state, strconv.Itoa(kport), strconv.Itoa(gport))
	setup.Env = append(os.Environ(), "OS_TEST_ADMIN_PASSWORD="+o.AdminPassword)
	if out, err := setup.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/openstack-services.sh setup: %w\n%s", err, tailLines(string(out), 20))
	}
	o.Timings.Setup = time.Since(t0)

	o.KeystoneURL = fmt.Sprintf("http://127.0.0.1:%d/v3", kport)
	o.GlanceURL = fmt.Sprintf("http://127.0.0.1:%d", gport)
	t0 = time.Now()
	// keystone-wsgi-public's own server is single-threaded: no SQLite
	// writers racing each other, and enough for the tests.
	ks := exec.Command(OpenStackPython, "/usr/bin/keystone-wsgi-public", "--host", "127.0.0.1", "--port", strconv.Itoa(kport),
		"--", "--config-file", filepath.Join(state, "keystone.conf"))
	ks.Env = append(os.Environ(), "OS_KEYSTONE_CONFIG_DIR="+state, "OS_KEYSTONE_CONFIG_FILES=keystone.conf")
	gl := exec.Command(OpenStackPython, "/usr/bin/glance-api", "--config-file", filepath.Join(state, "glance-api.conf"))
	for _, c := range []struct {
		cmd *exec.Cmd
		out string
	}{{ks, "keystone.out"}, {gl, "glance-api.out"}} {
		f, err := os.Create(filepath.Join(state, "log", c.out))
		if err != nil {
			return err
		}
		c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = nil, f, f
		// Its own process group, so stop reaches whatever it forks; killed
		// with the test binary should that die without stopping it
		// (Pdeathsig follows the starting thread, which Go keeps: the test
		// goroutines are not locked to theirs).
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err = c.cmd.Start()
		f.Close()
		if err != nil {
			return fmt.Errorf("start %s: %w", c.cmd.Args[1], err)
		}
		exited := make(chan error, 1)
		go func(cmd *exec.Cmd) { exited <- cmd.Wait() }(c.cmd)
		o.procs = append(o.procs, c.cmd)
		o.exited = append(o.exited, exited)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i, probe := range []struct{ url, what string }{{o.KeystoneURL, "Keystone"}, {o.GlanceURL + "/versions", "Glance"}} {
		for {
			select {
			case err := <-o.exited[i]:
				o.exited[i] <- err
				return fmt.Errorf("%s exited (%w) before answering:\n%s", probe.what, err, o.logTails())
			default:
			}
			resp, err := o.client.Get(probe.url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 500 {
					break
				}
			}
			if time.Now().After(deadline) {
				if err == nil {
					err = errors.New("no answer")
				}
				return fmt.Errorf("%s did not answer on %s within 3 minutes (%w):\n%s", probe.what, probe.url, err, o.logTails())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	o.Timings.Servers = time.Since(t0)
	return nil
}

// stop ends both servers (SIGTERM to their process groups, SIGKILL after 10 s) and waits for them.
func (o *OpenStack) stop() {
	for i, cmd := range o.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		var err error
		select {
		case err = <-o.exited[i]:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			err = <-o.exited[i]
		}
		_ = err // stopped by a signal: its exit status says nothing
	}
	o.procs, o.exited = nil, nil
}

// scriptPath finds scripts/NAME in the repository this file is part of.
func scriptPath(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts", name)
}

// logTails is the end of each service's log, for failure messages.
func (o *OpenStack) logTails() string {
	var b strings.Builder
	for _, f := range []string{"keystone.log", "keystone.out", "glance-api.log", "glance-api.out"} {
		data, err := os.ReadFile(filepath.Join(o.Dir, "state", "log", f))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s:\n%s\n", f, tailLines(string(data), 15))
	}
	return b.String()
}

// Logs returns the end of the services' logs (on a test's failure).
func (o *OpenStack) Logs() string { return o.logTails() }

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ---- the REST calls ----

// apiError is an answer with an unexpected status.
type apiError struct {
	method, url string
	status      int
	body        string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: %d: %s", e.method, e.url, e.status, tailLines(e.body, 5))
}

// statusOf returns the HTTP status of an error from the helper's calls, 0 for others.
func statusOf(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status
	}
	return 0
}

// call sends in (JSON, or raw bytes with contentType) and decodes the answer into out.
func (o *OpenStack) call(method, u, token string, in any, contentType string, out any, want ...int) (http.Header, error) {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
		if contentType == "" {
			contentType = "application/json"
		}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	ok := len(want) == 0 && resp.StatusCode < 300
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		return resp.Header, &apiError{method: method, url: u, status: resp.StatusCode, body: string(data)}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.Header, fmt.Errorf("%s %s: %w", method, u, err)
		}
	}
	return resp.Header, nil
}

// passwordToken logs in with a password, scoped to a project; the scope's
// domain by id.
func (o *OpenStack) passwordToken(user, userDomainID, password, project, projectDomainID string) (string, time.Time, error) {
	in := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": user, "domain": map[string]any{"id": userDomainID}, "password": password}}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": map[string]any{"id": projectDomainID}}},
	}}
	var out struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	h, err := o.call("POST", o.KeystoneURL+"/auth/tokens", "", in, "", &out, 201)
	if err != nil {
		return "", time.Time{}, err
	}
	return h.Get("X-Subject-Token"), out.Token.ExpiresAt, nil
}

// adminToken is the admin's token, renewed when it nears its end.
func (o *OpenStack) adminToken() (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.admin != "" && time.Until(o.adminExp) > 5*time.Minute {
		return o.admin, nil
	}
	tok, exp, err := o.passwordToken("admin", "default", o.AdminPassword, "admin", "default")
	if err != nil {
		return "", fmt.Errorf("admin login: %w", err)
	}
	o.admin, o.adminExp = tok, exp
	return tok, nil
}

// admin makes a call as the admin.
func (o *OpenStack) adminCall(method, u string, in, out any, want ...int) error {
	tok, err := o.adminToken()
	if err != nil {
		return err
	}
	_, err = o.call(method, u, tok, in, "", out, want...)
	return err
}

// ---- registration ----

// register fills the catalog and creates what the builds log in as.
func (o *OpenStack) register() error {
	if _, err := o.addEndpoint(OpenStackRegion, "image", o.GlanceURL, "public", "internal", "admin"); err != nil {
		return err
	}
	o.Domain, o.Project, o.User, o.Password = "imagegen-lab", "imagegen", "imagegen-builder", "pw-"+randomHex(12)
	var dom struct {
		Domain struct{ ID string } `json:"domain"`
	}
	if err := o.adminCall("POST", o.KeystoneURL+"/domains", map[string]any{"domain": map[string]any{
		"name": o.Domain, "description": "imagegen's tests"}}, &dom, 201); err != nil {
		return err
	}
	o.DomainID = dom.Domain.ID
	var proj struct {
		Project struct{ ID string } `json:"project"`
	}
	if err := o.adminCall("POST", o.KeystoneURL+"/projects", map[string]any{"project": map[string]any{
		"name": o.Project, "domain_id": o.DomainID}}, &proj, 201); err != nil {
		return err
	}
	o.ProjectID = proj.Project.ID
	uid, err := o.createUser(o.User, o.Password)
	if err != nil {
		return err
	}
	o.UserID = uid
	tok, _, err := o.passwordToken(o.User, o.DomainID, o.Password, o.Project, o.DomainID)
	if err != nil {
		return fmt.Errorf("the user's first login: %w", err)
	}
	var ac struct {
		Cred struct {
			ID     string `json:"id"`
			Secret string `json:"secret"`
		} `json:"application_credential"`
	}
	if _, err := o.call("POST", o.KeystoneURL+"/users/"+o.UserID+"/application_credentials", tok, map[string]any{
		"application_credential": map[string]any{"name": "imagegen-tests", "description": "imagegen's tests"}}, "", &ac, 201); err != nil {
		return err
	}
	o.AppCredID, o.AppCredSecret = ac.Cred.ID, ac.Cred.Secret
	return o.uploadBaseImage()
}

// createUser makes a user in the domain with the member role on the project.
func (o *OpenStack) createUser(name, password string) (string, error) {
	var user struct {
		User struct{ ID string } `json:"user"`
	}
	if err := o.adminCall("POST", o.KeystoneURL+"/users", map[string]any{"user": map[string]any{
		"name": name, "domain_id": o.DomainID, "password": password, "default_project_id": o.ProjectID}}, &user, 201); err != nil {
		return "", err
	}
	var roles struct {
		Roles []struct{ ID string } `json:"roles"`
	}
	if err := o.adminCall("GET", o.KeystoneURL+"/roles?name=member", nil, &roles); err != nil {
		return "", err
	}
	if len(roles.Roles) != 1 {
		return "", fmt.Errorf("%d roles named member, want the one keystone-manage bootstrap made", len(roles.Roles))
	}
	if err := o.adminCall("PUT", o.KeystoneURL+"/projects/"+o.ProjectID+"/users/"+user.User.ID+"/roles/"+roles.Roles[0].ID, nil, nil, 204); err != nil {
		return "", err
	}
	return user.User.ID, nil
}

// NewUser makes another user with the member role on the project, for a
// test that must not disturb the shared user (revoking its tokens). It is
// deleted when the test ends.
func (o *OpenStack) NewUser(t testing.TB) (name, password, id string) {
	t.Helper()
	name, password = "u-"+randomHex(6), "pw-"+randomHex(12)
	id, err := o.createUser(name, password)
	if err != nil {
		t.Fatalf("servicetest: create user: %v", err)
	}
	t.Cleanup(func() { _ = o.adminCall("DELETE", o.KeystoneURL+"/users/"+id, nil, nil, 204, 404) })
	return name, password, id
}

// RevokeTokens invalidates every token of the user (as an expiry would): a
// disabled user's tokens are revoked, and they stay invalid once enabled again.
func (o *OpenStack) RevokeTokens(t testing.TB, userID string) {
	t.Helper()
	for _, enabled := range []bool{false, true} {
		if err := o.adminCall("PATCH", o.KeystoneURL+"/users/"+userID, map[string]any{"user": map[string]any{"enabled": enabled}}, nil); err != nil {
			t.Fatalf("servicetest: revoke the tokens of user %s: %v", userID, err)
		}
	}
	// Fernet revocations are kept to the second: a token issued in the same
	// second as the revocation would count as revoked too.
	time.Sleep(1100 * time.Millisecond)
}

// RevokeToken revokes one token (DELETE /v3/auth/tokens, as the admin).
func (o *OpenStack) RevokeToken(t testing.TB, token string) {
	t.Helper()
	admin, err := o.adminToken()
	if err == nil {
		var req *http.Request
		req, err = http.NewRequest("DELETE", o.KeystoneURL+"/auth/tokens", nil)
		if err == nil {
			req.Header.Set("X-Auth-Token", admin)
			req.Header.Set("X-Subject-Token", token)
			var resp *http.Response
			if resp, err = o.client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}
	}
	if err != nil {
		t.Fatalf("servicetest: revoke a token: %v", err)
	}
}

// UserToken returns a new project-scoped token of the shared user.
func (o *OpenStack) UserToken(t testing.TB) string {
	t.Helper()
	tok, _, err := o.passwordToken(o.User, o.DomainID, o.Password, o.Project, o.DomainID)
	if err != nil {
		t.Fatalf("servicetest: user login: %v", err)
	}
	return tok
}

// addEndpoint puts url in region's catalog as the endpoint of the service of
// that type for each interface, creating the service on first use.
func (o *OpenStack) addEndpoint(region, typ, u string, interfaces ...string) (id string, err error) {
	o.mu.Lock()
	svc := o.services[typ]
	o.mu.Unlock()
	if svc == "" {
		var out struct {
			Service struct{ ID string } `json:"service"`
		}
		if err := o.adminCall("POST", o.KeystoneURL+"/services", map[string]any{"service": map[string]any{
			"type": typ, "name": serviceName(typ), "enabled": true}}, &out, 201); err != nil {
			return "", err
		}
		svc = out.Service.ID
		o.mu.Lock()
		o.services[typ] = svc
		o.mu.Unlock()
	}
	for _, iface := range interfaces {
		var out struct {
			Endpoint struct{ ID string } `json:"endpoint"`
		}
		if err := o.adminCall("POST", o.KeystoneURL+"/endpoints", map[string]any{"endpoint": map[string]any{
			"service_id": svc, "interface": iface, "url": u, "region_id": region, "enabled": true}}, &out, 201); err != nil {
			return "", err
		}
		id = out.Endpoint.ID
	}
	return id, nil
}

func serviceName(typ string) string {
	switch typ {
	case "image":
		return "glance"
	case "compute":
		return "nova"
	case "network":
		return "neutron"
	case "block-storage":
		return "cinder"
	}
	return typ
}

// testRegion is a region of the catalog lent to one test at a time: its
// endpoints other than Glance are on a proxy of its own that forwards every
// request, path and Host unchanged, to the test's fake.
type testRegion struct {
	name   string
	proxy  *httptest.Server
	target *url.URL          // scheme and host of the fake routed now
	eps    map[string]string // service type → URL in Keystone
	epIDs  map[string]string // service type → endpoint id
}

// Region lends the test a region of the catalog until it ends: its image
// endpoint is the real Glance, its other endpoints are what Route gives. A
// region is made in Keystone once and lent again, its endpoints kept while
// their paths stay the same, so a test costs Keystone next to nothing.
func (o *OpenStack) Region(t testing.TB) string {
	t.Helper()
	o.mu.Lock()
	var r *testRegion
	if n := len(o.freeRegions); n > 0 {
		r, o.freeRegions = o.freeRegions[n-1], o.freeRegions[:n-1]
	}
	if r == nil {
		o.regionSeq++
		r = &testRegion{name: fmt.Sprintf("test-%d", o.regionSeq), eps: map[string]string{}, epIDs: map[string]string{}}
	}
	made := r.proxy != nil
	o.mu.Unlock()
	if !made {
		if err := o.adminCall("POST", o.KeystoneURL+"/regions", map[string]any{"region": map[string]any{"id": r.name}}, nil, 201); err != nil {
			t.Fatalf("servicetest: create region %s: %v", r.name, err)
		}
		if _, err := o.addEndpoint(r.name, "image", o.GlanceURL, "public"); err != nil {
			t.Fatalf("servicetest: region %s: %v", r.name, err)
		}
		r.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { o.forward(r, w, req) }))
		o.mu.Lock()
		o.allRegions = append(o.allRegions, r)
		o.mu.Unlock()
	}
	o.mu.Lock()
	o.lent[r.name] = r
	o.mu.Unlock()
	t.Cleanup(func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		r.target = nil
		delete(o.lent, r.name)
		o.freeRegions = append(o.freeRegions, r)
	})
	return r.name
}

// Route makes region's catalog name endpoints (service type → URL, all on
// one host: a fake's compute, network, block-storage), reached through the
// region's proxy with their paths, so the URLs a fake writes from the Host
// it is asked for lead back to it.
func (o *OpenStack) Route(t testing.TB, region string, endpoints map[string]string) {
	t.Helper()
	o.mu.Lock()
	r := o.lent[region]
	o.mu.Unlock()
	if r == nil {
		t.Fatalf("servicetest: Route: region %s is not lent to a test (call Region)", region)
	}
	var host *url.URL
	for typ, raw := range endpoints {
		u, err := url.Parse(raw)
		if err != nil || (host != nil && u.Host != host.Host) {
			t.Fatalf("servicetest: Route: endpoint %s %q: want URLs on one host (%v)", typ, raw, err)
		}
		host = &url.URL{Scheme: u.Scheme, Host: u.Host}
		want := r.proxy.URL + u.EscapedPath()
		if r.eps[typ] == want {
			continue
		}
		var err2 error
		if id := r.epIDs[typ]; id != "" {
			err2 = o.adminCall("PATCH", o.KeystoneURL+"/endpoints/"+id, map[string]any{"endpoint": map[string]any{"url": want}}, nil)
		} else {
			r.epIDs[typ], err2 = o.addEndpoint(region, typ, want, "public")
		}
		if err2 != nil {
			t.Fatalf("servicetest: Route %s %s: %v", region, typ, err2)
		}
		r.eps[typ] = want
	}
	o.mu.Lock()
	r.target = host
	o.mu.Unlock()
}

// forward sends a request to the region's fake as it came.
func (o *OpenStack) forward(r *testRegion, w http.ResponseWriter, req *http.Request) {
	o.mu.Lock()
	target := r.target
	o.mu.Unlock()
	if target == nil {
		http.Error(w, "servicetest: region "+r.name+" routes nowhere now", http.StatusServiceUnavailable)
		return
	}
	(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
		pr.Out.Host = pr.In.Host
	}}).ServeHTTP(w, req)
}

// ---- Glance ----

// GlanceImage is an image as Glance holds it.
type GlanceImage struct {
	ID, Name, Status, Visibility, Owner string
	DiskFormat, ContainerFormat         string
	Size                                int64
	// Properties are the image's own string properties: every key outside
	// Glance's schema (imagegen:*, image_type, os_distro...).
	Properties map[string]string
}

// glanceCore are the keys of Glance's image schema: the rest are properties.
var glanceCore = map[string]bool{"id": true, "name": true, "status": true, "visibility": true, "protected": true,
	"os_hidden": true, "checksum": true, "os_hash_algo": true, "os_hash_value": true, "owner": true, "size": true,
	"virtual_size": true, "min_ram": true, "min_disk": true, "container_format": true, "disk_format": true,
	"created_at": true, "updated_at": true, "tags": true, "direct_url": true, "locations": true, "self": true,
	"file": true, "schema": true, "stores": true}

func glanceImage(m map[string]any) GlanceImage {
	s := func(k string) string { v, _ := m[k].(string); return v }
	im := GlanceImage{ID: s("id"), Name: s("name"), Status: s("status"), Visibility: s("visibility"), Owner: s("owner"),
		DiskFormat: s("disk_format"), ContainerFormat: s("container_format"), Properties: map[string]string{}}
	if n, ok := m["size"].(float64); ok {
		im.Size = int64(n)
	}
	for k, v := range m {
		if str, ok := v.(string); ok && !glanceCore[k] {
			im.Properties[k] = str
		}
	}
	return im
}

// Images lists every image in Glance, of every project, read as the admin
// (not through the driver), following Glance's next links.
func (o *OpenStack) Images(t testing.TB) []GlanceImage {
	t.Helper()
	var all []GlanceImage
	next := "/v2/images?limit=1000"
	for next != "" {
		var page struct {
			Images []map[string]any `json:"images"`
			Next   string           `json:"next"`
		}
		if err := o.adminCall("GET", o.GlanceURL+next, nil, &page); err != nil {
			t.Fatalf("servicetest: list images: %v", err)
		}
		for _, m := range page.Images {
			all = append(all, glanceImage(m))
		}
		next = page.Next
	}
	return all
}

// Image reads one image as the admin; ok is false when Glance has none with that id.
func (o *OpenStack) Image(t testing.TB, id string) (im GlanceImage, ok bool) {
	t.Helper()
	var m map[string]any
	err := o.adminCall("GET", o.GlanceURL+"/v2/images/"+url.PathEscape(id), nil, &m)
	if statusOf(err) == http.StatusNotFound {
		return GlanceImage{}, false
	}
	if err != nil {
		t.Fatalf("servicetest: get image %s: %v", id, err)
	}
	return glanceImage(m), true
}

// CreateImage makes an image in Glance as the user would (an upload of
// its own, not imagegen's): created with props as properties, data uploaded,
// active when this returns. It returns the id.
func (o *OpenStack) CreateImage(t testing.TB, name string, props map[string]string) string {
	t.Helper()
	tok := o.UserToken(t)
	id, err := o.createImage(tok, name, "private", props, []byte("not a disk: "+name))
	if err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	return id
}

// DeleteImage deletes an image as the admin; one already gone is no error.
func (o *OpenStack) DeleteImage(t testing.TB, id string) {
	t.Helper()
	if err := o.adminCall("DELETE", o.GlanceURL+"/v2/images/"+url.PathEscape(id), nil, nil, 204, 404); err != nil {
		t.Fatalf("servicetest: delete image %s: %v", id, err)
	}
}

func (o *OpenStack) createImage(token, name, visibility string, props map[string]string, data []byte) (string, error) {
	in := map[string]any{"name": name, "disk_format": "raw", "container_format": "bare", "visibility": visibility}
	for k, v := range props {
		in[k] = v
	}
	var out struct {
		ID string `json:"id"`
	}
	if _, err := o.call("POST", o.GlanceURL+"/v2/images", token, in, "", &out, 201); err != nil {
		return "", fmt.Errorf("create image %s: %w", name, err)
	}
	if _, err := o.call("PUT", o.GlanceURL+"/v2/images/"+out.ID+"/file", token, data, "application/octet-stream", nil, 204); err != nil {
		return "", fmt.Errorf("upload image %s: %w", name, err)
	}
	var im struct {
		Status string `json:"status"`
	}
	if _, err := o.call("GET", o.GlanceURL+"/v2/images/"+out.ID, token, nil, "", &im); err != nil {
		return "", err
	}
	if im.Status != "active" {
		return "", fmt.Errorf("image %s is %s after its upload, want active", name, im.Status)
	}
	return out.ID, nil
}

// uploadBaseImage makes the public image servers boot from: 64 KiB that are
// no disk (Glance does not look).
func (o *OpenStack) uploadBaseImage() error {
	tok, err := o.adminToken()
	if err != nil {
		return err
	}
	data := bytes.Repeat([]byte("imagegen base image\n"), 64*1024/20)
	id, err := o.createImage(tok, "imagegen-test-base", "public", map[string]string{"os_distro": "debian", "os_version": "12"}, data)
	if err != nil {
		return err
	}
	o.BaseImageID = id
	return nil
}

// ---- clouds.yaml ----

// CloudAuth is how a clouds.yaml entry logs in.
type CloudAuth int

const (
	// PasswordDomainNames logs in with username and password, user and project domains by name.
	PasswordDomainNames CloudAuth = iota
	// PasswordDomainIDs logs in with username and password, user and project domains by id.
	PasswordDomainIDs
	// AppCredential logs in with auth_type v3applicationcredential, the id and the secret.
	AppCredential
	// Token logs in with auth_type v3token, a token issued now, scoped to the project by name.
	Token
)

func (a CloudAuth) String() string {
	return [...]string{"password, domain names", "password, domain ids", "application credential", "token"}[a]
}

// CloudEntry returns the clouds.yaml entry of a cloud named name in region,
// logging in with auth as the shared user; for the password kinds,
// password replaces the user's own ("-" leaves the password out, as for
// password: ask).
func (o *OpenStack) CloudEntry(t testing.TB, name, region string, auth CloudAuth, password string) string {
	t.Helper()
	if password == "" {
		password = o.Password
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n", name)
	switch auth {
	case AppCredential:
		b.WriteString("    auth_type: v3applicationcredential\n")
	case Token:
		b.WriteString("    auth_type: v3token\n")
	}
	fmt.Fprintf(&b, "    auth:\n      auth_url: %s\n", o.KeystoneURL)
	switch auth {
	case PasswordDomainNames, PasswordDomainIDs:
		fmt.Fprintf(&b, "      username: %s\n", o.User)
		if password != "-" {
			fmt.Fprintf(&b, "      password: %s\n", password)
		}
		fmt.Fprintf(&b, "      project_name: %s\n", o.Project)
		if auth == PasswordDomainNames {
			fmt.Fprintf(&b, "      user_domain_name: %s\n      project_domain_name: %s\n", o.Domain, o.Domain)
		} else {
			fmt.Fprintf(&b, "      user_domain_id: %s\n      project_domain_id: %s\n", o.DomainID, o.DomainID)
		}
	case AppCredential:
		fmt.Fprintf(&b, "      application_credential_id: %s\n      application_credential_secret: %s\n", o.AppCredID, o.AppCredSecret)
	case Token:
		fmt.Fprintf(&b, "      token: %s\n      project_name: %s\n      project_domain_name: %s\n", o.UserToken(t), o.Project, o.Domain)
	}
	fmt.Fprintf(&b, "    region_name: %s\n    interface: public\n    identity_api_version: 3\n", region)
	return b.String()
}
