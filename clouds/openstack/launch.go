package openstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudinit"
)

// Launch creates the build's key pair and server, waits for ACTIVE, attaches a
// floating IP when configured, and learns the host keys.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	log := req.Log
	if c.cfg.InjectHostKey != nil && !*c.cfg.InjectHostKey {
		req.HostKey = clouds.HostKey{}
	}
	if inst.Build == "" {
		inst.Build = req.Build
	}
	size := req.Size
	if size == "" {
		size = c.cfg.Flavor
	}
	if size == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch",
			Err: errors.New("no flavor: the spec gives no size and the cloud config no flavor")}
	}
	imageID, err := c.findImage(ctx, req.Image)
	if err != nil {
		return err
	}
	flavorID, err := c.findFlavor(ctx, size)
	if err != nil {
		return err
	}
	var netID, netName string
	if c.cfg.Network != "" {
		n, err := c.findNetwork(ctx, c.cfg.Network, "network")
		if err != nil {
			return err
		}
		netID, netName = n.ID, n.Name
	}
	var poolID string
	if c.cfg.FloatingIPPool != "" {
		n, err := c.findNetwork(ctx, c.cfg.FloatingIPPool, "floating_ip_pool")
		if err != nil {
			return err
		}
		poolID = n.ID
	}

	keyName := keyPairName(req.Build, req.Name)
	if err := c.createKeyPair(ctx, keyName, req.AuthorizedKey); err != nil {
		if ctx.Err() != nil {
			// Canceled mid-request: the key pair may exist; removing one that does not is harmless.
			inst.Add(clouds.Resource{Kind: clouds.KindKeyPair, ID: keyName, Name: keyName, Build: req.Build})
		}
		return err
	}
	inst.Add(clouds.Resource{Kind: clouds.KindKeyPair, ID: keyName, Name: keyName, Build: req.Build})
	log.Info("imported key pair", "key_pair", keyName)

	userData, err := cloudinit.UserData(req)
	if err != nil {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err}
	}
	md := map[string]string{}
	for k, v := range req.Tags {
		md[k] = truncate(v, 255)
	}
	md[clouds.TagBuild] = req.Build
	opts := servers.CreateOpts{
		Name:             req.Name,
		ImageRef:         imageID,
		FlavorRef:        flavorID,
		Metadata:         md,
		UserData:         userData,
		SecurityGroups:   c.cfg.SecurityGroups,
		AvailabilityZone: c.cfg.AvailabilityZone,
	}
	if c.cfg.UseConfigDrive {
		t := true
		opts.ConfigDrive = &t
	}
	if netID != "" {
		opts.Networks = []servers.Network{{UUID: netID}}
	}
	if c.cfg.VolumeSize > 0 {
		opts.ImageRef = ""
		opts.BlockDevice = []servers.BlockDevice{{
			SourceType: servers.SourceImage, UUID: imageID, DestinationType: servers.DestinationVolume,
			VolumeSize: c.cfg.VolumeSize, DeleteOnTermination: true, BootIndex: 0,
		}}
	}
	server, err := c.createServer(ctx, req, keypairs.CreateOptsExt{CreateOptsBuilder: opts, KeyName: keyName})
	if server != nil {
		inst.ID = server.ID
		inst.Add(clouds.Resource{Kind: clouds.KindServer, ID: server.ID, Name: req.Name, Build: req.Build})
	}
	if err != nil {
		return err
	}
	log.Info("created server, waiting for ACTIVE", "server", server.ID, "image", imageID, "flavor", size)

	server, err = c.waitServer(ctx, server.ID, "ACTIVE", c.cfg.BootTimeout)
	if err != nil {
		c.copyConsole(ctx, server, req)
		return err
	}

	var host string
	if poolID != "" {
		fip, err := c.attachFloatingIP(ctx, req.Build, server.ID, poolID)
		if fip != nil {
			inst.Add(clouds.Resource{Kind: clouds.KindFloatingIP, ID: fip.ID, Name: fip.FloatingIP, Build: req.Build})
		}
		if err != nil {
			return err
		}
		host = fip.FloatingIP
		log.Info("attached floating IP", "address", host)
	} else {
		host = serverAddress(server, netName)
		if host == "" {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "launch", Err: fmt.Errorf("server %s is ACTIVE but has no address", server.ID),
				Hint: "set network, or floating_ip_pool when the server's network is not reachable"}
		}
	}

	ep := &clouds.Endpoint{Addr: net.JoinHostPort(host, strconv.Itoa(c.cfg.SSHPort))}
	if req.HostKey.Public != "" {
		ep.HostKeys = []string{strings.TrimSpace(req.HostKey.Public)}
		ep.HostKeySource = "injected"
	} else {
		keys, err := c.consoleHostKeys(ctx, server.ID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("could not read host keys from the console log", "err", err)
		}
		if len(keys) > 0 {
			ep.HostKeys, ep.HostKeySource = keys, "console"
		}
	}
	c.copyConsole(ctx, server, req)
	inst.SSH = ep
	return nil
}

