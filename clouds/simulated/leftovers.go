package simulated

import (
	"context"
	"slices"

	"github.com/imagegen/imagegen/clouds"
)

// Leftovers implements clouds.Cloud.
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	err := c.api(ctx, OpLeftovers, func() error {
		out = out[:0]
		var rs []*resource
		if build != "" {
			rs = slices.Clone(c.byBuild[build])
		} else {
			for _, b := range c.byBuild {
				rs = append(rs, b...)
			}
		}
		slices.SortFunc(rs, func(a, b *resource) int { return a.seq - b.seq })
		for _, r := range rs {
			out = append(out, r.Resource)
		}
		return nil
	})
	return out, err
}

// Remove implements clouds.Cloud.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	return c.remove(ctx, OpRemove, r)
}

// remove deletes one resource in one API call (op); gone already is success.
func (c *Cloud) remove(ctx context.Context, op Op, r clouds.Resource) error {
	return c.api(ctx, op, func() error {
		if r.Kind == clouds.KindImage {
			if _, ok := c.imgs()[r.ID]; ok {
				delete(c.images, r.ID)
				c.imagesChanged()
				c.calls = append(c.calls, "delete image "+r.ID)
			}
			return nil
		}
		res, ok := c.resources[r.ID]
		if !ok || res.Kind != r.Kind {
			return nil
		}
		c.deleteLocked(res)
		c.calls = append(c.calls, "delete "+r.Kind+" "+r.ID)
		if r.Kind == clouds.KindServer {
			// Deleting a server whose image is still saving spoils the image,
			// as on real clouds: the contract says Snapshot's return comes first.
			for _, im := range c.imgs() {
				if im.server == r.ID && c.imageStateLocked(im) == statePending {
					im.state = stateError
					c.imagesChanged()
				}
			}
		}
		return nil
	})
}
