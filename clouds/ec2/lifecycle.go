package ec2

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// Stop stops the instance and waits for stopped; with stop_instance: false it
// does nothing and CreateImage reboots the instance instead.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "stop", Err: errors.New("no instance")}
	}
	if !*c.cfg.StopInstance {
		return ctx.Err()
	}
	op := "stop instance " + inst.ID
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{inst.ID}})
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	return c.waitInstance(ctx, inst.ID, types.InstanceStateNameStopped, c.cfg.StopTimeout, nil)
}

// Terminate removes what Launch recorded, newest first: the instance (waiting
// until it is terminated), the temporary security group (retrying
// DependencyViolation until the instance has let go of it), the key pair.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if err := c.Remove(ctx, inst.Resources[i]); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}
