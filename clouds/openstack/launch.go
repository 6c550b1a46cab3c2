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
// floating IP when configured, and learns the host keys. Each step records
// what it created in inst the moment the cloud returns it.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	if !c.injectsHostKey() {
		req.HostKey = clouds.HostKey{}
	}
	if err := c.cfg.HostKey.CheckInjected(req, c.injectsHostKey()); err != nil {
		return err
	}
	if inst.Build == "" {
		inst.Build = req.Build
	}
	p, err := c.resolve(ctx, req)
	if err != nil {
		return err
	}
	keyName, err := c.addKeyPair(ctx, req, inst)
	if err != nil {
		return err
	}
	opts, err := c.serverOpts(req, p, keyName)
	if err != nil {
		return err
	}
	server, err := c.addServer(ctx, req, opts, inst)
	if err != nil {
		return err
	}
	req.Log.Info("created server, waiting for ACTIVE", "server", server.ID, "image", p.imageID, "flavor", p.flavor)

	server, err = c.waitServer(ctx, server.ID, "ACTIVE", c.cfg.BootTimeout)
	if err != nil {
		c.copyConsole(ctx, server, req)
		return err
	}
	host, err := c.address(ctx, req, server, p, inst)
	if err != nil {
		return err
	}
	ep, err := c.sshEndpoint(ctx, req, server.ID, host)
	c.copyConsole(ctx, server, req)
	if err != nil {
		return err
	}
	inst.SSH = ep
	return nil
}

// injectsHostKey says whether the user data gives the server the build's host key.
func (c *Cloud) injectsHostKey() bool { return c.cfg.InjectHostKey == nil || *c.cfg.InjectHostKey }

// launchPlan is what Launch looks up before it creates anything, so a typo in
// the spec or the cloud config leaves nothing to clean up.
type launchPlan struct {
	flavor   string // the size asked for: the spec's, else the config's flavor
	imageID  string
	flavorID string
	netID    string // the configured network; "" lets Nova choose
	netName  string
	poolID   string // the floating IP pool's network; "" for none
}

// resolve finds the base image, the flavor and the configured networks.
func (c *Cloud) resolve(ctx context.Context, req clouds.LaunchRequest) (launchPlan, error) {
	p := launchPlan{flavor: req.Size}
	if p.flavor == "" {
		p.flavor = c.cfg.Flavor
	}
	if p.flavor == "" {
		return p, &clouds.Error{Kind: clouds.KindInvalid, Op: "launch",
			Err: errors.New("no flavor: the spec gives no size and the cloud config no flavor")}
	}
	var err error
	if p.imageID, err = c.findImage(ctx, req.Image); err != nil {
		return p, err
	}
	if p.flavorID, err = c.findFlavor(ctx, p.flavor); err != nil {
		return p, err
	}
	if c.cfg.Network != "" {
		n, err := c.findNetwork(ctx, c.cfg.Network, "network")
		if err != nil {
			return p, err
		}
		p.netID, p.netName = n.ID, n.Name
	}
	if c.cfg.FloatingIPPool != "" {
		n, err := c.findNetwork(ctx, c.cfg.FloatingIPPool, "floating_ip_pool")
		if err != nil {
			return p, err
		}
		p.poolID = n.ID
	}
	return p, nil
}

// addKeyPair imports the build's public key as a key pair named for the
// build, and records it in inst, also when a canceled request may have made it.
func (c *Cloud) addKeyPair(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) (string, error) {
	name := keyPairName(req.Build, req.Name)
	if err := c.createKeyPair(ctx, name, req.AuthorizedKey); err != nil {
		if ctx.Err() != nil {
			// Canceled mid-request: the key pair may exist; removing one that does not is harmless.
			inst.Add(clouds.Resource{Kind: clouds.KindKeyPair, ID: name, Name: name, Build: req.Build})
		}
		return "", err
	}
	inst.Add(clouds.Resource{Kind: clouds.KindKeyPair, ID: name, Name: name, Build: req.Build})
	req.Log.Info("imported key pair", "key_pair", name)
	return name, nil
}

