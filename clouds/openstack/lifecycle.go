package openstack

import (
	"context"
	"errors"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/imagegen/imagegen/clouds"
)

// Stop asks Nova to stop the server and waits for SHUTOFF.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "stop", Err: errors.New("no server")}
	}
	err := c.retry(ctx, "stop server "+inst.ID, func(ctx context.Context) error {
		err := servers.Stop(ctx, c.compute, inst.ID).ExtractErr()
		if gophercloud.ResponseCodeIs(err, http.StatusConflict) {
			// 409: already stopped, or a task still runs; only the first is done.
			s, gerr := servers.Get(ctx, c.compute, inst.ID).Extract()
			if gerr == nil && s.Status == "SHUTOFF" {
				return nil
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	_, err = c.waitServer(ctx, inst.ID, "SHUTOFF", c.cfg.StopTimeout)
	return err
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
