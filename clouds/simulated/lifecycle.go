package simulated

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/imagegen/imagegen/clouds"
)

// Stop implements clouds.Cloud.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	if inst.ID == "" {
		return clouds.Errorf(clouds.KindInvalid, "stop server", "the instance has no server")
	}
	err := c.api(ctx, OpStop, func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "stop server", Err: fmt.Errorf("server %s: %w", inst.ID, clouds.ErrNotFound)}
		}
		if r.state != stateStopped {
			c.calls = append(c.calls, "stop server "+r.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, c.opts.StopDelay); err != nil {
		return err
	}
	return c.withState(func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "stop server", Err: fmt.Errorf("server %s disappeared while stopping", inst.ID)}
		}
		r.state = stateStopped
		return nil
	})
}

// Terminate implements clouds.Cloud: it deletes inst's resources newest first;
// one already gone is success. It tries every resource and joins the errors.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for _, r := range slices.Backward(inst.Resources) {
		op := OpTerminate
		switch r.Kind {
		case clouds.KindKeyPair:
			op = OpDeleteKey
		case clouds.KindImage:
			op = OpDeleteImage
		}
		if err := c.remove(ctx, op, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
