package ec2_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

// pipeline runs what builder.Run asks of a cloud: Launch, Stop, Snapshot, and
// always the cleanup (DeleteImage on failure after an image id, then
// Terminate) on a fresh context. It returns the first error and the image.
func pipeline(t *testing.T, c clouds.Cloud, req clouds.LaunchRequest) (*clouds.Image, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst := &clouds.Instance{Build: req.Build}
	img := &clouds.Image{}
	err := c.Launch(ctx, req, inst)
	if err == nil {
		err = c.Stop(ctx, inst)
	}
	if err == nil {
		err = c.Snapshot(ctx, inst, snapReq(req.Build, req.Log), img)
	}
	if err != nil && img.ID != "" {
		deleteImage(t, c, img)
	}
	terminate(t, c, inst)
	return img, err
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name   string
		opts   ec2test.Options
		faults []ec2test.Fault
		image  string
		// wantKind "" means the build succeeds.
		wantKind clouds.Kind
		wantCode string
		wantHint string
		check    func(t *testing.T, f *ec2test.Fake)
		// slow, when set, says why the case is left to the full run
		// (make test), not make unit (go test -short).
		slow string
	}{
		{
			name: "security group in use for a while after termination",
			opts: ec2test.Options{TerminateDelay: 50 * time.Millisecond, DependencyLinger: 300 * time.Millisecond},
			check: func(t *testing.T, f *ec2test.Fake) {
				if n := f.Calls("DeleteSecurityGroup"); n < 3 {
					t.Errorf("DeleteSecurityGroup called %d times; the DependencyViolation should have been retried", n)
				}
			},
		},
		{
			name: "throttling storm on every call",
			// More throttles in a row than the SDK's attempts: the driver's own retries carry on.
			faults: []ec2test.Fault{{Code: "RequestLimitExceeded", Status: 503, Times: 25}},
			slow:   "about 50 s: after 25 throttles the SDK's adaptive retryer sends the account's calls at its floor of 0.5 a second until they succeed again",
			check: func(t *testing.T, f *ec2test.Fake) {
				if n := len(f.Requests()); n < 40 {
					t.Errorf("only %d requests: the storm did not happen", n)
				}
			},
		},
		{
			name:   "5xx while waiting for running",
			opts:   ec2test.Options{BootDelay: 50 * time.Millisecond},
			faults: []ec2test.Fault{{Action: "DescribeInstances", Code: "InternalError", Status: 500, Times: 15}},
		},
		{
			name:     "image fails",
			opts:     ec2test.Options{FailImages: true, ImageDelay: 30 * time.Millisecond},
			wantKind: clouds.KindFailed,
			wantCode: "Client.InternalError",
		},
		{
			name:     "no capacity",
			faults:   []ec2test.Fault{{Action: "RunInstances", Code: "InsufficientInstanceCapacity", Status: 500}},
			wantKind: clouds.KindCapacity,
			wantCode: "InsufficientInstanceCapacity",
			wantHint: "another instance_type",
			check: func(t *testing.T, f *ec2test.Fake) {
				if n := f.Calls("RunInstances"); n != 1 {
					t.Errorf("RunInstances called %d times; capacity errors must fail at once", n)
				}
			},
		},
		{
			name:     "instance limit",
			faults:   []ec2test.Fault{{Action: "RunInstances", Code: "InstanceLimitExceeded"}},
			wantKind: clouds.KindQuota,
			wantCode: "InstanceLimitExceeded",
			wantHint: "Service Quotas",
		},
		{
			name:     "missing permission for CreateImage",
			faults:   []ec2test.Fault{{Action: "CreateImage", Code: "UnauthorizedOperation", Status: 403}},
			wantKind: clouds.KindAuth,
			wantCode: "UnauthorizedOperation",
			wantHint: "docs/ec2.md",
		},
		{
			name:     "unknown AMI",
			image:    "ami-0000000000000beef",
			wantKind: clouds.KindNotFound,
			wantCode: "InvalidAMIID.NotFound",
			check: func(t *testing.T, f *ec2test.Fake) {
				if hasAction(f, "ImportKeyPair") || hasAction(f, "RunInstances") {
					t.Error("resources were created for an image that does not exist")
				}
			},
		},
		{
			name:     "malformed AMI",
			image:    "ubuntu-22.04",
			wantKind: clouds.KindInvalid,
			wantCode: "InvalidAMIID.Malformed",
		},
		{
			name:     "refused credentials",
			faults:   []ec2test.Fault{{Code: "AuthFailure", Status: 401}},
			wantKind: clouds.KindAuth,
			wantCode: "AuthFailure",
			check: func(t *testing.T, f *ec2test.Fake) {
				if n := f.Calls("DescribeImages"); n != 1 {
					t.Errorf("DescribeImages called %d times; auth errors must fail at once", n)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.slow != "" && testing.Short() {
				t.Skip("slow, runs in make test: " + tc.slow)
			}
			f := newFake(t, tc.opts)
			for _, flt := range tc.faults {
				f.Inject(flt)
			}
			c := open(t, f, ec2.Config{})
			id := "fault-" + strings.ReplaceAll(tc.name, " ", "-")
			req, logs := launchReq(t, id)
			if tc.image != "" {
				req.Image = tc.image
			}
			start := time.Now()
			img, err := pipeline(t, c, req)
			took := time.Since(start)
			t.Logf("build: %v (took %v)", err, took)
			if tc.wantKind == "" {
				if err != nil {
					t.Fatalf("build failed: %v", err)
				}
				if img.ID == "" || len(img.Resources) == 0 {
					t.Fatalf("image %+v: want an id and its snapshots", img)
				}
				deleteImage(t, c, img)
			} else {
				if err == nil {
					t.Fatal("build succeeded; want it to fail")
				}
				if k := clouds.KindOf(err); k != tc.wantKind {
					t.Errorf("error %v: kind %q, want %q", err, k, tc.wantKind)
				}
				var ce *clouds.Error
				if !errors.As(err, &ce) || ce.Code != tc.wantCode {
					t.Errorf("error %v: want AWS code %q", err, tc.wantCode)
				}
				if !strings.Contains(err.Error(), tc.wantCode) || !strings.Contains(err.Error(), tc.wantHint) {
					t.Errorf("error %q does not name the code %q and the hint %q", err, tc.wantCode, tc.wantHint)
				}
				if tc.wantKind != clouds.KindFailed && took > 5*time.Second {
					t.Errorf("a permanent error took %v to fail", took)
				}
			}
			if tc.check != nil {
				tc.check(t, f)
			}
			assertClean(t, f, id)
			if strings.Contains(logs.String(), testSecret) {
				t.Error("the secret key reached the build log")
			}
		})
	}
}
