package openstack

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagegen/imagegen/clouds"
)

var (
	_ clouds.ImageFinder = (*Cloud)(nil)
	_ clouds.ImageTagger = (*Cloud)(nil)
)

// FindImages lists Glance's active images matching f: visibility and owner
// (the project id) as Glance's own filters, the name as Glance's exact
// name filter unless it is a glob (then matched here), tags as property
// filters. Newest first by created_at.
func (c *Cloud) FindImages(ctx context.Context, f clouds.ImageFilter) ([]clouds.Image, error) {
	q := propertyQuery{ListOpts: images.ListOpts{Limit: imageListLimit, Status: images.ImageStatusActive,
		Visibility: images.ImageVisibility(f.Visibility), Owner: f.Owner}, props: maps.Clone(f.Tags)}
	if f.Name != "" && !strings.ContainsAny(f.Name, "*?[") {
		q.Name = f.Name
	}
	var out []clouds.Image
	err := c.retry(ctx, "find base images "+f.String(), func(ctx context.Context) error {
		out = out[:0]
		return images.List(c.image, q).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			all, err := images.ExtractImages(page)
			if err != nil {
				return false, err
			}
			for _, im := range all {
				props := map[string]string{}
				for k, v := range im.Properties {
					if s, ok := v.(string); ok {
						props[k] = s
					}
				}
				if im.Status != images.ImageStatusActive || !f.MatchName(im.Name) || !f.MatchTags(props) {
					continue
				}
				out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: imagegenTags(im.Properties), Created: im.CreatedAt})
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	clouds.SortNewestFirst(out)
	return out, nil
}

// TagImage sets properties on a Glance image, leaving its others:
// clouds.ImageTagger. Glance refuses to "add" a property that exists, so
// the patch replaces those and adds the rest. An image that does not exist
// is KindNotFound.
func (c *Cloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	op := fmt.Sprintf("tag image %s", id)
	return c.retry(ctx, op, func(ctx context.Context) error {
		im, err := images.Get(ctx, c.image, id).Extract()
		if err != nil {
			return err
		}
		var patch images.UpdateOpts
		for _, k := range slices.Sorted(maps.Keys(tags)) {
			how := images.AddOp
			if _, ok := im.Properties[k]; ok {
				how = images.ReplaceOp
			}
			patch = append(patch, images.UpdateImageProperty{Op: how, Name: k, Value: truncate(tags[k], 255)})
		}
		_, err = images.Update(ctx, c.image, id, patch).Extract()
		return err
	})
}
