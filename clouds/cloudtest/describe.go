package cloudtest

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// testDescribeAndTag checks clouds.ImageDescriber and clouds.ImageTagger as
// provenance uses them: a new image reads back with the tags Snapshot gave
// it; TagImage adds imagegen:provenance-sha256 and replaces a tag that is
// there (what a person editing imagegen:commit does), leaving the others,
// and tagging twice changes nothing more; once the image is deleted, both
// say KindNotFound.
func testDescribeAndTag(t *testing.T, h Harness) {
	c := h.Open(t)
	d, describes := c.(clouds.ImageDescriber)
	tg, tags := c.(clouds.ImageTagger)
	b := newBuild(t, h, c)
	inst := b.launch(t)
	img := b.stopAndSnapshot(t, inst)
	b.terminate(t, inst)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// read returns the image's tags now: through the driver when it
	// describes, and from the backing fake when the harness says.
	read := func(when string) map[string]string {
		t.Helper()
		var got map[string]string
		if describes {
			im, err := d.DescribeImage(ctx, img.ID)
			if err != nil {
				t.Fatalf("DescribeImage(%s) %s: %v", img.ID, when, err)
			}
			if im.ID != img.ID {
				t.Errorf("DescribeImage(%s) %s returned image %q", img.ID, when, im.ID)
			}
			got = im.Tags
		}
		if h.Images != nil {
			stored, ok := findImage(h.Images(t), img.ID)
			if !ok {
				t.Fatalf("image %s is not in the cloud %s", img.ID, when)
			}
			if got != nil && !maps.Equal(imagegenOnly(got), imagegenOnly(stored.Tags)) {
				t.Errorf("DescribeImage(%s) %s says tags %v, the cloud holds %v", img.ID, when, got, stored.Tags)
			}
			if got == nil {
				got = stored.Tags
			}
		}
		return got
	}
	want := maps.Clone(img.Tags)
	if got := read("after Snapshot"); got != nil {
		checkTags(t, "after Snapshot", got, want)
	}

	if tags {
		edit := map[string]string{
			clouds.TagProvenance: strings.Repeat("5e", 32),
			clouds.TagCommit:     "89abcdef0123456789abcdef0123456789abcdef",
		}
		for i := range 2 {
			if err := tg.TagImage(ctx, img.ID, edit); err != nil {
				t.Fatalf("TagImage #%d: %v", i+1, err)
			}
		}
		maps.Copy(want, edit)
		if got := read("after TagImage"); got != nil {
			checkTags(t, "after TagImage", got, want)
		} else {
			t.Log("neither DescribeImage nor Harness.Images: TagImage's effect is not checked")
		}
	}

	if err := c.DeleteImage(ctx, img); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if describes {
		if im, err := d.DescribeImage(ctx, img.ID); clouds.KindOf(err) != clouds.KindNotFound {
			t.Errorf("DescribeImage of deleted image %s = %+v, %v (kind %q); want kind %q", img.ID, im, err, clouds.KindOf(err), clouds.KindNotFound)
		}
	}
	if tags {
		if err := tg.TagImage(ctx, img.ID, map[string]string{clouds.TagProvenance: "0"}); clouds.KindOf(err) != clouds.KindNotFound {
			t.Errorf("TagImage of deleted image %s = %v (kind %q); want kind %q", img.ID, err, clouds.KindOf(err), clouds.KindNotFound)
		}
	}
}

// imagegenOnly keeps a cloud's imagegen:* tags: a cloud may hold more (EC2's
// Name tag), which drivers leave out.
func imagegenOnly(tags map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range tags {
		if strings.HasPrefix(k, clouds.TagManagedKey+":") {
			out[k] = v
		}
	}
	return out
}

func checkTags(t *testing.T, when string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: tag %s = %q, want %q (tags: %v)", when, k, got[k], v, got)
		}
	}
}
