package ec2_test

import (
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

func TestConformance(t *testing.T) {
	yes := true
	tests := []struct {
		name string
		opts ec2test.Options
		cfg  ec2.Config
	}{
		{"instant cloud", ec2test.Options{}, ec2.Config{}},
		{"public IP through a network interface, bigger gp3 root", ec2test.Options{}, ec2.Config{
			AssociatePublicIP: &yes, SubnetID: ec2test.Subnet, VolumeSize: 20, VolumeType: "gp3", IAMInstanceProfile: "imagegen-builder"}},
		// Slow state changes, so the suite's cancellations land inside the waits.
		{"slow cloud", ec2test.Options{BootDelay: 300 * time.Millisecond, StopDelay: 200 * time.Millisecond,
			TerminateDelay: 100 * time.Millisecond, ImageDelay: 300 * time.Millisecond, DependencyLinger: 50 * time.Millisecond}, ec2.Config{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			cloudtest.Run(t, cloudtest.Harness{
				Open:     func(t *testing.T) clouds.Cloud { return open(t, f, tc.cfg) },
				Image:    ec2test.BaseImage,
				User:     "ubuntu",
				Size:     "t3.micro",
				Live:     func(*testing.T) []clouds.Resource { return f.Live() },
				Images:   func(*testing.T) []clouds.Image { return f.Images() },
				Backing:  func(*testing.T) []clouds.Resource { return f.Snapshots() },
				BadImage: "ami-0000000000000dead",
				SkipSSH:  false,
			})
			if v := f.Violations(); len(v) > 0 {
				t.Errorf("violations: %q", v)
			}
			for _, r := range append(f.Volumes(), f.Snapshots()...) {
				t.Errorf("%s %s (build %s) outlived the suite", r.Kind, r.ID, r.Build)
			}
		})
	}
}
