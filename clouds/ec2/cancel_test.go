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

// TestCtrlCDuringEachWait cancels each wait once the fake shows the driver
// polling it, checks the call returns promptly with context.Canceled, and that
// the cleanup on a fresh context leaves nothing of the build.
func TestCtrlCDuringEachWait(t *testing.T) {
	const long = 2500 * time.Millisecond
	tests := []struct {
		name string
		opts ec2test.Options
		cfg  ec2.Config
		// upTo runs the steps before the one canceled, on a live context.
		upTo int
		// noHostKey makes Launch read host keys from the console.
		noHostKey bool
		// pollAction is the call the wait repeats; cancel after it is seen twice.
		pollAction string
	}{
		{name: "waiting for running", opts: ec2test.Options{BootDelay: 10 * long}, upTo: 0, pollAction: "DescribeInstances"},
		{name: "reading host keys from the console", opts: ec2test.Options{}, cfg: ec2.Config{ConsoleTimeout: time.Minute},
			upTo: 0, noHostKey: true, pollAction: "GetConsoleOutput"},
		{name: "waiting for stopped", opts: ec2test.Options{StopDelay: 10 * long}, upTo: 1, pollAction: "DescribeInstances"},
		{name: "waiting for the image", opts: ec2test.Options{ImageDelay: 10 * long}, upTo: 2, pollAction: "DescribeImages"},
		{name: "waiting for termination", opts: ec2test.Options{TerminateDelay: long}, upTo: 3, pollAction: "DescribeInstances"},
		{name: "retrying DependencyViolation", opts: ec2test.Options{DependencyLinger: long}, upTo: 3, pollAction: "DeleteSecurityGroup"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			c := open(t, f, tc.cfg)
			id := "cancel-" + strings.ReplaceAll(tc.name, " ", "-")
			req, _ := launchReq(t, id)
			if tc.noHostKey {
				req.HostKey = clouds.HostKey{}
			}
			inst := &clouds.Instance{Build: id}
			img := &clouds.Image{}
			steps := []func(ctx context.Context) error{
				func(ctx context.Context) error { return c.Launch(ctx, req, inst) },
				func(ctx context.Context) error { return c.Stop(ctx, inst) },
				func(ctx context.Context) error { return c.Snapshot(ctx, inst, snapReq(id, req.Log), img) },
				func(ctx context.Context) error {
					// The image is the product: it must be usable before termination, and is kept.
					if err := c.DeleteImage(ctx, img); err != nil {
						return err
					}
					return c.Terminate(ctx, inst)
				},
			}
			for i := 0; i < tc.upTo; i++ {
				if err := steps[i](context.Background()); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			before := f.Calls(tc.pollAction)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- steps[tc.upTo](ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for f.Calls(tc.pollAction) < before+2 {
				select {
				case err := <-done:
					t.Fatalf("the step ended (%v) before it was canceled", err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s polling seen", tc.pollAction)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			canceled := time.Now()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("canceled step returned %v, want context.Canceled", err)
				}
				if took := time.Since(canceled); took > 2*time.Second {
					t.Errorf("took %v to return after cancellation", took)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the step did not return within 3s of cancellation")
			}
			// The pipeline's cleanup, on a fresh context.
			deleteImage(t, c, img)
			terminate(t, c, inst)
			assertClean(t, f, id)
		})
	}
}

// TestCtrlCDuringCreate cancels while EC2 has done a create call but not yet
// answered it: the driver must find what was created (by client token, group
// name, image name) so the cleanup removes it.
func TestCtrlCDuringCreate(t *testing.T) {
	tests := []struct {
		action string
		upTo   int // steps run before, as in TestCtrlCDuringEachWait
	}{
		{"ImportKeyPair", 0},
		{"CreateSecurityGroup", 0},
		{"RunInstances", 0},
		{"CreateImage", 2},
	}
	for _, tc := range tests {
		t.Run(tc.action, func(t *testing.T) {
			f := newFake(t, ec2test.Options{})
			c := open(t, f, ec2.Config{})
			id := "slow-" + tc.action
			req, _ := launchReq(t, id)
			inst := &clouds.Instance{Build: id}
			img := &clouds.Image{}
			steps := []func(ctx context.Context) error{
				func(ctx context.Context) error { return c.Launch(ctx, req, inst) },
				func(ctx context.Context) error { return c.Stop(ctx, inst) },
				func(ctx context.Context) error { return c.Snapshot(ctx, inst, snapReq(id, req.Log), img) },
			}
			for i := 0; i < tc.upTo; i++ {
				if err := steps[i](context.Background()); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			f.Inject(ec2test.Fault{Action: tc.action, Delay: 5 * time.Second})
			before := f.Calls(tc.action)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- steps[tc.upTo](ctx) }()
			for f.Calls(tc.action) == before {
				time.Sleep(2 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond) // the call has taken effect; its answer is held back
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("canceled %s returned %v, want context.Canceled", tc.action, err)
				}
			case <-time.After(3 * time.Second):
				t.Fatalf("%s did not return within 3s of cancellation", tc.action)
			}
			if tc.action == "CreateImage" && img.ID == "" {
				t.Error("the image created during the cancellation is not recorded in img.ID")
			}
			deleteImage(t, c, img)
			terminate(t, c, inst)
			assertClean(t, f, id)
		})
	}
}
