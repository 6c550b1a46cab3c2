package openstack

import (
	"context"
	"fmt"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"

	"github.com/imagegen/imagegen/clouds"
)

// Leftovers finds the servers (by metadata), floating IPs (by description) and
// key pairs (by name) of build, or of every imagegen build when build is "".
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	for _, list := range []func(context.Context, string) ([]clouds.Resource, error){
		c.leftoverServers, c.leftoverFloatingIPs, c.leftoverKeyPairs,
	} {
		rs, err := list(ctx, build)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

// leftoverServers lists the servers whose metadata carries the build.
func (c *Cloud) leftoverServers(ctx context.Context, build string) ([]clouds.Resource, error) {
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
	return out, err
}

// leftoverFloatingIPs lists the floating IPs whose description names the build.
func (c *Cloud) leftoverFloatingIPs(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	err := c.retry(ctx, "list floating IPs", func(ctx context.Context) error {
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
	return out, err
}

// leftoverKeyPairs lists the key pairs whose name carries the build
// (keyPairName: imagegen-<build>-<8 hex>).
func (c *Cloud) leftoverKeyPairs(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	err := c.retry(ctx, "list key pairs", func(ctx context.Context) error {
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
	return out, err
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
		return c.waitGone(ctx, r.ID)
	case clouds.KindImage:
		return c.DeleteImage(ctx, &clouds.Image{ID: r.ID, Name: r.Name})
	default:
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "remove", Err: fmt.Errorf("unknown resource kind %q", r.Kind)}
	}
}