func (c *Cloud) createKeyPair(ctx context.Context, name, pub string) error {
	op := "import key pair " + name
	return c.retry(ctx, op, func(ctx context.Context) error {
		_, err := keypairs.Create(ctx, c.compute, keypairs.CreateOpts{Name: name, PublicKey: strings.TrimSpace(pub)}).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusConflict) {
			// A retried build (a worker died) left its key pair: ours, replace it.
			if derr := keypairs.Delete(ctx, c.compute, name, nil).ExtractErr(); derr != nil && !gophercloud.ResponseCodeIs(derr, http.StatusNotFound) {
				return derr
			}
			_, err = keypairs.Create(ctx, c.compute, keypairs.CreateOpts{Name: name, PublicKey: strings.TrimSpace(pub)}).Extract()
		}
		return err
	})
}

// createServer creates the server. A create that failed with a 5xx may still
// have made the server, so before each retry it looks for one of this build
// with this name and adopts it rather than make a second.
func (c *Cloud) createServer(ctx context.Context, req clouds.LaunchRequest, opts servers.CreateOptsBuilder) (*servers.Server, error) {
	var server *servers.Server
	tried := false
	err := c.retry(ctx, "create server "+req.Name, func(ctx context.Context) error {
		if tried {
			s, err := c.findBuildServer(ctx, req.Build, req.Name)
			if err != nil {
				return err
			}
			if s != nil {
				server = s
				return nil
			}
		}
		tried = true
		s, err := servers.Create(ctx, c.compute, opts, nil).Extract()
		if err != nil {
			return err
		}
		server = s
		return nil
	})
	if err != nil && server == nil && ctx.Err() != nil {
		// Canceled while Nova answered: the server may exist. Look, on a short
		// context of our own, so Terminate can find it.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		if s, lerr := c.findBuildServer(lctx, req.Build, req.Name); lerr == nil && s != nil {
			server = s
		}
	}
	return server, err
}

func (c *Cloud) findBuildServer(ctx context.Context, build, name string) (*servers.Server, error) {
	page, err := servers.List(c.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(name) + "$"}).AllPages(ctx)
	if err != nil {
		return nil, err
	}
	all, err := servers.ExtractServers(page)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Name == name && all[i].Metadata[clouds.TagBuild] == build {
			return &all[i], nil
		}
	}
	return nil, nil
}

func (c *Cloud) findImage(ctx context.Context, ref string) (string, error) {
	var id string
	err := c.retry(ctx, "find image "+ref, func(ctx context.Context) error {
		img, err := images.Get(ctx, c.image, ref).Extract()
		if err == nil {
			id = img.ID
			return nil
		}
		if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) && !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
			return err
		}
		page, err := images.List(c.image, images.ListOpts{Name: ref}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := images.ExtractImages(page)
		if err != nil {
			return err
		}
		switch len(all) {
		case 0:
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "launch", Err: fmt.Errorf("image %q not found", ref),
				Hint: "the spec's image must be an image id or name on this cloud"}
		case 1:
			id = all[0].ID
			return nil
		default:
			return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: fmt.Errorf("image name %q is ambiguous: %d images", ref, len(all)),
				Hint: "give the image id in the spec"}
		}
	})
	return id, err
}

