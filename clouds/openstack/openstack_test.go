package openstack_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/secret"
)

// fast policies: the fake changes state in tens of milliseconds.
var fastOpts = openstack.Options{
	Poll:  clouds.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 1.5},
	Retry: clouds.Backoff{Initial: 5 * time.Millisecond, Max: 30 * time.Millisecond, Factor: 2, Attempts: 8},
}

// cloudsYAML writes a clouds.yaml naming the fake as clouds "hotel" (RegionOne)
// and "sierra" (RegionTwo); password "" leaves it out, as for password: ask.
func cloudsYAML(t *testing.T, f *openstacktest.Fake, password string) string {
	t.Helper()
	pw := ""
	if password != "" {
		pw = "      password: " + password + "\n"
	}
	entry := func(name, region string) string {
		return "  " + name + ":\n    auth:\n      auth_url: " + f.AuthURL + "\n      username: demo\n" + pw +
			"      project_name: demo\n      user_domain_name: Default\n      project_domain_name: Default\n" +
			"    region_name: " + region + "\n    interface: public\n"
	}
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte("clouds:\n"+entry("hotel", "RegionOne")+entry("sierra", "RegionTwo")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newFake(t *testing.T, o openstacktest.Options) *openstacktest.Fake {
	t.Helper()
	if len(o.Regions) == 0 {
		o.Regions = []string{"RegionOne", "RegionTwo"}
	}
	f := openstacktest.New(o)
	t.Cleanup(f.Close)
	return f
}

func open(t *testing.T, f *openstacktest.Fake, c openstack.Config) *openstack.Cloud {
	t.Helper()
	if c.Cloud == "" {
		c.Cloud = "hotel"
	}
	if c.CloudsFile == "" {
		c.CloudsFile = cloudsYAML(t, f, "secret")
	}
	if c.Flavor == "" {
		c.Flavor = "m1.small"
	}
	if c.ConsoleTimeout == 0 {
		c.ConsoleTimeout = 2 * time.Second
	}
	op, err := openstack.New("test-"+c.Cloud, c, false, fastOpts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cl, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return cl.(*openstack.Cloud)
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func authorizedKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

func hostKey(t *testing.T) clouds.HostKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := ssh.NewPublicKey(pub)
	return clouds.HostKey{PrivatePEM: secret.New(string(pem.EncodeToMemory(blk))), Public: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))}
}

func launchReq(t *testing.T, build string) clouds.LaunchRequest {
	return clouds.LaunchRequest{
		Build: build, Name: "imagegen-" + build + "-hotel", Image: openstacktest.BaseImageID, User: "ubuntu",
		AuthorizedKey: authorizedKey(t), HostKey: hostKey(t),
		Tags: map[string]string{clouds.TagBuild: build, clouds.TagGenerator: "dstat", clouds.TagImageName: "dstat-20261123-2100-abc1234"},
		Log:  testLog(t),
	}
}

func provenance(build string) map[string]string {
	return map[string]string{
		clouds.TagRepo: "example/generators", clouds.TagCommit: strings.Repeat("a", 40), clouds.TagGenerator: "dstat",
		clouds.TagScriptSHA: strings.Repeat("b", 64), clouds.TagBaseImage: openstacktest.BaseImageID, clouds.TagBuild: build,
	}
}

// assertClean fails when the fake holds any server, key pair or floating IP of build.
func assertClean(t *testing.T, f *openstacktest.Fake, region, build string) {
	t.Helper()
	for _, s := range f.Servers(region) {
		if s.Metadata[clouds.TagBuild] == build {
			t.Errorf("server %s (%s) of build %s left behind", s.ID, s.Status, build)
		}
	}
	for _, k := range f.KeyPairs(region) {
		if strings.Contains(k, build) {
			t.Errorf("key pair %s of build %s left behind", k, build)
		}
	}
	for _, x := range f.FloatingIPs(region) {
		if strings.Contains(x.Description, build) {
			t.Errorf("floating IP %s of build %s left behind", x.Address, build)
		}
	}
	if r := f.Rejected(); len(r) > 0 {
		t.Errorf("the fake refused request bodies the real API would refuse: %q", r)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Errorf("ordering violations: %q", v)
	}
}

func terminate(t *testing.T, c *openstack.Cloud, inst *clouds.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Terminate(ctx, inst); err != nil {
		t.Errorf("Terminate: %v", err)
	}
	if err := c.Terminate(ctx, inst); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
}

func TestBuildLifecycle(t *testing.T) {
	tests := []struct {
		name  string
		cfg   openstack.Config
		check func(t *testing.T, f *openstacktest.Fake, inst *clouds.Instance)
		after func(t *testing.T, f *openstacktest.Fake) // after the snapshot
	}{
		{"fixed address", openstack.Config{Network: "private", SecurityGroups: []string{"default"}, AvailabilityZone: "nova", UseConfigDrive: true},
			func(t *testing.T, f *openstacktest.Fake, inst *clouds.Instance) {
				if inst.SSH.Addr != "127.0.0.1:22" {
					t.Errorf("Addr = %q, want 127.0.0.1:22", inst.SSH.Addr)
				}
				s := f.Servers("RegionOne")[0]
				if !s.ConfigDrive || s.AvailabilityZone != "nova" || len(s.SecurityGroups) != 1 {
					t.Errorf("server options not passed: %+v", s)
				}
			}, nil},
		{"floating IP", openstack.Config{FloatingIPPool: "public", SSHPort: 2222},
			func(t *testing.T, f *openstacktest.Fake, inst *clouds.Instance) {
				fips := f.FloatingIPs("RegionOne")
				if len(fips) != 1 || inst.SSH.Addr != fips[0].Address+":2222" || fips[0].PortID == "" {
					t.Errorf("Addr = %q, floating IPs %+v", inst.SSH.Addr, fips)
				}
				if got := inst.Resources[len(inst.Resources)-1]; got.Kind != clouds.KindFloatingIP {
					t.Errorf("last resource %+v, want the floating IP", got)
				}
			}, nil},
		{"boot from volume", openstack.Config{VolumeSize: 20},
			func(t *testing.T, f *openstacktest.Fake, inst *clouds.Instance) {
				if s := f.Servers("RegionOne")[0]; s.VolumeSize != 20 || s.ImageRef != openstacktest.BaseImageID {
					t.Errorf("server %+v: want a 20 GB volume from the base image", s)
				}
			},
			func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST /RegionOne/volume/v3/volumes/vol-[^/]+/action$`); n != 1 {
					t.Errorf("%d volume uploads, want 1", n)
				}
				if n := f.Count(`^PATCH /RegionOne/image/v2/images/`); n != 1 {
					t.Errorf("%d image patches, want 1 setting the provenance", n)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, openstacktest.Options{})
			c := open(t, f, tc.cfg)
			ctx := context.Background()
			build := "b-" + strings.ReplaceAll(tc.name, " ", "-")
			req := launchReq(t, build)
			var console bytes.Buffer
			req.Console = &console
			inst := &clouds.Instance{Build: build}
			if err := c.Launch(ctx, req, inst); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if inst.ID == "" || inst.SSH == nil {
				t.Fatalf("instance not filled: %+v", inst)
			}
			if inst.SSH.HostKeySource != "injected" || len(inst.SSH.HostKeys) != 1 || inst.SSH.HostKeys[0] != req.HostKey.Public {
				t.Errorf("host keys %q from %q, want the injected one", inst.SSH.HostKeys, inst.SSH.HostKeySource)
			}
			servers := f.Servers("RegionOne")
			if len(servers) != 1 {
				t.Fatalf("servers: %+v", servers)
			}
			s := servers[0]
			if s.Metadata[clouds.TagBuild] != build || s.Metadata[clouds.TagGenerator] != "dstat" || s.Metadata[clouds.TagImageName] == "" {
				t.Errorf("server metadata %v", s.Metadata)
			}
			if !strings.HasPrefix(s.UserData, "#cloud-config\n") || !strings.Contains(s.UserData, "ed25519_public: "+req.HostKey.Public) ||
				!strings.Contains(s.UserData, "BEGIN OPENSSH PRIVATE KEY") {
				t.Errorf("user data does not inject the host key:\n%s", s.UserData)
			}
			if kps := f.KeyPairs("RegionOne"); len(kps) != 1 || kps[0] != s.KeyName {
				t.Errorf("key pairs %v, server's %q", kps, s.KeyName)
			}
			if !strings.Contains(console.String(), "Linux version") {
				t.Errorf("console not copied: %q", console.String())
			}
			tc.check(t, f, inst)

			if err := c.Stop(ctx, inst); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if st := f.Servers("RegionOne")[0].Status; st != "SHUTOFF" {
				t.Fatalf("after Stop status %s", st)
			}
			// Nova answers 409 to stopping a stopped server (the guest powered off itself).
			if err := c.Stop(ctx, inst); err != nil {
				t.Fatalf("Stop on a stopped server: %v", err)
			}
			var img clouds.Image
			if err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "dstat-20261123-2100-abc1234", Tags: provenance(build), Log: testLog(t)}, &img); err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			var got *openstacktest.Image
			for _, im := range f.Images("RegionOne") {
				if im.ID == img.ID {
					got = &im
				}
			}
			if got == nil || got.Status != "active" || got.Name != "dstat-20261123-2100-abc1234" {
				t.Fatalf("image %+v (id %q)", got, img.ID)
			}
			for k, v := range provenance(build) {
				if got.Properties[k] != v {
					t.Errorf("image property %s = %q, want %q", k, got.Properties[k], v)
				}
			}
			if tc.after != nil {
				tc.after(t, f)
			} else if n := f.Count(`/volume/`); n != 0 {
				t.Errorf("%d Cinder requests for a server on local disk", n)
			}
			left, err := c.Leftovers(ctx, build)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) != len(inst.Resources) {
				t.Errorf("Leftovers %+v, want the instance's %+v", left, inst.Resources)
			}
			terminate(t, c, inst)
			assertClean(t, f, "RegionOne", build)
			if left, _ := c.Leftovers(ctx, build); len(left) != 0 {
				t.Errorf("Leftovers after Terminate: %+v", left)
			}
			if len(f.Images("RegionOne")) != 2 {
				t.Errorf("the new image must survive Terminate")
			}
			if err := c.DeleteImage(ctx, &img); err != nil {
				t.Fatal(err)
			}
			if err := c.DeleteImage(ctx, &img); err != nil {
				t.Fatalf("second DeleteImage: %v", err)
			}
			if len(f.Images("RegionOne")) != 1 {
				t.Errorf("image not deleted")
			}
		})
	}
}
