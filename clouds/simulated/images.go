package simulated

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Snapshot implements clouds.Cloud: the image id is in img.ID at once; the
// image turns usable after SnapshotDelay.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	log := logger(req.Log)
	if c.opts.NoImages {
		return clouds.Errorf(clouds.KindInvalid, "create image", "this cloud makes no images")
	}
	if inst.ID == "" {
		return clouds.Errorf(clouds.KindInvalid, "create image", "the instance has no server")
	}
	if req.Name == "" {
		return clouds.Errorf(clouds.KindInvalid, "create image", "no image name")
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	if tags[clouds.TagBuild] == "" {
		tags[clouds.TagBuild] = inst.Build
	}
	var im *image
	err := c.api(ctx, OpSnapshot, func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "create image", Err: fmt.Errorf("server %s: %w", inst.ID, clouds.ErrNotFound)}
		}
		if r.state != stateStopped {
			// Real clouds would snapshot a running disk; refusing catches a
			// pipeline that forgot Stop.
			return &clouds.Error{Kind: clouds.KindInvalid, Op: "create image", Code: "InvalidState",
				Err: fmt.Errorf("server %s is %s, not stopped", inst.ID, r.state)}
		}
		c.seq++
		im = &image{
			Image:   clouds.Image{ID: fmt.Sprintf("sim-%s-%d", c.prefix, c.seq), Name: req.Name, Tags: tags},
			build:   tags[clouds.TagBuild],
			server:  inst.ID,
			state:   statePending,
			created: c.now(),
			readyAt: time.Now().Add(c.opts.SnapshotDelay),
			seq:     c.seq,
		}
		c.imgs()[im.ID] = im
		c.imagesChanged()
		c.calls = append(c.calls, "create image "+im.ID)
		return nil
	})
	if err != nil {
		return err
	}
	img.ID, img.Name, img.Tags = im.ID, im.Name, maps.Clone(tags)
	log.Info("simulated cloud: image created; saving", "image", im.ID, "name", im.Name)
	return c.waitImage(ctx, im.ID, im.readyAt)
}

func (c *Cloud) waitImage(ctx context.Context, id string, readyAt time.Time) error {
	check := func() (bool, error) {
		im, ok := c.imgs()[id]
		if !ok {
			return false, &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Err: fmt.Errorf("image %s was deleted while saving", id)}
		}
		switch c.imageStateLocked(im) {
		case stateError:
			return false, &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Code: "error",
				Err: fmt.Errorf("image %s failed: its server %s was deleted before the image was usable", id, im.server)}
		case stateActive:
			return true, nil
		}
		return false, nil
	}
	if err := c.api(ctx, OpWaitImage, func() error { _, err := check(); return err }); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, time.Until(readyAt)); err != nil {
		return err
	}
	return c.api(ctx, OpWaitImage, func() error {
		done, err := check()
		if err == nil && !done {
			err = &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Err: fmt.Errorf("image %s is still saving", id)}
		}
		return err
	})
}

func (c *Cloud) imageStateLocked(im *image) string {
	if im.state == statePending && !time.Now().Before(im.readyAt) {
		im.state = stateActive
		c.imagesChanged()
	}
	return im.state
}

// DeleteImage implements clouds.Cloud.
func (c *Cloud) DeleteImage(ctx context.Context, img *clouds.Image) error {
	if img.ID == "" {
		return nil
	}
	return c.api(ctx, OpDeleteImage, func() error {
		if _, ok := c.imgs()[img.ID]; ok {
			delete(c.images, img.ID)
			c.imagesChanged()
			c.calls = append(c.calls, "delete image "+img.ID)
		}
		return nil
	})
}

// BuildImages lists the images tagged with the build ("" for every build):
// clouds.ImageLister.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []clouds.Image
	for _, im := range c.Images() {
		if b := im.Tags[clouds.TagBuild]; b != "" && (build == "" || b == build) {
			out = append(out, im)
		}
	}
	return out, nil
}

// Images returns the images that exist, usable or half-made, with their tags,
// in creation order.
func (c *Cloud) Images() []clouds.Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer func() { _ = save() }() // best effort: a read-only listing
	}
	all := c.imgs()
	is := make([]*image, 0, len(all))
	for _, im := range all {
		is = append(is, im)
	}
	slices.SortFunc(is, func(a, b *image) int { return a.seq - b.seq })
	out := make([]clouds.Image, len(is))
	for i, im := range is {
		out[i] = im.Image
		out[i].Tags = maps.Clone(im.Tags)
	}
	return out
}

// ImageState returns an image's state: "pending", "active" or "error"; ok is
// false when no such image exists.
func (c *Cloud) ImageState(id string) (state string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer func() { _ = save() }() // best effort: a read-only listing
	}
	im, ok := c.imgs()[id]
	if !ok {
		return "", false
	}
	return c.imageStateLocked(im), true
}

var (
	_ clouds.ImageDescriber = (*Cloud)(nil)
	_ clouds.ImageTagger    = (*Cloud)(nil)
)

// DescribeImage returns the image with its tags as they are now:
// clouds.ImageDescriber. An image that does not exist is KindNotFound.
func (c *Cloud) DescribeImage(ctx context.Context, id string) (clouds.Image, error) {
	var out clouds.Image
	err := c.api(ctx, OpDescribeImage, func() error {
		im, ok := c.imgs()[id]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "describe image", Err: fmt.Errorf("image %s: %w", id, clouds.ErrNotFound)}
		}
		out = im.Image
		out.Tags = maps.Clone(im.Tags)
		return nil
	})
	return out, err
}

// TagImage sets tags on an existing image, leaving its other tags:
// clouds.ImageTagger. An image that does not exist is KindNotFound.
func (c *Cloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	return c.api(ctx, OpTagImage, func() error {
		im, ok := c.imgs()[id]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "tag image", Err: fmt.Errorf("image %s: %w", id, clouds.ErrNotFound)}
		}
		if im.Tags == nil {
			im.Tags = map[string]string{}
		}
		maps.Copy(im.Tags, tags)
		c.imagesChanged()
		c.calls = append(c.calls, "tag image "+id)
		return nil
	})
}
