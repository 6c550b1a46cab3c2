package openstack

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagegen/imagegen/clouds"
)

// Snapshot saves the stopped server as an image carrying req.Tags as
// properties, and waits until Glance says it is active.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "snapshot", Err: errors.New("no server")}
	}
	md := map[string]string{}
	for k, v := range req.Tags {
		md[k] = truncate(v, 255)
	}
	img.Name = req.Name
	img.Tags = req.Tags
	if c.cfg.VolumeSize > 0 {
		return c.snapshotVolume(ctx, inst, req, img)
	}
	op := "create image " + req.Name
	tried := false
	err := c.retry(ctx, op, func(ctx context.Context) error {
		if img.ID == "" && tried {
			// A 5xx may have come after Nova made the image: adopt it, never
			// make two. Only this server's snapshot: another cloud of the
			// build sharing this Glance (two regions, one image service)
			// makes an image of the same name and build.
			if id, err := c.findImageByName(ctx, req.Name, req.Tags[clouds.TagBuild], inst.ID); err != nil {
				return err
			} else if id != "" {
				img.ID = id
				return nil
			}
		}
		tried = true
		id, err := imageIDFromCreate(servers.CreateImage(ctx, c.compute, inst.ID, servers.CreateImageOpts{Name: req.Name, Metadata: md}))
		if err != nil {
			return err
		}
		img.ID = id
		return nil
	})
	if err != nil && img.ID == "" && ctx.Err() != nil {
		// Canceled while Nova answered: the image may exist; find it so DeleteImage can.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		if id, lerr := c.findImageByName(lctx, req.Name, req.Tags[clouds.TagBuild], inst.ID); lerr == nil {
			img.ID = id
		}
	}
	if err != nil {
		return err
	}
	req.Log.Info("creating image, waiting for active", "image", img.ID, "name", req.Name)
	im, err := c.waitImage(ctx, img.ID)
	if err != nil {
		return err
	}
	return checkTags(im, req.Tags)
}

// checkTags fails when the image does not hold every tag as a property: the
// pipeline reports the tags it asked for, so the cloud's are checked here.
func checkTags(im *images.Image, tags map[string]string) error {
	got := imagegenTags(im.Properties)
	var bad []string
	for k, v := range tags {
		if got[k] != truncate(v, 255) {
			bad = append(bad, fmt.Sprintf("%s=%q", k, got[k]))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return &clouds.Error{Kind: clouds.KindFailed, Op: "tag image " + im.ID,
		Err: fmt.Errorf("the image's properties in Glance lack the provenance it was given: %s", strings.Join(bad, ", "))}
}

// snapshotVolume uploads a volume-backed server's boot volume to Glance as
// the image (Nova's createImage would make only a volume snapshot that the
// image points at, useless on another cloud and lost with the volume), then sets
// the provenance properties on it.
func (c *Cloud) snapshotVolume(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	var volID string
	err := c.retry(ctx, "find the boot volume of server "+inst.ID, func(ctx context.Context) error {
		s, err := servers.Get(ctx, c.compute, inst.ID).Extract()
		if err != nil {
			return err
		}
		if len(s.AttachedVolumes) == 0 {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "snapshot", Err: fmt.Errorf("server %s has no volume attached", inst.ID)}
		}
		volID = s.AttachedVolumes[0].ID
		return nil
	})
	if err != nil {
		return err
	}
	op := "upload volume " + volID + " as image " + req.Name
	tried := false
	err = c.retry(ctx, op, func(ctx context.Context) error {
		if img.ID == "" && tried {
			// As in Snapshot; Cinder's image carries no provenance yet (it
			// goes on once the image is active), so a half-made one of the
			// name counts.
			if id, err := c.findImageByName(ctx, req.Name, req.Tags[clouds.TagBuild], ""); err != nil {
				return err
			} else if id != "" {
				img.ID = id
				return nil
			}
		}
		tried = true
		vi, err := volumes.UploadImage(ctx, c.volume, volID, volumes.UploadImageOpts{
			ImageName: req.Name, Force: true, DiskFormat: "qcow2", ContainerFormat: "bare",
		}).Extract()
		if err != nil {
			return err
		}
		img.ID = vi.ImageID
		return nil
	})
	if err != nil {
		return err
	}
	// The provenance goes on once the image is active, not before: Glance
	// saves whole image records, so a PATCH overlapping Cinder's upload is
	// either dropped when the upload ends (its save purges the properties it
	// did not read) or, overlapping the upload's start, writes the image back
	// to queued and the upload fails ("cannot transition from queued to
	// active"), the image queued for good; both seen on a real Glance 25.
	// When Cinder starts uploading the driver cannot see. The cost: the image
	// of an upload whose worker died carries no imagegen:build for the sweep.
	req.Log.Info("uploading volume as image, waiting for active", "image", img.ID, "volume", volID, "name", req.Name)
	if _, err := c.waitImage(ctx, img.ID); err != nil {
		return err
	}
	im, err := c.tagImage(ctx, img.ID, req.Tags)
	if err != nil {
		return err
	}
	return checkTags(im, req.Tags)
}

// tagImage sets tags as properties of the image (a Glance JSON patch of adds,
// which replace a property that exists) and returns the image as Glance
// answered.
func (c *Cloud) tagImage(ctx context.Context, id string, tags map[string]string) (*images.Image, error) {
	var patch images.UpdateOpts
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		patch = append(patch, images.UpdateImageProperty{Op: images.AddOp, Name: k, Value: truncate(tags[k], 255)})
	}
	var im *images.Image
	err := c.retry(ctx, "tag image "+id, func(ctx context.Context) error {
		var err error
		im, err = images.Update(ctx, c.image, id, patch).Extract()
		return err
	})
	return im, err
}

