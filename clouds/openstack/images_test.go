package openstack_test

import (
	"context"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
)

// TestBuildImages lists images by their imagegen:build property the way the
// sweep does, against a Glance that pages by 4: the filter is Glance's (one
// page for one build), every page is read for all builds, and half-made
// (saving, killed) images count.
func TestBuildImages(t *testing.T) {
	f := newFake(t, openstacktest.Options{ImageListMax: 4})
	prov := func(build, gen string) map[string]string {
		return map[string]string{clouds.TagBuild: build, clouds.TagGenerator: gen, "image_type": "snapshot"}
	}
	// The builds' images first: Glance lists newest first, so the uploads
	// added after them fill the first pages.
	ids := map[string]string{}
	for _, im := range []openstacktest.Image{
		{Name: "a1", Properties: prov("a", "dstat")},
		{Name: "a2", Status: "killed", Properties: prov("a", "dstat")},
		{Name: "a3", Status: "saving", Properties: prov("a", "dstat")},
		{Name: "b1", Properties: prov("b", "htop")},
		{Name: "ab1", Properties: prov("ab", "htop")},
	} {
		ids[im.Name] = f.AddImage("RegionOne", im)
	}
	for _, n := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
		f.AddImage("RegionOne", openstacktest.Image{Name: n, Properties: map[string]string{"os_distro": "ubuntu"}})
	}
	f.AddImage("RegionTwo", openstacktest.Image{Name: "other-region", Properties: prov("a", "dstat")})
	c := open(t, f, openstack.Config{})

	tests := []struct {
		build string
		want  []string // image names
		pages int      // list requests: a full page of 4 always brings a next link
	}{
		{"a", []string{"a1", "a2", "a3"}, 1},
		{"b", []string{"b1"}, 1},
		{"none", nil, 1},
		// 12 images (the base image too), 4 a page: 3 full pages and an empty one.
		{"", []string{"a1", "a2", "a3", "ab1", "b1"}, 4},
	}
	for _, tc := range tests {
		t.Run("build "+tc.build, func(t *testing.T) {
			before := f.Count(`^GET /RegionOne/image/v2/images$`)
			imgs, err := c.BuildImages(context.Background(), tc.build)
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Count(`^GET /RegionOne/image/v2/images$`) - before; got != tc.pages {
				t.Errorf("%d list requests, want %d", got, tc.pages)
			}
			cloudtest.CheckListed(t, imgs, tc.build, tc.want, func(t testing.TB, im clouds.Image) {
				if im.ID != ids[im.Name] {
					t.Errorf("image %s: id %q, want %q", im.Name, im.ID, ids[im.Name])
				}
				if im.Tags[clouds.TagGenerator] == "" || im.Tags["image_type"] != "" {
					t.Errorf("image %s: tags %v, want the imagegen:* properties only", im.Name, im.Tags)
				}
			})
		})
	}

	t.Run("a failed page is retried from the start", func(t *testing.T) {
		f.Inject(openstacktest.Fault{Method: "GET", Path: `/image/v2/images$`, Status: 503, Skip: 2, Times: 1})
		defer f.ClearFaults()
		imgs, err := c.BuildImages(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 5 {
			t.Errorf("after a 503 on page 3: %d images, want 5 (none twice): %v", len(imgs), imgs)
		}
	})

	t.Run("listed images delete", func(t *testing.T) {
		imgs, err := c.BuildImages(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		cloudtest.DeleteListed(t, c, imgs)
		if left, err := c.BuildImages(context.Background(), "a"); err != nil || len(left) > 0 {
			t.Fatalf("after deleting: %v, %v", left, err)
		}
		for _, im := range f.Images("RegionOne") {
			if im.Properties[clouds.TagBuild] == "a" {
				t.Errorf("image %s of build a is still in Glance", im.Name)
			}
		}
		if n := len(f.Images("RegionTwo")); n != 2 {
			t.Errorf("RegionTwo holds %d images, want its 2 untouched", n)
		}
	})
	if r := f.Rejected(); len(r) > 0 {
		t.Errorf("the fake refused requests: %q", r)
	}
}
