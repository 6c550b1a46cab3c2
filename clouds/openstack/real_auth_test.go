package openstack_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// logins counts the token requests the driver sends to Keystone.
type logins struct {
	mu sync.Mutex
	n  int
}

func (l *logins) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/auth/tokens") {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (l *logins) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// openWith opens the cloud with the HTTP client counting its logins.
func (e *realEnv) openWith(t *testing.T, file string, ask bool, cred string) (clouds.Cloud, *logins, error) {
	t.Helper()
	l := &logins{}
	opts := fastOpts
	opts.HTTPClient = &http.Client{Transport: l}
	op, err := openstack.New(realCloudName, openstack.Config{Cloud: "hotel", CloudsFile: file, Flavor: "m1.small"}, ask, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var cr clouds.Credentials
	if cred != "" {
		cr.Password = secret.New(cred)
	}
	c, err := op.Open(context.Background(), cr)
	return c, l, err
}

// useCloud makes a call to the fake's Nova and Neutron (which check the token
// with Keystone) and one to Glance, and finds the base image.
func useCloud(t *testing.T, e *realEnv, c clouds.Cloud) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Leftovers(ctx, "none"); err != nil {
		t.Errorf("Leftovers (Nova, Neutron): %v", err)
	}
	if _, err := c.(clouds.ImageLister).BuildImages(ctx, "none"); err != nil {
		t.Errorf("BuildImages (Glance): %v", err)
	}
}

// TestRealAuth logs in with every kind of credential clouds.yaml holds, and
// with wrong ones, which fail at once with a message naming the cloud and no secret.
func TestRealAuth(t *testing.T) {
	e := newRealEnv(t, openstacktest.Options{})
	o := e.os
	tests := []struct {
		name   string
		auth   servicetest.CloudAuth
		pw     string // clouds.yaml's password ("" the user's, "-" none)
		ask    bool
		cred   string // the build's password (password: ask)
		secret string // must appear in no error
		fail   string // "" the login works; else the error says this
	}{
		{name: "password, domain names", auth: servicetest.PasswordDomainNames},
		{name: "password, domain ids", auth: servicetest.PasswordDomainIDs},
		{name: "application credential", auth: servicetest.AppCredential},
		{name: "token", auth: servicetest.Token},
		{name: "password: ask", auth: servicetest.PasswordDomainNames, pw: "-", ask: true, cred: o.Password},
		{name: "password: ask ignores the one on disk", auth: servicetest.PasswordDomainIDs, pw: "stale-on-disk", ask: true, cred: o.Password},
		{name: "wrong password", auth: servicetest.PasswordDomainNames, pw: "hunter2-wrong", secret: "hunter2-wrong",
			fail: "refused the password of clouds.yaml entry \"hotel\""},
		{name: "wrong password given with the build", auth: servicetest.PasswordDomainIDs, pw: "-", ask: true, cred: "hunter3-wrong",
			secret: "hunter3-wrong", fail: "refused the password given with the build"},
		{name: "password in another domain", auth: servicetest.PasswordDomainIDs, secret: o.Password, fail: "refused the password"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := e.cloudsYAML(t, tc.auth, tc.pw)
			if tc.name == "password in another domain" {
				// The user exists in the lab domain only: the same name and
				// password in Default are refused.
				data, _ := os.ReadFile(file)
				file = filepath.Join(t.TempDir(), "clouds.yaml")
				if err := os.WriteFile(file, []byte(strings.Replace(string(data), "user_domain_id: "+o.DomainID, "user_domain_id: default", 1)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c, l, err := e.openWith(t, file, tc.ask, tc.cred)
			if tc.fail == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				useCloud(t, e, c)
				return
			}
			if err == nil {
				t.Fatal("Open succeeded; want an auth failure")
			}
			msg := err.Error()
			t.Logf("the error: %s", msg)
			if clouds.KindOf(err) != clouds.KindAuth || !strings.Contains(msg, "authentication failed for cloud "+realCloudName) || !strings.Contains(msg, tc.fail) {
				t.Errorf("Open: %v; want an auth error saying \"authentication failed for cloud %s\" and %q", err, realCloudName, tc.fail)
			}
			for _, s := range []string{tc.secret, o.Password, o.AppCredSecret, o.AdminPassword} {
				if s != "" && strings.Contains(msg, s) {
					t.Errorf("the error holds a secret: %s", msg)
				}
			}
			if n := l.count(); n != 1 {
				t.Errorf("%d logins: an auth failure is not retried", n)
			}
		})
	}

	t.Run("wrong application credential secret", func(t *testing.T) {
		data, _ := os.ReadFile(e.cloudsYAML(t, servicetest.AppCredential, ""))
		file := filepath.Join(t.TempDir(), "clouds.yaml")
		bad := strings.Replace(string(data), o.AppCredSecret, "not-the-secret-4711", 1)
		if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.openWith(t, file, false, "")
		if clouds.KindOf(err) != clouds.KindAuth || !strings.Contains(err.Error(), "authentication failed for cloud "+realCloudName) ||
			!strings.Contains(err.Error(), "application credential") || strings.Contains(err.Error(), "4711") {
			t.Errorf("Open: %v; want an auth failure naming the cloud and the application credential, not the secret", err)
		}
	})

	t.Run("revoked token", func(t *testing.T) {
		file := e.cloudsYAML(t, servicetest.Token, "")
		data, _ := os.ReadFile(file)
		_, tok, _ := strings.Cut(string(data), "token: ")
		tok, _, _ = strings.Cut(tok, "\n")
		o.RevokeToken(t, tok)
		_, _, err := e.openWith(t, file, false, "")
		if clouds.KindOf(err) != clouds.KindAuth || !strings.Contains(err.Error(), "authentication failed for cloud "+realCloudName) ||
			!strings.Contains(err.Error(), "token") || strings.Contains(err.Error(), tok) {
			t.Errorf("Open: %v; want an auth failure naming the cloud and the token, not the token itself", err)
		}
	})
}

// TestRealReauth: the driver's token is revoked mid-build (as an expiry
// would end it): the next request is refused, the driver logs in again with
// the password given with the build, kept in memory, and goes on.
func TestRealReauth(t *testing.T) {
	e := newRealEnv(t, openstacktest.Options{})
	user, password, userID := e.os.NewUser(t)
	entry := e.os.CloudEntry(t, "hotel", e.region, servicetest.PasswordDomainNames, "-")
	entry = strings.Replace(entry, "username: "+e.os.User, "username: "+user, 1)
	file := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(file, []byte("clouds:\n"+entry), 0o600); err != nil {
		t.Fatal(err)
	}
	c, l, err := e.openWith(t, file, true, password)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	useCloud(t, e, c)
	e.os.RevokeTokens(t, userID)
	// The fake's Nova asks Keystone again, as keystonemiddleware does once
	// its cache entry ends.
	e.fake.ForgetTokens()
	useCloud(t, e, c)
	if n := l.count(); n != 2 {
		t.Errorf("%d logins, want 2: the first and one after the revocation", n)
	}
}
