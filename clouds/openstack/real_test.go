package openstack_test

// The driver against a real Keystone and a real Glance (Debian's packages,
// started once for the test binary by servicetest.StartOpenStack), with openstacktest
// as the cloud's Nova, Neutron and Cinder only: every token is Keystone's,
// every image the driver finds, makes, tags, lists and deletes is Glance's.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.OpenStackMain(m) }

// realCloudName is the cloud's name in the server config, the one auth
// errors name.
const realCloudName = "hotel-openstack"

// realEnv is one test's cloud: a region of the real Keystone lent to it,
// whose compute, network and block-storage endpoints lead to the test's fake.
type realEnv struct {
	os     *servicetest.OpenStack
	fake   *openstacktest.Fake
	region string
}

func newRealEnv(t *testing.T, o openstacktest.Options) *realEnv {
	t.Helper()
	ostack := servicetest.StartOpenStack(t)
	region := ostack.Region(t)
	o.Regions = []string{region}
	o.Real = &openstacktest.Real{KeystoneURL: ostack.KeystoneURL, GlanceURL: ostack.GlanceURL,
		User: "admin", Password: ostack.AdminPassword, Project: "admin"}
	f := openstacktest.New(o)
	t.Cleanup(f.Close)
	ostack.Route(t, region, f.Endpoints(region))
	e := &realEnv{os: ostack, fake: f, region: region}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the services' logs:\n%s", ostack.Logs())
		}
	})
	return e
}

