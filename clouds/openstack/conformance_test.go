package openstack_test

import (
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
)

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		opts openstacktest.Options
		cfg  openstack.Config
	}{
		{"fixed address", openstacktest.Options{}, openstack.Config{Network: "private"}},
		{"floating IP", openstacktest.Options{}, openstack.Config{FloatingIPPool: "public"}},
		{"boot from volume", openstacktest.Options{}, openstack.Config{VolumeSize: 10}},
		// Slow boots, so the suite's cancellations land inside the waits.
		{"slow cloud", openstacktest.Options{BootDelay: 300e6, StopDelay: 200e6, SnapshotDelay: 300e6, DeleteDelay: 100e6}, openstack.Config{FloatingIPPool: "public"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			cloudtest.Run(t, cloudtest.Harness{
				Open:     func(t *testing.T) clouds.Cloud { return open(t, f, tc.cfg) },
				Image:    openstacktest.BaseImageID,
				User:     "ubuntu",
				Size:     "m1.small",
				Live:     func(*testing.T) []clouds.Resource { return f.Live("RegionOne") },
				Images:   func(*testing.T) []clouds.Image { return f.CloudImages("RegionOne") },
				BadImage: "no-such-image",
			})
			if r := f.Rejected(); len(r) > 0 {
				t.Errorf("the fake refused request bodies: %q", r)
			}
			if v := f.Violations(); len(v) > 0 {
				t.Errorf("ordering violations: %q", v)
			}
		})
	}
}
