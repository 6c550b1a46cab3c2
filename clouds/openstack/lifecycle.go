package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagegen/imagegen/clouds"
)

// waitServer polls the server until its status is want. ERROR fails at once
// with Nova's fault message. It returns the last server seen, even on error.
func (c *Cloud) waitServer(ctx context.Context, id, want string, timeout time.Duration) (*servers.Server, error) {
	var last *servers.Server
	what := fmt.Sprintf("wait for server %s to be %s", id, want)
	err := clouds.Within(ctx, what, timeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			s, err := servers.Get(ctx, c.compute, id).Extract()
			if err != nil {
				return false, classify(what, err)
			}
			last = s
			switch s.Status {
			case want:
				return true, nil
			case "ERROR":
				kind := clouds.KindFailed
				if strings.Contains(s.Fault.Message, "No valid host") {
					kind = clouds.KindCapacity
				}
				msg := s.Fault.Message
				if msg == "" {
					msg = "no fault message"
				}
				return false, &clouds.Error{Kind: kind, Op: what, Code: "ERROR",
					Err: fmt.Errorf("server %s went to ERROR: %s", id, msg)}
			case "DELETED", "SOFT_DELETED":
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Err: fmt.Errorf("server %s was deleted", id)}
			}
			return false, nil
		})
	})
	return last, err
}

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
	err := c.retry(ctx, op, func(ctx context.Context) error {
		if img.ID == "" {
			// A 5xx may have come after Nova made the image: adopt it, never make two.
			if id, err := c.findImageByName(ctx, req.Name, req.Tags[clouds.TagBuild]); err != nil {
				return err
			} else if id != "" {
				img.ID = id
				return nil
			}
		}
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
		if id, lerr := c.findImageByName(lctx, req.Name, req.Tags[clouds.TagBuild]); lerr == nil {
			img.ID = id
		}
	}
	if err != nil {
		return err
	}
	req.Log.Info("creating image, waiting for active", "image", img.ID, "name", req.Name)
	return c.waitImage(ctx, img.ID)
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
	err = c.retry(ctx, op, func(ctx context.Context) error {
		if img.ID == "" {
			if id, err := c.findImageByName(ctx, req.Name, req.Tags[clouds.TagBuild]); err != nil {
				return err
			} else if id != "" {
				img.ID = id
				return nil
			}
		}
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
	// Properties first, so even an image whose upload fails says which build made it.
	var patch images.UpdateOpts
	keys := make([]string, 0, len(req.Tags))
	for k := range req.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		patch = append(patch, images.UpdateImageProperty{Op: images.AddOp, Name: k, Value: truncate(req.Tags[k], 255)})
	}
	err = c.retry(ctx, "tag image "+img.ID, func(ctx context.Context) error {
		_, err := images.Update(ctx, c.image, img.ID, patch).Extract()
		return err
	})
	if err != nil {
		return err
	}
	req.Log.Info("uploading volume as image, waiting for active", "image", img.ID, "volume", volID, "name", req.Name)
	return c.waitImage(ctx, img.ID)
}

func (c *Cloud) findImageByName(ctx context.Context, name, build string) (string, error) {
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
		if v, _ := im.Properties[clouds.TagBuild].(string); v == build {
			return im.ID, nil
		}
	}
	return "", nil
}

// waitImage polls Glance until the image is active, tolerating a few 404s
// (Nova registers the image before Glance lists it on some clouds) and transient errors.
func (c *Cloud) waitImage(ctx context.Context, id string) error {
	what := "wait for image " + id + " to be active"
	notFound := 0
	return clouds.Within(ctx, what, c.cfg.ImageTimeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			im, err := images.Get(ctx, c.image, id).Extract()
			if err != nil {
				err = classify(what, err)
				if clouds.IsNotFound(err) {
					notFound++
					if notFound >= c.opts.ImageNotFoundTries {
						return false, &clouds.Error{Kind: clouds.KindFailed, Op: what,
							Err: fmt.Errorf("image %s not found after %d tries: %w", id, notFound, err)}
					}
					return false, nil
				}
				return false, err
			}
			notFound = 0
			switch im.Status {
			case images.ImageStatusActive:
				return true, nil
			case images.ImageStatusKilled, images.ImageStatusDeleted, "pending_delete":
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Code: string(im.Status),
					Err: fmt.Errorf("image %s is %s: the upload failed", id, im.Status)}
			}
			return false, nil
		})
	})
}

