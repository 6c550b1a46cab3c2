// Package openstack builds images on OpenStack clouds (Keystone, Nova, Glance v2, Neutron, Cinder) with gophercloud and clouds.yaml.
// It knows clouds and cloudinit only, not builds, GitHub, Redis or other drivers; what it creates is marked with the build.
package openstack

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gopenstack "github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/imagegen/imagegen/clouds"
)

// Opener is a validated openstack cloud config.
type Opener struct {
	name     string
	cfg      Config
	ask      bool
	auth     gophercloud.AuthOptions
	endpoint gophercloud.EndpointOpts
	tls      *tls.Config
	opts     Options
	accts    accounts // what the builds of one set of credentials share
}

// Open logs in to the cloud (with cred.Password for a password: ask cloud)
// and finds its compute, image and network endpoints.
func (o *Opener) Open(ctx context.Context, cred clouds.Credentials) (clouds.Cloud, error) {
	ao := o.auth
	if o.ask {
		if cred.Password.IsZero() {
			return nil, &clouds.Error{Kind: clouds.KindAuth, Op: "open " + o.name,
				Err: errors.New("this cloud is password: ask and the build brought no password")}
		}
		ao.Password = cred.Password.Reveal()
	} else if !cred.Password.IsZero() {
		ao.Password = cred.Password.Reveal()
	}
	if ao.Password == "" && ao.TokenID == "" && ao.ApplicationCredentialSecret == "" {
		return nil, &clouds.Error{Kind: clouds.KindAuth, Op: "open " + o.name,
			Err:  fmt.Errorf("clouds.yaml entry %q has no password, token or application credential", o.cfg.Cloud),
			Hint: "add one to clouds.yaml or secure.yaml, or mark the cloud password: ask"}
	}
	var pc *gophercloud.ProviderClient
	err := clouds.Retry(ctx, o.opts.Retry, func(ctx context.Context) error {
		var err error
		pc, err = gopenstack.NewClient(ao.IdentityEndpoint)
		if err != nil {
			return &clouds.Error{Kind: clouds.KindInvalid, Op: "log in", Err: err}
		}
		pc.HTTPClient = o.httpClient()
		pc.UseTokenLock()
		return classify("log in to "+ao.IdentityEndpoint, gopenstack.Authenticate(ctx, pc, ao))
	})
	if err != nil {
		return nil, o.loginError(ao, err)
	}
	key := accountKey("")
	if o.ask || !cred.Password.IsZero() {
		key = accountKey(ao.Password)
	}
	c := &Cloud{name: o.name, cfg: o.cfg, opts: o.opts, acct: o.accts.Get(key, o.newAccount)}
	eo := o.endpoint
	for _, s := range []struct {
		what string
		dst  **gophercloud.ServiceClient
		mk   func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
	}{
		{"compute (Nova)", &c.compute, gopenstack.NewComputeV2},
		{"image (Glance v2)", &c.image, gopenstack.NewImageV2},
		{"network (Neutron)", &c.network, gopenstack.NewNetworkV2},
	} {
		err := clouds.Retry(ctx, o.opts.Retry, func(context.Context) error {
			sc, err := s.mk(pc, eo)
			if err != nil {
				return classify("find the "+s.what+" endpoint in region "+fmt.Sprintf("%q", eo.Region), err)
			}
			*s.dst = sc
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if o.cfg.VolumeSize > 0 {
		// Boot from volume needs Cinder to upload the volume as the image.
		err := clouds.Retry(ctx, o.opts.Retry, func(context.Context) error {
			sc, err := gopenstack.NewBlockStorageV3(pc, eo)
			if err != nil {
				return classify(fmt.Sprintf("find the block-storage (Cinder v3) endpoint in region %q", eo.Region), err)
			}
			c.volume = sc
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// loginError says which cloud refused which credential, for an auth failure;
// Keystone's message carries no secret, and neither does this.
func (o *Opener) loginError(ao gophercloud.AuthOptions, err error) error {
	var ce *clouds.Error
	if !errors.As(err, &ce) {
		return err
	}
	// Keystone answers an expired or revoked token with 404 "Failed to
	// validate token", not 401.
	tokenGone := ce.Kind == clouds.KindNotFound && ce.Code == "404" && ao.TokenID != ""
	if ce.Kind != clouds.KindAuth && !tokenGone {
		return err
	}
	what := fmt.Sprintf("the password of clouds.yaml entry %q", o.cfg.Cloud)
	switch {
	case o.ask:
		what = "the password given with the build"
	case ao.TokenID != "":
		what = fmt.Sprintf("the token of clouds.yaml entry %q (tokens expire: give a password or an application credential)", o.cfg.Cloud)
	case ao.ApplicationCredentialSecret != "":
		what = fmt.Sprintf("the application credential of clouds.yaml entry %q", o.cfg.Cloud)
	}
	return &clouds.Error{Kind: clouds.KindAuth, Op: "authentication failed for cloud " + o.name, Code: ce.Code, Err: ce.Err,
		Hint: fmt.Sprintf("Keystone at %s refused %s", ao.IdentityEndpoint, what)}
}

func (o *Opener) httpClient() http.Client {
	if o.opts.HTTPClient != nil {
		return *o.opts.HTTPClient
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.tls != nil {
		tr.TLSClientConfig = o.tls
	}
	return http.Client{Transport: tr, Timeout: o.cfg.RequestTimeout}
}

// Cloud is an opened OpenStack cloud: one logged-in client shared by the builds on it.
type Cloud struct {
	name    string
	cfg     Config
	opts    Options
	compute *gophercloud.ServiceClient
	image   *gophercloud.ServiceClient
	network *gophercloud.ServiceClient
	volume  *gophercloud.ServiceClient // Cinder, only with volume_size
	acct    *account                   // the pollers of the cloud's credentials
}

var _ clouds.Cloud = (*Cloud)(nil)

// Features reports that OpenStack makes images and stops servers through its API.
func (c *Cloud) Features() clouds.Features { return clouds.Features{Images: true} }

// retry runs fn, classified, with the driver's retry policy.
func (c *Cloud) retry(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		return classify(op, fn(ctx))
	})
}

// lookupTimeout bounds the look-ups that find what a canceled request may have created.
const lookupTimeout = 15 * time.Second

// fipPrefix marks the description of floating IPs imagegen allocates: Nova
// key pairs and Neutron floating IPs carry no metadata, so their names and
// descriptions carry the build.
const (
	fipPrefix = clouds.TagBuild + "="
	keyPrefix = "imagegen-"
)

// keyPairName names a build's key pair so Leftovers can find it by build:
// "imagegen-<build>-<hash of the resource name>".
func keyPairName(build, name string) string {
	h := sha256.Sum256([]byte(name))
	return keyPrefix + sanitize(build) + "-" + hex.EncodeToString(h[:4])
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func sanitize(s string) string { return unsafeName.ReplaceAllString(s, "_") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