// cloudsYAML writes a clouds.yaml whose entry "hotel" logs in with auth
// (password: "" the user's, "-" none).
func (e *realEnv) cloudsYAML(t *testing.T, auth servicetest.CloudAuth, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clouds.yaml")
	if err := os.WriteFile(path, []byte("clouds:\n"+e.os.CloudEntry(t, "hotel", e.region, auth, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// opener returns the driver's opener for the cloud "hotel-openstack" logging in with auth.
func (e *realEnv) opener(t *testing.T, c openstack.Config, auth servicetest.CloudAuth, password string, ask bool) *openstack.Opener {
	t.Helper()
	c.Cloud = "hotel"
	if c.CloudsFile == "" {
		c.CloudsFile = e.cloudsYAML(t, auth, password)
	}
	if c.Flavor == "" {
		c.Flavor = "m1.small"
	}
	if c.ConsoleTimeout == 0 {
		c.ConsoleTimeout = 2 * time.Second
	}
	op, err := openstack.New(realCloudName, c, ask, fastOpts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return op
}

func (e *realEnv) open(t *testing.T, c openstack.Config) *openstack.Cloud {
	t.Helper()
	cl, err := e.opener(t, c, servicetest.PasswordDomainNames, "", false).Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return cl.(*openstack.Cloud)
}

// images are Glance's images as tags, read as the admin, not through the driver.
func (e *realEnv) images(t *testing.T) []clouds.Image {
	var out []clouds.Image
	for _, im := range e.os.Images(t) {
		out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: im.Properties})
	}
	return out
}

// buildImages are Glance's images whose imagegen:build is build, any state.
func (e *realEnv) buildImages(t *testing.T, build string) []servicetest.GlanceImage {
	var out []servicetest.GlanceImage
	for _, im := range e.os.Images(t) {
		if im.Properties[clouds.TagBuild] == build {
			out = append(out, im)
		}
	}
	return out
}

// checkFake fails on requests the fake refused and orderings it punishes.
func (e *realEnv) checkFake(t *testing.T) {
	t.Helper()
	if r := e.fake.Rejected(); len(r) > 0 {
		t.Errorf("the fake refused request bodies the real API would refuse: %q", r)
	}
	if v := e.fake.Violations(); len(v) > 0 {
		t.Errorf("ordering violations: %q", v)
	}
}

// TestRealConformance runs the conformance suite with the images in the real Glance.
func TestRealConformance(t *testing.T) {
	tests := []struct {
		name string
		cfg  openstack.Config
	}{
		// Boot from volume (Cinder's upload, the PATCH once active) is
		// TestRealSnapshot's: the suite's Glance side is the same.
		{"fixed address", openstack.Config{Network: "private"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newRealEnv(t, openstacktest.Options{})
			cloudtest.Run(t, cloudtest.Harness{
				Open:     func(t *testing.T) clouds.Cloud { return e.open(t, tc.cfg) },
				Image:    e.os.BaseImageID,
				User:     "ubuntu",
				Size:     "m1.small",
				Live:     func(*testing.T) []clouds.Resource { return e.fake.Live(e.region) },
				Images:   e.images,
				BadImage: "no-such-image",
				// A token's first use costs Glance a check with Keystone.
				FailWithin: 10 * time.Second,
			})
			e.checkFake(t)
		})
	}
}

// TestRealSnapshot: the image a build makes is a private Glance snapshot,
// owned by the build's project, active, with the provenance as properties
// (Nova's own and the base image's beside them), and it outlives the server;
// the volume path's provenance comes by a PATCH Glance accepts.
func TestRealSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  openstack.Config
	}{
		{"local disk", openstack.Config{Network: "private"}},
		{"boot from volume", openstack.Config{VolumeSize: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Uploads of a second and a half: a PATCH while Glance saves
			// the data would be lost, or break the upload.
			e := newRealEnv(t, openstacktest.Options{SnapshotDelay: 3 * time.Second})
			c := e.open(t, tc.cfg)
			build := "real-" + strings.ReplaceAll(tc.name, " ", "-")
			img, err := runBuild(t, c, build, e.os.BaseImageID)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			got, ok := e.os.Image(t, img.ID)
			if !ok {
				t.Fatalf("image %s is not in Glance", img.ID)
			}
			if got.Status != "active" || got.Name != "img-"+build || got.Owner != e.os.ProjectID || got.Visibility != "private" {
				t.Errorf("image %+v: want active, named img-%s, private to project %s", got, build, e.os.ProjectID)
			}
			want := provenance(build)
			want[clouds.TagBaseImage] = e.os.BaseImageID
			for k, v := range want {
				if got.Properties[k] != v {
					t.Errorf("property %s = %q, want %q", k, got.Properties[k], v)
				}
			}
			if tc.cfg.VolumeSize == 0 && (got.Properties["image_type"] != "snapshot" || got.Properties["os_distro"] != "debian") {
				t.Errorf("properties %v: want Nova's image_type and the base image's os_distro", got.Properties)
			}
			listed, err := c.BuildImages(context.Background(), build)
			if err != nil {
				t.Fatal(err)
			}
			cloudtest.CheckListed(t, listed, build, []string{"img-" + build}, func(t testing.TB, im clouds.Image) {
				if im.ID != img.ID || im.Tags[clouds.TagCommit] != want[clouds.TagCommit] || im.Tags["os_distro"] != "" {
					t.Errorf("listed %+v: want image %s with its imagegen:* properties only", im, img.ID)
				}
			})
			if err := c.DeleteImage(context.Background(), img); err != nil {
				t.Fatal(err)
			}
			if _, ok := e.os.Image(t, img.ID); ok {
				t.Errorf("image %s still in Glance after DeleteImage", img.ID)
			}
			assertRealClean(t, e, build)
		})
	}
}

// runBuild is build (faults_test.go) on a real cloud: launch, stop, snapshot,
// terminate, booting from base.
func runBuild(t *testing.T, c *openstack.Cloud, id, base string) (*clouds.Image, error) {
	t.Helper()
	ctx := context.Background()
	inst := &clouds.Instance{Build: id}
	defer terminate(t, c, inst)
	req := launchReq(t, id)
	req.Image = base
	if err := c.Launch(ctx, req, inst); err != nil {
		return nil, err
	}
	if err := c.Stop(ctx, inst); err != nil {
		return nil, err
	}
	img := &clouds.Image{}
	tags := provenance(id)
	tags[clouds.TagBaseImage] = base
	err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + id, Tags: tags, Log: testLog(t)}, img)
	return img, err
}

// assertRealClean fails when the fake holds a server, key pair or floating IP
// of build or Glance a half-made image of it.
func assertRealClean(t *testing.T, e *realEnv, build string) {
	t.Helper()
	for _, r := range e.fake.Live(e.region) {
		if r.Build == build {
			t.Errorf("%s %s of build %s left behind", r.Kind, r.ID, build)
		}
	}
	for _, im := range e.buildImages(t, build) {
		if im.Status != "active" {
			t.Errorf("image %s (%s) of build %s left %s", im.ID, im.Name, build, im.Status)
		}
	}
	if n := e.fake.PendingUploads(); n != 0 {
		t.Errorf("%d snapshot uploads still pending", n)
	}
	e.checkFake(t)
}
