package simulated

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Base images by filter: a simulated cloud's base images are the ones its
// config lists (base_images:), those a test adds (AddBaseImage; kept in the
// state file with one), and the images it made. FindImages filters them as a
// cloud's image list would, so a spec's image: {name: ..., most_recent: true}
// works, and a new base image appearing can be tried without a cloud.

// OpFindImages is FindImages' operation, for Inject (OpTagImage, which
// the test's result uses too, is in faults.go).
const OpFindImages Op = "list images"

// BaseImage is a base image the simulated cloud has.
type BaseImage struct {
	ID         string            `json:"id" yaml:"id"`
	Name       string            `json:"name" yaml:"name"`
	Created    time.Time         `json:"created" yaml:"created"`
	Owner      string            `json:"owner,omitempty" yaml:"owner"`
	Visibility string            `json:"visibility,omitempty" yaml:"visibility"` // default public
	Tags       map[string]string `json:"tags,omitempty" yaml:"tags"`
}

// AddBaseImage makes a new base image appear, as a distribution's daily
// build would: FindImages lists it, Launch boots it. A zero Created is now.
func (c *Cloud) AddBaseImage(b BaseImage) error {
	if b.ID == "" || b.Name == "" {
		return clouds.Errorf(clouds.KindInvalid, "add base image", "a base image needs an id and a name")
	}
	if b.Created.IsZero() {
		b.Created = c.now().UTC()
	}
	return c.withState(func() error {
		c.added = slices.DeleteFunc(c.added, func(x BaseImage) bool { return x.ID == b.ID })
		c.added = append(c.added, b)
		c.calls = append(c.calls, "add base image "+b.ID)
		return nil
	})
}

var _ clouds.ImageFinder = (*Cloud)(nil)

// FindImages implements clouds.ImageFinder: the base images and the usable
// images this cloud made that match f, newest first. Images it made are
// owned by "self" and private.
func (c *Cloud) FindImages(ctx context.Context, f clouds.ImageFilter) ([]clouds.Image, error) {
	var out []clouds.Image
	err := c.api(ctx, OpFindImages, func() error {
		out = out[:0]
		bases := append(slices.Clone(c.opts.BaseImageList), c.added...)
		for _, b := range bases {
			vis := b.Visibility
			if vis == "" {
				vis = "public"
			}
			if f.MatchName(b.Name) && f.MatchTags(b.Tags) && (f.Owner == "" || f.Owner == b.Owner) && (f.Visibility == "" || f.Visibility == vis) {
				out = append(out, clouds.Image{ID: b.ID, Name: b.Name, Tags: maps.Clone(b.Tags), Created: b.Created})
			}
		}
		for _, im := range c.imgs() {
			if c.imageStateLocked(im) != stateActive {
				continue
			}
			if f.MatchName(im.Name) && f.MatchTags(im.Tags) && (f.Owner == "" || f.Owner == "self") && (f.Visibility == "" || f.Visibility == "private") {
				out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: maps.Clone(im.Tags), Created: im.created})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	clouds.SortNewestFirst(out)
	return out, nil
}

// isBaseImage says whether id is one of the base images (c.mu held).
func (c *Cloud) isBaseImageLocked(id string) bool {
	for _, b := range c.opts.BaseImageList {
		if b.ID == id {
			return true
		}
	}
	for _, b := range c.added {
		if b.ID == id {
			return true
		}
	}
	return false
}
