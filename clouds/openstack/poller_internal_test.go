package openstack

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
)

// TestImageLooksWhenImagesFinish: 250 builds wait on their images. The
// first look lists the images being made (one call); when they all finish
// at once, the next look lists those no longer being made in one call of
// what changed since (updated_at=gte:), not by id 100 at a time, and looks
// by id only at the one neither list shows (deleted).
func TestImageLooksWhenImagesFinish(t *testing.T) {
	// Glance's pages hold 250 here: the 250 images being made are one full
	// page, and a list that has seen every image it waits for asks for no
	// next (empty) page.
	f := openstacktest.New(openstacktest.Options{Regions: []string{"RegionOne"}, ImageListMax: 250})
	defer f.Close()
	file := filepath.Join(t.TempDir(), "clouds.yaml")
	yml := "clouds:\n  t:\n    auth:\n      auth_url: " + f.AuthURL + "\n      username: demo\n      password: secret\n" +
		"      project_name: demo\n      user_domain_name: Default\n      project_domain_name: Default\n" +
		"    region_name: RegionOne\n    interface: public\n"
	if err := os.WriteFile(file, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	op, err := New("t", Config{Cloud: "t", CloudsFile: file, Flavor: "m1.small"}, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	c := cl.(*Cloud)
	ctx := context.Background()
	ids := make([]string, 250)
	for i := range ids {
		ids[i] = f.AddImage("RegionOne", openstacktest.Image{Name: "img", Status: "saving"})
	}
	l := &imageLooks{}
	found, calls, err := l.fetch(ctx, c.image, ids)
	if err != nil || calls != 1 || len(found) != len(ids) {
		t.Fatalf("first look: %d found in %d calls, %v; want all 250 in one list of the images being made", len(found), calls, err)
	}
	if n := f.Count(`^GET /RegionOne/image/v2/images$`); n != 1 {
		t.Errorf("first look: %d image lists; want one (no next page once every image waited for is seen)", n)
	}
	for _, id := range ids[:248] {
		f.SetImageStatus("RegionOne", id, "active")
	}
	f.SetImageStatus("RegionOne", ids[248], "killed")
	if err := images.Delete(ctx, c.image, ids[249]).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	found, calls, err = l.fetch(ctx, c.image, ids)
	if err != nil {
		t.Fatal(err)
	}
	// The images being made (none), what changed since, the deleted one by id.
	if calls != 3 {
		t.Errorf("%d calls after 250 images finished; want 3", calls)
	}
	for i, id := range ids {
		im, ok := found[id]
		switch {
		case i < 248 && (!ok || im.Status != images.ImageStatusActive):
			t.Errorf("image %d: %v %q; want active", i, ok, im.Status)
		case i == 248 && (!ok || im.Status != images.ImageStatusKilled):
			t.Errorf("killed image: %v %q", ok, im.Status)
		case i == 249 && ok:
			t.Errorf("deleted image listed: %q", im.Status)
		}
	}
}
