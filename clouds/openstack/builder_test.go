package openstack_test

import (
	"context"
	"net"
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

// TestBuilderEndToEnd runs the whole pipeline (builder.Run) on the driver and
// the fake, the script running over SSH on a real sshd that the fake's server
// address leads to.
func TestBuilderEndToEnd(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	tests := []struct {
		name     string
		script   string
		state    builder.State
		exitCode int
		images   int // images in the fake afterwards, the base image included
	}{
		{"script succeeds", "echo built by imagegen\n", builder.StateSucceeded, 0, 2},
		{"script fails", "echo about to fail >&2\nexit 3\n", builder.StateFailed, 3, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, openstacktest.Options{
				ConsoleHostKey: sshd.HostKey,
				// cloud-init would put the key pair in the user's authorized_keys.
				OnActive: func(_ openstacktest.Server, pub string) { sshd.Authorize(t, pub) },
			})
			// The real sshd cannot take the build's generated host key, so the
			// driver pins the one the console shows.
			no := false
			c := open(t, f, openstack.Config{SSHPort: port, Network: "private", InjectHostKey: &no})
			id := "e2e-" + strings.ReplaceAll(tc.name, " ", "-")
			sp := &spec.Spec{Name: "dstat", Script: tc.script, Digest: strings.Repeat("c", 64),
				Clouds: map[string]spec.CloudSpec{"hotel": {Image: openstacktest.BaseImageID, SSHUser: sshd.User}}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res := builder.Run(ctx, builder.Job{Build: id, CloudName: "hotel", Cloud: c, Spec: sp,
				Repo: "example/generators", Commit: strings.Repeat("d", 40), SSHTimeout: 20 * time.Second, CleanupTimeout: 30 * time.Second})
			for _, ph := range res.Phases {
				t.Logf("phase %s took %s", ph.Phase, ph.Duration)
			}
			if res.State != tc.state || res.ExitCode != tc.exitCode {
				t.Fatalf("state %s exit %d (%v), want %s exit %d; log tail %q", res.State, res.ExitCode, res.Err, tc.state, tc.exitCode, res.LogTail)
			}
			if len(res.Leftovers) > 0 {
				t.Errorf("leftovers %+v", res.Leftovers)
			}
			assertClean(t, f, "", id)
			imgs := f.Images("")
			if len(imgs) != tc.images {
				t.Fatalf("%d images in the cloud, want %d", len(imgs), tc.images)
			}
			if tc.state != builder.StateSucceeded {
				return
			}
			if res.Image == nil {
				t.Fatal("no image in the result")
			}
			for _, im := range imgs {
				if im.ID != res.Image.ID {
					continue
				}
				if im.Status != "active" || im.Properties[clouds.TagCommit] != strings.Repeat("d", 40) ||
					im.Properties[clouds.TagScriptSHA] != strings.Repeat("c", 64) || im.Properties[clouds.TagBuild] != id {
					t.Errorf("image %+v lacks the provenance", im)
				}
			}
		})
	}
}