// findImageByName finds the image a create that failed may have made: named
// name, of build, and the snapshot of server (Nova's instance_uuid) when
// server is given; without server (Cinder's upload, tagged only once
// active) an untagged image still being made counts too.
func (c *Cloud) findImageByName(ctx context.Context, name, build, server string) (string, error) {
	if build == "" {
		return "", nil
	}
	page, err := images.List(c.image, images.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		return "", err
	}
	all, err := images.ExtractImages(page)
	if err != nil {
		return "", err
	}
	for _, im := range all {
		b, tagged := im.Properties[clouds.TagBuild].(string)
		if server != "" {
			if src, _ := im.Properties["instance_uuid"].(string); b == build && src == server {
				return im.ID, nil
			}
			continue
		}
		making := im.Status == images.ImageStatusQueued || im.Status == images.ImageStatusSaving
		if b == build || (!tagged && making) {
			return im.ID, nil
		}
	}
	return "", nil
}

// imageIDFromCreate reads the new image's id the way the cloud gives it:
// in the body from microversion 2.45, else in the Location header; old clouds
// send no microversion header at all.
func imageIDFromCreate(r servers.CreateImageResult) (string, error) {
	if r.Err != nil {
		return "", r.Err
	}
	if id, err := r.ExtractImageID(); err == nil && id != "" {
		return id, nil
	}
	loc := r.Header.Get("Location")
	if loc == "" {
		return "", errors.New("the cloud returned no image id (no Location header)")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("image Location %q: %w", loc, err)
	}
	id := path.Base(u.Path)
	if id == "" || id == "." || id == "/" {
		return "", fmt.Errorf("image Location %q names no image", loc)
	}
	return id, nil
}

// DeleteImage deletes an image from Glance; one already gone is success.
func (c *Cloud) DeleteImage(ctx context.Context, img *clouds.Image) error {
	if img == nil || img.ID == "" {
		return nil
	}
	err := c.retry(ctx, "delete image "+img.ID, func(ctx context.Context) error {
		return images.Delete(ctx, c.image, img.ID).ExtractErr()
	})
	if clouds.IsNotFound(err) {
		return nil
	}
	return err
}

var _ clouds.ImageLister = (*Cloud)(nil)

