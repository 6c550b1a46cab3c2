package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

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
