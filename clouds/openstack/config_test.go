package openstack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/secret"
)

func cloudConfig(t *testing.T, text string) clouds.Config {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	n := doc.Content[0]
	cfg := clouds.Config{Name: "hotel-openstack", Type: openstack.Type, Node: n, File: "imagegen.yaml"}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "password" {
			cfg.Password = n.Content[i+1].Value
		}
	}
	return cfg
}

func TestConfigure(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	file := cloudsYAML(t, f, "secret")
	tests := []struct {
		name    string
		yaml    string
		env     string // OS_CLIENT_CONFIG_FILE
		wantErr string
		check   func(t *testing.T, c openstack.Config)
	}{
		{name: "all keys", yaml: "{type: openstack, cloud: hotel, clouds_file: " + file + ", region: RegionTwo, network: private, flavor: m1.small, " +
			"floating_ip_pool: public, security_groups: [default, ssh], availability_zone: nova, use_config_drive: true, volume_size: 20, ssh_port: 2222, image_timeout: 90m}",
			check: func(t *testing.T, c openstack.Config) {
				if c.Region != "RegionTwo" || c.VolumeSize != 20 || c.SSHPort != 2222 || len(c.SecurityGroups) != 2 || !c.UseConfigDrive || c.ImageTimeout.Minutes() != 90 {
					t.Errorf("config %+v", c)
				}
			}},
		{name: "defaults", yaml: "{type: openstack, cloud: hotel, clouds_file: " + file + "}",
			check: func(t *testing.T, c openstack.Config) {
				if c.SSHPort != 22 || c.ImageTimeout != openstack.DefaultImageTimeout || c.BootTimeout != openstack.DefaultBootTimeout {
					t.Errorf("defaults not filled: %+v", c)
				}
			}},
		{name: "OS_CLIENT_CONFIG_FILE", yaml: "{type: openstack, cloud: sierra}", env: file},
		{name: "password ask", yaml: "{type: openstack, cloud: hotel, password: ask, clouds_file: " + file + "}"},
		{name: "unknown key", yaml: "{type: openstack, cloud: hotel, flavour: m1.small}", wantErr: `imagegen.yaml:1:33: cloud "hotel-openstack": unknown key "flavour"`},
		{name: "no cloud", yaml: "{type: openstack}", wantErr: `"cloud" is required`},
		{name: "cloud not in clouds.yaml", yaml: "{type: openstack, cloud: lima, clouds_file: " + file + "}", wantErr: `cloud "lima" not found in clouds.yaml`},
		{name: "no clouds.yaml", yaml: "{type: openstack, cloud: hotel, clouds_file: /nonexistent/clouds.yaml}", wantErr: "clouds file not found"},
		{name: "bad port", yaml: "{type: openstack, cloud: hotel, clouds_file: " + file + ", ssh_port: 70000}", wantErr: "ssh_port 70000"},
		{name: "bad volume", yaml: "{type: openstack, cloud: hotel, clouds_file: " + file + ", volume_size: -1}", wantErr: "volume_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OS_CLIENT_CONFIG_FILE", tc.env)
			t.Setenv("OS_CLOUD", "")
			t.Setenv("OS_REGION_NAME", "")
			op, err := openstack.Configure(cloudConfig(t, tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if tc.check != nil {
				tc.check(t, op.(*openstack.Opener).Config())
			}
			// Configure never reached the network: the fake saw nothing.
			if n := len(f.Requests()); n != 0 {
				t.Errorf("Configure made %d requests", n)
			}
		})
	}
}