func (c *Cloud) findFlavor(ctx context.Context, ref string) (string, error) {
	var id string
	err := c.retry(ctx, "find flavor "+ref, func(ctx context.Context) error {
		page, err := flavors.ListDetail(c.compute, nil).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := flavors.ExtractFlavors(page)
		if err != nil {
			return err
		}
		for _, f := range all {
			if f.ID == ref || f.Name == ref {
				id = f.ID
				return nil
			}
		}
		names := make([]string, 0, len(all))
		for _, f := range all {
			names = append(names, f.Name)
		}
		sort.Strings(names)
		return &clouds.Error{Kind: clouds.KindNotFound, Op: "launch", Err: fmt.Errorf("flavor %q not found", ref),
			Hint: "flavors on this cloud: " + strings.Join(names, ", ")}
	})
	return id, err
}

func (c *Cloud) findNetwork(ctx context.Context, ref, key string) (*networks.Network, error) {
	var found *networks.Network
	err := c.retry(ctx, "find network "+ref, func(ctx context.Context) error {
		for _, o := range []networks.ListOpts{{ID: ref}, {Name: ref}} {
			page, err := networks.List(c.network, o).AllPages(ctx)
			if err != nil {
				return err
			}
			all, err := networks.ExtractNetworks(page)
			if err != nil {
				return err
			}
			if len(all) > 1 {
				return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch",
					Err: fmt.Errorf("%s %q is ambiguous: %d networks", key, ref, len(all)), Hint: "give the network id"}
			}
			if len(all) == 1 {
				found = &all[0]
				return nil
			}
		}
		return &clouds.Error{Kind: clouds.KindNotFound, Op: "launch", Err: fmt.Errorf("%s %q: network not found", key, ref)}
	})
	return found, err
}

func (c *Cloud) attachFloatingIP(ctx context.Context, build, serverID, poolID string) (*floatingips.FloatingIP, error) {
	var portID string
	err := c.retry(ctx, "find the server's port", func(ctx context.Context) error {
		page, err := ports.List(c.network, ports.ListOpts{DeviceID: serverID}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := ports.ExtractPorts(page)
		if err != nil {
			return err
		}
		if len(all) == 0 {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "attach floating IP", Err: fmt.Errorf("server %s has no port", serverID)}
		}
		portID = all[0].ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	var fip *floatingips.FloatingIP
	tried := false
	find := func(ctx context.Context) error {
		page, err := floatingips.List(c.network, floatingips.ListOpts{Description: fipPrefix + build, PortID: portID}).AllPages(ctx)
		if err != nil {
			return err
		}
		all, err := floatingips.ExtractFloatingIPs(page)
		if err != nil {
			return err
		}
		if len(all) > 0 {
			fip = &all[0]
		}
		return nil
	}
	err = c.retry(ctx, "allocate floating IP", func(ctx context.Context) error {
		if tried {
			// The last try may have allocated one before failing: adopt it.
			if err := find(ctx); err != nil || fip != nil {
				return err
			}
		}
		tried = true
		f, err := floatingips.Create(ctx, c.network, floatingips.CreateOpts{
			FloatingNetworkID: poolID, PortID: portID, Description: fipPrefix + build,
		}).Extract()
		if err != nil {
			return err
		}
		fip = f
		return nil
	})
	if err != nil && fip == nil && ctx.Err() != nil {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		_ = find(lctx)
	}
	return fip, err
}

// serverAddress picks the address to reach the server at: a floating address
// first, then one on the configured network, IPv4 before IPv6.
func serverAddress(s *servers.Server, network string) string {
	// Addresses comes untyped from gophercloud; its shape is Nova's.
	var addrs map[string][]struct {
		Addr string `json:"addr"`
		Type string `json:"OS-EXT-IPS:type"`
	}
	raw, err := json.Marshal(s.Addresses)
	if err != nil || json.Unmarshal(raw, &addrs) != nil {
		return ""
	}
	nets := make([]string, 0, len(addrs))
	for n := range addrs {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	best, score := "", -1
	for _, n := range nets {
		for _, a := range addrs[n] {
			ip := net.ParseIP(a.Addr)
			if ip == nil {
				continue
			}
			sc := 0
			if ip.To4() != nil {
				sc++
			}
			if network == "" || n == network {
				sc += 2
			}
			if a.Type == "floating" {
				sc += 4
			}
			if sc > score {
				best, score = a.Addr, sc
			}
		}
	}
	return best
}
