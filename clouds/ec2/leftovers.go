package ec2

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// Leftovers lists the instances (not yet terminated), security groups and key
// pairs tagged with the build.
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	f := buildFilter(build)
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{f, {Name: aws.String("instance-state-name"), Values: liveStates}}}
	for pages := ec2.NewDescribeInstancesPaginator(c.api, in); pages.HasMorePages(); {
		res, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify("list instances", err)
		}
		for _, r := range res.Reservations {
			for _, i := range r.Instances {
				t := tagMap(i.Tags)
				out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: aws.ToString(i.InstanceId), Name: t["Name"], Build: t[clouds.TagBuild]})
			}
		}
	}
	sgs, err := c.api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{f}})
	if err != nil {
		return nil, classify("list security groups", err)
	}
	for _, g := range sgs.SecurityGroups {
		out = append(out, clouds.Resource{Kind: clouds.KindSecurityGroup, ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName), Build: tagMap(g.Tags)[clouds.TagBuild]})
	}
	keys, err := c.api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []types.Filter{f}})
	if err != nil {
		return nil, classify("list key pairs", err)
	}
	for _, k := range keys.KeyPairs {
		n := aws.ToString(k.KeyName)
		out = append(out, clouds.Resource{Kind: clouds.KindKeyPair, ID: n, Name: n, Build: tagMap(k.Tags)[clouds.TagBuild]})
	}
	return out, nil
}

// Remove deletes one resource and waits until it is gone. Idempotent.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	switch r.Kind {
	case clouds.KindServer:
		return c.terminateInstance(ctx, r.ID)
	case clouds.KindSecurityGroup:
		return c.deleteGroup(ctx, r.ID)
	case clouds.KindKeyPair:
		op := "delete key pair " + r.ID
		return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
			_, err := c.api.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(r.ID)})
			if gone(err) {
				return nil
			}
			return classify(op, err)
		})
	case clouds.KindSnapshot:
		return c.deleteSnapshot(ctx, r.ID)
	case clouds.KindImage:
		return c.DeleteImage(ctx, &clouds.Image{ID: r.ID})
	}
	return &clouds.Error{Kind: clouds.KindInvalid, Op: "remove", Err: fmt.Errorf("unknown resource kind %q", r.Kind)}
}

func (c *Cloud) terminateInstance(ctx context.Context, id string) error {
	op := "terminate instance " + id
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if gone(err) {
			return nil
		}
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	return c.waitInstance(ctx, id, types.InstanceStateNameTerminated, c.cfg.DeleteTimeout, nil)
}

// deleteGroup retries DependencyViolation: EC2 keeps a group "in use" for a
// while after its instance is terminated, and giving up there is Packer's most
// common leak.
func (c *Cloud) deleteGroup(ctx context.Context, id string) error {
	op := "delete security group " + id
	return clouds.Within(ctx, op, c.cfg.DeleteTimeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Retry, func(ctx context.Context) (bool, error) {
			_, err := c.api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			if err == nil || gone(err) {
				return true, nil
			}
			if codeOf(err) == "DependencyViolation" {
				return false, nil
			}
			return false, classify(op, err)
		})
	})
}
