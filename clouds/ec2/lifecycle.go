package ec2

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// waitInstance polls until the instance is in state want. An instance that
// ends terminated on the way fails at once with EC2's reason.
func (c *Cloud) waitInstance(ctx context.Context, id string, want types.InstanceStateName, timeout time.Duration, seen func(types.Instance)) error {
	what := fmt.Sprintf("wait for instance %s to be %s", id, want)
	notFound := 0
	return clouds.Within(ctx, what, timeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			out, err := c.api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
			if codeOf(err) == "InvalidInstanceID.NotFound" {
				if want == types.InstanceStateNameTerminated {
					return true, nil
				}
				// EC2 is eventually consistent: a new instance may not be visible yet.
				if notFound++; notFound < 10 {
					return false, nil
				}
			}
			if err != nil {
				return false, classify(what, err)
			}
			var i *types.Instance
			for _, r := range out.Reservations {
				for k := range r.Instances {
					if aws.ToString(r.Instances[k].InstanceId) == id {
						i = &r.Instances[k]
					}
				}
			}
			if i == nil || i.State == nil {
				return want == types.InstanceStateNameTerminated, nil
			}
			if seen != nil {
				seen(*i)
			}
			st := i.State.Name
			switch {
			case st == want:
				return true, nil
			case want != types.InstanceStateNameTerminated && (st == types.InstanceStateNameTerminated || st == types.InstanceStateNameShuttingDown):
				reason := aws.ToString(i.StateTransitionReason)
				kind := clouds.KindFailed
				code := ""
				if i.StateReason != nil {
					reason = aws.ToString(i.StateReason.Message)
					code = aws.ToString(i.StateReason.Code)
					if strings.Contains(code, "InsufficientInstanceCapacity") || strings.Contains(reason, "InsufficientInstanceCapacity") {
						kind = clouds.KindCapacity
					}
				}
				return false, &clouds.Error{Kind: kind, Op: what, Code: code, Err: fmt.Errorf("instance is %s: %s", st, reason)}
			}
			return false, nil
		})
	})
}

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
