package openstack_test

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestLifecycleEndToEnd: the pipeline on the driver against the fake, the
// base image found in Glance by a filter (another project's public images,
// the newest match), the new image booted again for the test on a real
// sshd. A passing test sets imagegen:tested=passed on the image; a failing
// one deletes it; neither server is left.
func TestLifecycleEndToEnd(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	marker := filepath.Join(t.TempDir(), "marker")
	for _, tc := range []struct {
		name, test string
		state      builder.State
		wantErr    string
		images     int // in the fake afterwards: the four base images, and the new one when it passed
	}{
		{"pass", "grep -q built " + marker, builder.StateSucceeded, "", 5},
		{"fail", "echo checking >&2; exit 6", builder.StateFailed, "testing: running test: the test exited with code 6", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, openstacktest.Options{
				ConsoleHostKey: sshd.HostKey,
				OnActive:       func(_ openstacktest.Server, pub string) { sshd.Authorize(t, pub) },
			})
			day := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
			const distro = "p-debian-cloud-team"
			f.AddImage("RegionOne", openstacktest.Image{Name: "debian-12-genericcloud-amd64-20250401", Visibility: "public", Owner: distro, Created: day.AddDate(0, -1, 0)})
			newest := f.AddImage("RegionOne", openstacktest.Image{Name: "debian-12-genericcloud-amd64-20250501", Visibility: "public", Owner: distro, Created: day})
			f.AddImage("RegionOne", openstacktest.Image{Name: "debian-12-genericcloud-amd64-20250601", Visibility: "private", Owner: distro, Created: day.AddDate(0, 1, 0)})
			no := false
			c := open(t, f, openstack.Config{SSHPort: port, Network: "private", InjectHostKey: &no})
			id := "lc-" + tc.name
			sp := &spec.Spec{Name: "web", Script: "echo built > " + marker, Digest: strings.Repeat("c", 64),
				Lifecycle: spec.Lifecycle{Test: tc.test},
				Clouds: map[string]spec.CloudSpec{"hotel": {SSHUser: sshd.User,
					Filter: &spec.ImageFilter{Name: "debian-12-genericcloud-amd64-*", Owner: distro, Visibility: "public", MostRecent: true}}}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res := builder.Run(ctx, builder.Job{Build: id, CloudName: "hotel", Cloud: c, Spec: sp, Branch: "main",
				Repo: "example/generators", Commit: strings.Repeat("d", 40), SSHTimeout: 20 * time.Second, CleanupTimeout: 30 * time.Second})
			if res.State != tc.state || !strings.HasPrefix(res.Error, tc.wantErr) {
				t.Fatalf("state %s error %q, want %s %q", res.State, res.Error, tc.state, tc.wantErr)
			}
			if res.BaseImage != newest {
				t.Errorf("base image %s, want the newest public match %s", res.BaseImage, newest)
			}
			if n := f.Count(`^POST \S*/servers$`); n != 2 {
				t.Errorf("%d servers created, want the build's and the test's: %q", n, f.Requests())
			}
			assertClean(t, f, "", id) // both servers, their key pairs and addresses
			imgs := f.Images("")
			if len(imgs) != tc.images {
				t.Fatalf("%d images, want %d: %+v", len(imgs), tc.images, imgs)
			}
			if tc.state != builder.StateSucceeded {
				return
			}
			for _, im := range imgs {
				if im.ID == res.Image.ID && (im.Properties[clouds.TagTested] != clouds.TestedPassed || im.Properties[clouds.TagBaseImage] != newest) {
					t.Errorf("image %+v", im)
				}
			}
			// Tagging again replaces the property (Glance refuses add on one that exists).
			if err := c.TagImage(ctx, res.Image.ID, map[string]string{clouds.TagTested: clouds.TestedFailed}); err != nil {
				t.Errorf("TagImage again: %v", err)
			}
		})
	}
}
