package ec2_test

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
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// lifecycleCloud is cloudInit keeping the driver's image finder and tagger.
type lifecycleCloud struct{ cloudInit }

func (c lifecycleCloud) FindImages(ctx context.Context, f clouds.ImageFilter) ([]clouds.Image, error) {
	return c.Cloud.(clouds.ImageFinder).FindImages(ctx, f)
}

func (c lifecycleCloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	return c.Cloud.(clouds.ImageTagger).TagImage(ctx, id, tags)
}

// TestLifecycleEndToEnd: the pipeline on the driver against the fake, the
// base image found by a DescribeImages filter (the newest of the owner's
// matches), the new AMI booted again for the test on a real sshd. A passing
// test tags the AMI imagegen:tested=passed; a failing one deregisters it and
// deletes its snapshot; neither VM is left.
func TestLifecycleEndToEnd(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	marker := filepath.Join(t.TempDir(), "marker")
	for _, tc := range []struct {
		name, test string
		wantState  builder.State
		wantErr    string
	}{
		{name: "pass", test: "grep -q built " + marker, wantState: builder.StateSucceeded},
		{name: "fail", test: "echo checking; exit 5", wantState: builder.StateFailed, wantErr: "testing: running test: the test exited with code 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, ec2test.Options{PublicIP: "127.0.0.1", ConsoleHostKey: sshd.HostKey})
			const owner = "136693071363"
			day := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
			f.AddBaseImage(ec2test.BaseImageSpec{Name: "debian-12-amd64-20250401", Owner: owner, Created: day.AddDate(0, -1, 0), Public: true})
			newest := f.AddBaseImage(ec2test.BaseImageSpec{Name: "debian-12-amd64-20250501", Owner: owner, Created: day, Public: true})
			f.AddBaseImage(ec2test.BaseImageSpec{Name: "debian-12-amd64-20250601", Owner: "999999999999", Created: day.AddDate(0, 1, 0), Public: true})
			f.AddBaseImage(ec2test.BaseImageSpec{Name: "ubuntu-24.04-20250601", Owner: owner, Created: day.AddDate(0, 1, 0), Public: true})
			c := open(t, f, ec2.Config{SSHPort: port})
			build := "lc-" + tc.name
			job := builder.Job{
				Build:     build,
				CloudName: "ec2-test",
				Cloud:     lifecycleCloud{cloudInit{Cloud: c, t: t, sshd: sshd}},
				Spec: &spec.Spec{Name: "web", Script: "echo built > " + marker, Digest: strings.Repeat("ef", 32),
					Lifecycle: spec.Lifecycle{Test: tc.test},
					Clouds: map[string]spec.CloudSpec{"ec2-test": {SSHUser: sshd.User, Size: "t3.small",
						Filter: &spec.ImageFilter{Name: "debian-12-amd64-*", Owner: owner, MostRecent: true}}}},
				Repo: "lab/images", Commit: "89abcdef0123456789abcdef0123456789abcdef", Branch: "main",
				SSHTimeout: 20 * time.Second, CleanupTimeout: 20 * time.Second, Observer: phaseLog{t},
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := builder.Run(ctx, job)
			if r.State != tc.wantState || !strings.HasPrefix(r.Error, tc.wantErr) {
				t.Fatalf("state %s, error %q; want %s with %q", r.State, r.Error, tc.wantState, tc.wantErr)
			}
			if r.BaseImage != newest {
				t.Errorf("base image %s, want the newest match %s", r.BaseImage, newest)
			}
			instances := 0
			for _, req := range f.Requests() {
				if req.Action == "RunInstances" {
					instances++
					if instances == 1 && req.Form.Get("ImageId") != newest {
						t.Errorf("the build VM booted %s, want %s", req.Form.Get("ImageId"), newest)
					}
				}
			}
			if instances != 2 {
				t.Errorf("%d instances run, want the build's and the test's", instances)
			}
			if tc.wantState == builder.StateSucceeded {
				var tagged bool
				for _, im := range f.Images() {
					if im.ID == r.Image.ID {
						tagged = im.Tags[clouds.TagTested] == clouds.TestedPassed && im.Tags[clouds.TagBaseImage] == newest && im.Tags[clouds.TagBranch] == "main"
					}
				}
				if !tagged {
					t.Errorf("image %s not tagged: %+v", r.Image.ID, f.Images())
				}
				deleteImage(t, c, r.Image)
			}
			assertClean(t, f, build) // instances, key pairs, groups, volumes; the failed test's AMI and snapshot
		})
	}
}

// A filter that matches nothing fails at once, before anything is made.
func TestLifecycleFilterMatchesNothing(t *testing.T) {
	f := newFake(t, ec2test.Options{})
	c := open(t, f, ec2.Config{})
	job := builder.Job{Build: "lc-none", CloudName: "ec2-test", Cloud: c,
		Spec: &spec.Spec{Name: "web", Script: "true", Clouds: map[string]spec.CloudSpec{"ec2-test": {SSHUser: "admin",
			Filter: &spec.ImageFilter{Name: "debian-13-*", Owner: "136693071363", MostRecent: true}}}}}
	r := builder.Run(context.Background(), job)
	want := `finding base image: not-found: the image filter {name: "debian-13-*", owner: "136693071363", most_recent: true} matches no image`
	if r.State != builder.StateFailed || !strings.HasPrefix(r.Error, want) || hasAction(f, "RunInstances") {
		t.Errorf("state %s error %q", r.State, r.Error)
	}
}
