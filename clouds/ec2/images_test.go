package ec2_test

import (
	"context"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

// TestBuildImages lists AMIs by their imagegen:build tag the way the sweep
// does, against an EC2 that answers 2 images a page: the filter is EC2's
// (owner self, the tag), every page is read, pending and failed AMIs count,
// and each listed AMI brings its snapshots, so deleting it removes them.
func TestBuildImages(t *testing.T) {
	f := newFake(t, ec2test.Options{ImagePage: 2})
	prov := func(build, name string) map[string]string {
		return map[string]string{clouds.TagBuild: build, clouds.TagGenerator: "dstat", "Name": name}
	}
	ids := map[string]string{}
	for _, im := range []struct{ name, state, build string }{
		{"a1", "available", "a"},
		{"a2", "failed", "a"},
		{"a3", "pending", "a"},
		{"b1", "available", "b"},
		{"ab1", "available", "ab"},
	} {
		ids[im.name] = f.AddImage(im.name, im.state, prov(im.build, im.name))
	}
	for _, n := range []string{"hand-made-1", "hand-made-2", "hand-made-3"} {
		ids[n] = f.AddImage(n, "", map[string]string{"Name": n, "team": "lab"})
	}
	c := open(t, f, ec2.Config{}).(clouds.ImageLister)

	tests := []struct {
		build string
		want  []string // image names
		pages int      // DescribeImages calls
	}{
		{"a", []string{"a1", "a2", "a3"}, 2},
		{"b", []string{"b1"}, 1},
		{"none", nil, 1},
		{"", []string{"a1", "a2", "a3", "ab1", "b1"}, 3},
	}
	for _, tc := range tests {
		t.Run("build "+tc.build, func(t *testing.T) {
			before := len(f.Requests())
			imgs, err := c.BuildImages(context.Background(), tc.build)
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			for _, r := range f.Requests()[before:] {
				if r.Action != "DescribeImages" {
					continue
				}
				calls++
				if r.Form.Get("Owner.1") != "self" || r.Form.Get("MaxResults") != "1000" {
					t.Errorf("DescribeImages form %v: want Owner.1=self and MaxResults=1000", r.Form)
				}
			}
			if calls != tc.pages {
				t.Errorf("%d DescribeImages calls, want %d", calls, tc.pages)
			}
			cloudtest.CheckListed(t, imgs, tc.build, tc.want, func(t testing.TB, im clouds.Image) {
				if im.ID != ids[im.Name] {
					t.Errorf("image %s: id %q, want %q", im.Name, im.ID, ids[im.Name])
				}
				if len(im.Resources) != 1 || im.Resources[0].Kind != clouds.KindSnapshot {
					t.Errorf("image %s: resources %v, want its EBS snapshot", im.Name, im.Resources)
				}
			})
		})
	}

	t.Run("throttled on page 2, retried from the start", func(t *testing.T) {
		// With the SDK's own retries off, the driver's retry lists again.
		once := open(t, f, ec2.Config{MaxAttempts: 1}).(clouds.ImageLister)
		// The first page passes (a delay-only fault), the second is throttled.
		f.Inject(ec2test.Fault{Action: "DescribeImages", Times: 1})
		f.Inject(ec2test.Fault{Action: "DescribeImages", Code: "RequestLimitExceeded", Status: 503, Times: 1})
		before := len(f.Requests())
		imgs, err := once.BuildImages(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 5 {
			t.Errorf("%d images, want 5, none twice: %v", len(imgs), imgs)
		}
		if n := len(f.Requests()) - before; n != 5 {
			t.Errorf("%d calls, want 5: 2 pages, the second throttled, then 3 pages", n)
		}
	})

	t.Run("listed images delete with their snapshots", func(t *testing.T) {
		imgs, err := c.BuildImages(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range imgs {
			deleteImage(t, c.(clouds.Cloud), &im)
		}
		assertClean(t, f, "a")
		if left, err := c.BuildImages(context.Background(), "a"); err != nil || len(left) > 0 {
			t.Fatalf("after deleting: %v, %v", left, err)
		}
		if n := len(f.Images()); n != 5 {
			t.Errorf("%d images left, want the 5 of other builds and hands", n)
		}
	})
}
