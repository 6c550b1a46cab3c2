package openstack

import (
	"context"
	"maps"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagegen/imagegen/clouds"
)

// TagImage (clouds.ImageTagger), which the test's result uses as
// provenance does, is in images.go.
var _ clouds.ImageFinder = (*Cloud)(nil)

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