// serverOpts describes the server: the base image on the flavor (or on a new
// volume with volume_size), the request's tags as metadata, the build's keys
// in the user data, and the key pair.
func (c *Cloud) serverOpts(req clouds.LaunchRequest, p launchPlan, keyName string) (servers.CreateOptsBuilder, error) {
	userData, err := cloudinit.UserData(req)
	if err != nil {
		return nil, &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err}
	}
	md := map[string]string{}
	for k, v := range req.Tags {
		md[k] = truncate(v, 255)
	}
	md[clouds.TagBuild] = req.Build
	opts := servers.CreateOpts{
		Name:             req.Name,
		ImageRef:         p.imageID,
		FlavorRef:        p.flavorID,
		Metadata:         md,
		UserData:         userData,
		SecurityGroups:   c.cfg.SecurityGroups,
		AvailabilityZone: c.cfg.AvailabilityZone,
	}
	if c.cfg.UseConfigDrive {
		t := true
		opts.ConfigDrive = &t
	}
	if p.netID != "" {
		opts.Networks = []servers.Network{{UUID: p.netID}}
	}
	if c.cfg.VolumeSize > 0 {
		opts.ImageRef = ""
		opts.BlockDevice = []servers.BlockDevice{{
			SourceType: servers.SourceImage, UUID: p.imageID, DestinationType: servers.DestinationVolume,
			VolumeSize: c.cfg.VolumeSize, DeleteOnTermination: true, BootIndex: 0,
		}}
	}
	return keypairs.CreateOptsExt{CreateOptsBuilder: opts, KeyName: keyName}, nil
}

// addServer creates the server and records it in inst the moment Nova has
// returned it (or a look-up after a lost answer found it).
func (c *Cloud) addServer(ctx context.Context, req clouds.LaunchRequest, opts servers.CreateOptsBuilder, inst *clouds.Instance) (*servers.Server, error) {
	server, err := c.createServer(ctx, req, opts)
	if server != nil {
		inst.ID = server.ID
		inst.Add(clouds.Resource{Kind: clouds.KindServer, ID: server.ID, Name: req.Name, Build: req.Build})
	}
	return server, err
}

// address is where the ACTIVE server is reached: a floating IP from the
// configured pool (recorded in inst), else the best address Nova lists.
func (c *Cloud) address(ctx context.Context, req clouds.LaunchRequest, server *servers.Server, p launchPlan, inst *clouds.Instance) (string, error) {
	if p.poolID == "" {
		host := serverAddress(server, p.netName)
		if host == "" {
			return "", &clouds.Error{Kind: clouds.KindFailed, Op: "launch", Err: fmt.Errorf("server %s is ACTIVE but has no address", server.ID),
				Hint: "set network, or floating_ip_pool when the server's network is not reachable"}
		}
		return host, nil
	}
	fip, err := c.attachFloatingIP(ctx, req.Build, server.ID, p.poolID)
	if fip != nil {
		inst.Add(clouds.Resource{Kind: clouds.KindFloatingIP, ID: fip.ID, Name: fip.FloatingIP, Build: req.Build})
	}
	if err != nil {
		return "", err
	}
	req.Log.Info("attached floating IP", "address", fip.FloatingIP)
	return fip.FloatingIP, nil
}

// sshEndpoint is host on the SSH port, its host keys pinned by the host_key
// policy: the injected key, else (console, first-use) the keys cloud-init
// printed on the console; none there fails the launch, unless first-use.
func (c *Cloud) sshEndpoint(ctx context.Context, req clouds.LaunchRequest, serverID, host string) (*clouds.Endpoint, error) {
	ep := &clouds.Endpoint{Addr: net.JoinHostPort(host, strconv.Itoa(c.cfg.SSHPort))}
	l := clouds.HostKeyLookup{
		Policy: c.cfg.HostKey, Instance: serverID, Injected: c.injectsHostKey(), ConsoleTimeout: c.cfg.ConsoleTimeout,
		Console: func(ctx context.Context) ([]string, error) { return c.consoleHostKeys(ctx, serverID) },
	}
	if err := l.Pin(ctx, req, ep); err != nil {
		return nil, err
	}
	return ep, nil
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

// findImage finds the spec's base image by id or name, shared by the
// account's launches: builds launching at once from one image ask Glance
// once, not once each, and for a minute after it was found.
func (c *Cloud) findImage(ctx context.Context, ref string) (string, error) {
	return c.acct.bases.Get(ctx, ref, func(ctx context.Context) (string, error) { return c.lookupImage(ctx, ref) })
}

func (c *Cloud) lookupImage(ctx context.Context, ref string) (string, error) {
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