// TestPasswordAsk: the password comes with the build; one in clouds.yaml is
// ignored, none is an auth error, and the password appears in no error.
func TestPasswordAsk(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	noPassword := cloudsYAML(t, f, "")
	wrongPassword := cloudsYAML(t, f, "stale-from-disk")
	tests := []struct {
		name, file string
		cred       string
		kind       clouds.Kind
	}{
		{"right password", noPassword, "secret", ""},
		{"disk password ignored", wrongPassword, "secret", ""},
		{"no password", noPassword, "", clouds.KindAuth},
		{"wrong password", noPassword, "hunter2-wrong", clouds.KindAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			op, err := openstack.New("hotel-openstack", openstack.Config{Cloud: "hotel", CloudsFile: tc.file, Flavor: "m1.small"}, true, fastOpts)
			if err != nil {
				t.Fatal(err)
			}
			before := f.Count(`auth/tokens`)
			c, err := op.Open(context.Background(), clouds.Credentials{Password: secret.New(tc.cred)})
			if tc.kind != "" {
				if clouds.KindOf(err) != tc.kind {
					t.Fatalf("Open: %v, want %s", err, tc.kind)
				}
				if tc.cred != "" && strings.Contains(err.Error(), tc.cred) {
					t.Errorf("error leaks the password: %v", err)
				}
				if n := f.Count(`auth/tokens`) - before; n > 1 {
					t.Errorf("%d logins: an auth failure is not retried", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if _, err := c.Leftovers(context.Background(), ""); err != nil {
				t.Fatalf("a call after login: %v", err)
			}
			data, _ := os.ReadFile(tc.file)
			if strings.Contains(string(data), tc.cred) {
				t.Errorf("the build's password was written to clouds.yaml")
			}
		})
	}
}

// TestNoCredentials: a cloud that is not password: ask needs a credential on disk.
func TestNoCredentials(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	op, err := openstack.New("x", openstack.Config{Cloud: "hotel", CloudsFile: cloudsYAML(t, f, "")}, false, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Open(context.Background(), clouds.Credentials{}); clouds.KindOf(err) != clouds.KindAuth || !strings.Contains(err.Error(), "no password") {
		t.Errorf("Open: %v, want an auth error saying there is no password", err)
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests made without credentials", n)
	}
}

// TestTwoRegions builds at once on two clouds of one clouds.yaml that differ by region.
func TestTwoRegions(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	file := cloudsYAML(t, f, "secret")
	var wg sync.WaitGroup
	for _, tc := range []struct{ cloud, region string }{{"hotel", "RegionOne"}, {"sierra", "RegionTwo"}} {
		c := open(t, f, openstack.Config{Cloud: tc.cloud, CloudsFile: file})
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "r-" + tc.cloud
			img, err := build(t, c, id)
			if err != nil {
				t.Errorf("%s: %v", tc.cloud, err)
				return
			}
			found := false
			for _, im := range f.Images(tc.region) {
				found = found || im.ID == img.ID
			}
			if !found {
				t.Errorf("%s: image %s not in %s", tc.cloud, img.ID, tc.region)
			}
		}()
	}
	wg.Wait()
	if n := f.Count(`^POST /RegionOne/compute/v2\.1/servers$`); n != 1 {
		t.Errorf("%d creates in RegionOne, want 1", n)
	}
	if n := f.Count(`^POST /RegionTwo/compute/v2\.1/servers$`); n != 1 {
		t.Errorf("%d creates in RegionTwo, want 1", n)
	}
	assertClean(t, f, "RegionOne", "r-hotel")
	assertClean(t, f, "RegionTwo", "r-sierra")
}

// TestRegionOverride: the server config's region beats clouds.yaml's.
func TestRegionOverride(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	c := open(t, f, openstack.Config{Cloud: "hotel", Region: "RegionTwo"})
	if _, err := build(t, c, "override"); err != nil {
		t.Fatal(err)
	}
	if n := f.Count(`^POST /RegionTwo/compute/v2\.1/servers$`); n != 1 {
		t.Errorf("%d creates in RegionTwo, want 1", n)
	}
	// An unknown region fails at Open, saying so.
	op, err := openstack.New("x", openstack.Config{Cloud: "hotel", CloudsFile: cloudsYAML(t, f, "secret"), Region: "RegionNine"}, false, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Open(context.Background(), clouds.Credentials{}); clouds.KindOf(err) != clouds.KindInvalid || !strings.Contains(err.Error(), "RegionNine") {
		t.Errorf("Open in an unknown region: %v", err)
	}
}

// TestSweep: a worker died mid-build; Leftovers finds what it left by build and Remove clears it.
func TestSweep(t *testing.T) {
	f := newFake(t, openstacktest.Options{})
	c := open(t, f, openstack.Config{FloatingIPPool: "public"})
	ctx := context.Background()
	for _, id := range []string{"crashed-1", "crashed-2"} {
		inst := &clouds.Instance{Build: id}
		if err := c.Launch(ctx, launchReq(t, id), inst); err != nil {
			t.Fatal(err)
		}
		// The worker dies here: inst is lost.
	}
	one, err := c.Leftovers(ctx, "crashed-1")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range one {
		if r.Build != "crashed-1" {
			t.Errorf("resource %+v of another build", r)
		}
		kinds[r.Kind]++
	}
	if kinds[clouds.KindServer] != 1 || kinds[clouds.KindKeyPair] != 1 || kinds[clouds.KindFloatingIP] != 1 {
		t.Errorf("Leftovers(crashed-1) = %+v", one)
	}
	all, err := c.Leftovers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Errorf("Leftovers(\"\") = %+v, want 6", all)
	}
	for _, r := range all {
		if r.Build != "crashed-1" && r.Build != "crashed-2" {
			t.Errorf("resource %+v has build %q", r, r.Build)
		}
		if err := c.Remove(ctx, r); err != nil {
			t.Errorf("Remove %+v: %v", r, err)
		}
		if err := c.Remove(ctx, r); err != nil {
			t.Errorf("Remove twice %+v: %v", r, err)
		}
	}
	assertClean(t, f, "", "crashed-1")
	assertClean(t, f, "", "crashed-2")
	if left, _ := c.Leftovers(ctx, ""); len(left) != 0 {
		t.Errorf("after the sweep: %+v", left)
	}
}

// TestConsoleHostKeys: with no injected key, the host key cloud-init prints
// on the console is pinned.
func TestConsoleHostKeys(t *testing.T) {
	f := newFake(t, openstacktest.Options{ConsoleHostKey: authorizedKey(t), ConsoleDelay: 50 * 1e6})
	c := open(t, f, openstack.Config{})
	id := "console"
	req := launchReq(t, id)
	req.HostKey = clouds.HostKey{}
	inst := &clouds.Instance{Build: id}
	defer terminate(t, c, inst)
	if err := c.Launch(context.Background(), req, inst); err != nil {
		t.Fatal(err)
	}
	var want string
	f.Update(func(o *openstacktest.Options) { want = o.ConsoleHostKey })
	if inst.SSH.HostKeySource != "console" || len(inst.SSH.HostKeys) != 1 || inst.SSH.HostKeys[0] != want {
		t.Errorf("host keys %q from %q, want %q from the console", inst.SSH.HostKeys, inst.SSH.HostKeySource, want)
	}
	if s := f.Servers("")[0]; strings.Contains(s.UserData, "ssh_keys") {
		t.Errorf("user data injects a host key though the build gave none")
	}
	_ = filepath.Join
}
