package ec2_test

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
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// cloudInit stands in for the guest's cloud-init: it installs the build's key
// for the sshd's user. The "image" keeps the sshd's own host key, so the
// build's generated one is not passed on and the driver pins the console's.
type cloudInit struct {
	clouds.Cloud
	t    *testing.T
	sshd *servicetest.SSHD
}

func (c cloudInit) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	c.sshd.Authorize(c.t, req.AuthorizedKey)
	req.HostKey = clouds.HostKey{}
	return c.Cloud.Launch(ctx, req, inst)
}

// TestBuildEndToEnd runs builder.Run, the real pipeline, on the driver against
// the fake, with the script run over SSH on a real sshd.
func TestBuildEndToEnd(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	tests := []struct {
		name      string
		script    string
		opts      ec2test.Options
		faults    []ec2test.Fault
		wantState builder.State
		wantImage bool
		wantErr   string
	}{
		// Throttled all along (the account allows 3 calls a second, and the
		// first 3 are refused whatever the rate): the SDK's adaptive retries
		// slow the calls down to what EC2 takes and carry the build through.
		{name: "succeeds through a throttling storm", script: "echo building; test -d /tmp", wantState: builder.StateSucceeded, wantImage: true,
			opts: ec2test.Options{BootDelay: 50 * time.Millisecond, ImageDelay: 50 * time.Millisecond,
				Throttle: []ec2test.Throttle{{Rate: 3, Burst: 3}}},
			faults: []ec2test.Fault{{Code: "RequestLimitExceeded", Status: 503, Times: 3}}},
		{name: "script fails", script: "echo half; exit 3", wantState: builder.StateFailed, wantErr: "exited with code 3"},
		{name: "image fails", script: "true", opts: ec2test.Options{FailImages: true}, wantState: builder.StateFailed, wantErr: "failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.PublicIP, opts.ConsoleHostKey = "127.0.0.1", sshd.HostKey
			f := newFake(t, opts)
			for _, flt := range tc.faults {
				f.Inject(flt)
			}
			c := open(t, f, ec2.Config{SSHPort: port})
			build := "e2e-" + strings.ReplaceAll(tc.name, " ", "-")
			job := builder.Job{
				Build:     build,
				CloudName: "ec2-test",
				Cloud:     cloudInit{Cloud: c, t: t, sshd: sshd},
				Spec: &spec.Spec{Name: "dstat", Script: tc.script, Digest: strings.Repeat("ef", 32),
					Clouds: map[string]spec.CloudSpec{"ec2-test": {Image: ec2test.BaseImage, SSHUser: sshd.User, Size: "t3.small"}}},
				Repo:           "lab/images",
				Commit:         "89abcdef0123456789abcdef0123456789abcdef",
				SSHTimeout:     20 * time.Second,
				CleanupTimeout: 20 * time.Second,
				Observer:       phaseLog{t},
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := builder.Run(ctx, job)
			if r.State != tc.wantState || !strings.Contains(r.Error, tc.wantErr) {
				t.Fatalf("state %s, error %q; want %s with %q", r.State, r.Error, tc.wantState, tc.wantErr)
			}
			if len(r.Leftovers) > 0 {
				t.Errorf("the pipeline reports leftovers %v", r.Leftovers)
			}
			if len(opts.Throttle) > 0 {
				if _, throttled := f.CallsSince(time.Time{}); throttled == 0 {
					t.Error("the fake throttled no call: the storm did not happen")
				}
			}
			if tc.wantImage {
				if r.Image == nil || r.Image.ID == "" {
					t.Fatalf("no image in the result: %+v", r)
				}
				var stored *clouds.Image
				for _, im := range f.Images() {
					if im.ID == r.Image.ID {
						stored = &im
					}
				}
				if stored == nil {
					t.Fatalf("image %s is not in the cloud", r.Image.ID)
				}
				for k, want := range map[string]string{
					clouds.TagRepo: "lab/images", clouds.TagCommit: job.Commit, clouds.TagGenerator: "dstat",
					clouds.TagScriptSHA: job.Spec.Digest, clouds.TagBaseImage: ec2test.BaseImage, clouds.TagBuild: build,
				} {
					if stored.Tags[k] != want {
						t.Errorf("image tag %s = %q, want %q", k, stored.Tags[k], want)
					}
				}
				if !strings.HasPrefix(stored.Name, "dstat-") || !strings.HasSuffix(stored.Name, "-89abcde") {
					t.Errorf("image name %q", stored.Name)
				}
				deleteImage(t, c, r.Image)
			}
			assertClean(t, f, build)
		})
	}
}

// phaseLog puts the pipeline's phases and lines in the test log.
type phaseLog struct{ t *testing.T }

func (p phaseLog) Phase(cloud string, ph builder.Phase, at time.Time) {
	p.t.Logf("%s %s: %s", at.Format("15:04:05.000"), cloud, ph)
}
func (p phaseLog) Line(l builder.LogLine) {
	p.t.Logf("%s %s [%s] %s", l.Time.Format("15:04:05.000"), l.Cloud, l.Stream, l.Text)
}
