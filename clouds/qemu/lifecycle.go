package qemu

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagegen/imagegen/clouds"
)

// Stop waits for QEMU to exit after the guest's poweroff, and kills it when
// it has not within shutdown_timeout.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	r, ok := lastOf(inst, clouds.KindServer, resQEMU)
	if !ok {
		return clouds.Errorf(clouds.KindInvalid, "stop", "instance %q has no QEMU process", inst.ID)
	}
	pid, start, err := parseProcID(r.ID)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ShutdownTimeout)
	defer cancel()
	if err := c.waitExit(wctx, r.ID, pid, start); err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stop: %w", ctx.Err())
	}
	if v := c.vm(r.ID); v != nil {
		// Only a VM this Cloud started has a build log to say it in.
		v.log.Warn("the guest did not power off in time; killing QEMU (the disk may need a fsck)", "instance", inst.ID, "timeout", c.cfg.ShutdownTimeout)
	}
	return c.kill(ctx, r.ID, pid, start)
}

// Terminate kills QEMU and removes the seed, overlay and work directory,
// newest first. Already gone is success.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if err := c.Remove(ctx, inst.Resources[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