// Terminate removes the instance's resources newest first: floating IP,
// server (waiting until it is gone), key pair.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if err := c.Remove(ctx, inst.Resources[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove deletes one resource; one already gone is success.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	gone := func(err error) error {
		if clouds.IsNotFound(err) {
			return nil
		}
		return err
	}
	switch r.Kind {
	case clouds.KindFloatingIP:
		return gone(c.retry(ctx, "release floating IP "+r.Name, func(ctx context.Context) error {
			return floatingips.Delete(ctx, c.network, r.ID).ExtractErr()
		}))
	case clouds.KindKeyPair:
		return gone(c.retry(ctx, "delete key pair "+r.ID, func(ctx context.Context) error {
			return keypairs.Delete(ctx, c.compute, r.ID, nil).ExtractErr()
		}))
	case clouds.KindServer:
		err := gone(c.retry(ctx, "delete server "+r.ID, func(ctx context.Context) error {
			return servers.Delete(ctx, c.compute, r.ID).ExtractErr()
		}))
		if err != nil {
			return err
		}
		what := "wait for server " + r.ID + " to be gone"
		return clouds.Within(ctx, what, c.cfg.DeleteTimeout, func(ctx context.Context) error {
			return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
				s, err := servers.Get(ctx, c.compute, r.ID).Extract()
				if err != nil {
					err = classify(what, err)
					if clouds.IsNotFound(err) {
						return true, nil
					}
					return false, err
				}
				if s.Status == "DELETED" || s.Status == "SOFT_DELETED" {
					return true, nil
				}
				if s.Status == "ERROR" && s.Fault.Message != "" && strings.Contains(strings.ToLower(s.Fault.Message), "delet") {
					// The delete failed in Nova: ask again; it often succeeds.
					_ = servers.Delete(ctx, c.compute, r.ID).ExtractErr()
				}
				return false, nil
			})
		})
	case clouds.KindImage:
		return c.DeleteImage(ctx, &clouds.Image{ID: r.ID, Name: r.Name})
	default:
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "remove", Err: fmt.Errorf("unknown resource kind %q", r.Kind)}
	}
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

// Leftovers finds the servers (by metadata), key pairs (by name) and floating
// IPs (by description) of build, or of every imagegen build when build is "".
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	err := c.retry(ctx, "list servers", func(ctx context.Context) error {
		page, err := servers.List(c.compute, servers.ListOpts{}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := servers.ExtractServers(page)
		if err != nil {
			return err
		}
		for _, s := range all {
			b, ok := s.Metadata[clouds.TagBuild]
			if ok && (build == "" || b == build) && s.Status != "DELETED" {
				out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: s.ID, Name: s.Name, Build: b})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = c.retry(ctx, "list floating IPs", func(ctx context.Context) error {
		opts := floatingips.ListOpts{}
		if build != "" {
			opts.Description = fipPrefix + build
		}
		page, err := floatingips.List(c.network, opts).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := floatingips.ExtractFloatingIPs(page)
		if err != nil {
			return err
		}
		for _, f := range all {
			b, ok := strings.CutPrefix(f.Description, fipPrefix)
			if ok && (build == "" || b == build) {
				out = append(out, clouds.Resource{Kind: clouds.KindFloatingIP, ID: f.ID, Name: f.FloatingIP, Build: b})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = c.retry(ctx, "list key pairs", func(ctx context.Context) error {
		page, err := keypairs.List(c.compute, nil).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := keypairs.ExtractKeyPairs(page)
		if err != nil {
			return err
		}
		want := keyPrefix
		if build != "" {
			want = keyPrefix + sanitize(build) + "-"
		}
		for _, k := range all {
			if !strings.HasPrefix(k.Name, want) {
				continue
			}
			b := build
			if b == "" {
				// imagegen-<build>-<8 hex>
				rest := strings.TrimPrefix(k.Name, keyPrefix)
				if i := strings.LastIndexByte(rest, '-'); i > 0 {
					b = rest[:i]
				}
			} else if len(k.Name) != len(want)+8 {
				continue // another build whose id starts with this one's
			}
			out = append(out, clouds.Resource{Kind: clouds.KindKeyPair, ID: k.Name, Name: k.Name, Build: b})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
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
				out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: tags})
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
