package openstack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/secret"
)

// TestKeystoneV2 logs in the way Havana-era clouds (the seed's India cloud)
// want, Keystone v2.0 with a tenant and no domains, which today's Keystone
// no longer has, so only the fake checks it: a build works with the v2.0
// catalog, a revoked token is renewed through v2.0, a wrong password is an
// auth failure naming the cloud.
func TestKeystoneV2(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	write := func(password string) string {
		path := filepath.Join(t.TempDir(), "clouds.yaml")
		yml := "clouds:\n  india:\n    auth:\n      auth_url: " + strings.TrimSuffix(f.AuthURL, "/v3") + "/v2.0\n" +
			"      username: demo\n      password: " + password + "\n      project_name: demo\n" +
			"    region_name: RegionOne\n    identity_api_version: 2\n"
		if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	op, err := openstack.New("india-openstack", openstack.Config{Cloud: "india", CloudsFile: write("secret"), Flavor: "m1.small", VolumeSize: 10}, false, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c := cl.(*openstack.Cloud)
	img, err := build(t, c, "v2-build")
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	f.RevokeTokens()
	if err := c.DeleteImage(context.Background(), img); err != nil {
		t.Fatalf("DeleteImage after the token was revoked: %v", err)
	}
	if n := f.Count(`^POST /identity/v2\.0/tokens$`); n != 2 {
		t.Errorf("%d v2.0 logins, want 2 (the first, the renewal)", n)
	}
	if n := f.Count(`/identity/v3`); n != 0 {
		t.Errorf("%d requests to Keystone v3", n)
	}
	assertClean(t, f, "", "v2-build")

	op, err = openstack.New("india-openstack", openstack.Config{Cloud: "india", CloudsFile: write("x")}, true, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = op.Open(context.Background(), clouds.Credentials{Password: secret.New("hunter2-v2")})
	if clouds.KindOf(err) != clouds.KindAuth || !strings.Contains(err.Error(), "authentication failed for cloud india-openstack") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Open with a wrong password: %v", err)
	}
}