// imageListLimit asks Glance for its largest usual page (api_limit_max is 1000
// by default); a deployment with a smaller cap answers less and a next link.
const imageListLimit = 1000

// propertyQuery is Glance's image list query with property filters, which
// gophercloud's ListOpts cannot express: Glance takes any query key it does
// not know as the name of an image property to match.
type propertyQuery struct {
	images.ListOpts
	props map[string]string
}

func (q propertyQuery) ToImageListQuery() (string, error) {
	s, err := q.ListOpts.ToImageListQuery()
	if err != nil {
		return "", err
	}
	v, err := url.ParseQuery(strings.TrimPrefix(s, "?"))
	if err != nil {
		return "", err
	}
	for k, val := range q.props {
		v.Set(k, val)
	}
	if len(v) == 0 {
		return "", nil
	}
	return "?" + v.Encode(), nil
}

// BuildImages lists the images whose imagegen:build property is build (any
// build when build is ""), in any state but deleted: a snapshot still saving
// or killed is as much an orphan as an active one. Every page is read (Glance
// pages by its next link). Tags are the image's imagegen:* properties.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	q := propertyQuery{ListOpts: images.ListOpts{Limit: imageListLimit}}
	if build != "" {
		q.props = map[string]string{clouds.TagBuild: build}
	}
	var out []clouds.Image
	err := c.retry(ctx, "list images", func(ctx context.Context) error {
		out = out[:0]
		// Every image the project can see, when build is "": Glance cannot
		// filter on a property's presence, so the filter is ours.
		return images.List(c.image, q).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			all, err := images.ExtractImages(page)
			if err != nil {
				return false, err
			}
			for _, im := range all {
				tags := imagegenTags(im.Properties)
				b := tags[clouds.TagBuild]
				if b == "" || (build != "" && b != build) || im.Status == images.ImageStatusDeleted || im.Status == "pending_delete" {
					continue
				}
				out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: tags, Created: im.CreatedAt})
			}
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// tagPrefix starts every provenance tag's name.
const tagPrefix = clouds.TagManagedKey + ":"

// imagegenTags picks an image's imagegen:* properties, the ones Snapshot set.
func imagegenTags(props map[string]any) map[string]string {
	tags := map[string]string{}
	for k, v := range props {
		if s, ok := v.(string); ok && strings.HasPrefix(k, tagPrefix) {
			tags[k] = s
		}
	}
	return tags
}

var (
	_ clouds.ImageDescriber = (*Cloud)(nil)
	_ clouds.ImageTagger    = (*Cloud)(nil)
)

// DescribeImage reads an image from Glance, with its imagegen:* properties
// as tags: clouds.ImageDescriber. A deleted image is KindNotFound.
func (c *Cloud) DescribeImage(ctx context.Context, id string) (clouds.Image, error) {
	op := "describe image " + id
	var out clouds.Image
	err := c.retry(ctx, op, func(ctx context.Context) error {
		im, err := images.Get(ctx, c.image, id).Extract()
		if err != nil {
			return err
		}
		if im.Status == images.ImageStatusDeleted || im.Status == "pending_delete" {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: op, Err: fmt.Errorf("image %s is %s: %w", id, im.Status, clouds.ErrNotFound)}
		}
		out = clouds.Image{ID: im.ID, Name: im.Name, Tags: imagegenTags(im.Properties)}
		return nil
	})
	return out, err
}

// TagImage sets properties on an image with one JSON patch (Glance's v2.1
// patch, whose "add" replaces a property that exists, as RFC 6902 says),
// values cut to Glance's 255 characters: clouds.ImageTagger.
func (c *Cloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	var patch images.UpdateOpts
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		patch = append(patch, images.UpdateImageProperty{Op: images.AddOp, Name: k, Value: truncate(tags[k], 255)})
	}
	return c.retry(ctx, "tag image "+id, func(ctx context.Context) error {
		_, err := images.Update(ctx, c.image, id, patch).Extract()
		return err
	})
}
