package ec2

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// Snapshot makes an AMI of the instance, tagging it and its snapshots with
// the provenance, and waits until it is available.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "create image", Err: errors.New("no instance")}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	tags := map[string]string{}
	for k, v := range req.Tags {
		tags[k] = v
	}
	tags["Name"] = req.Name
	img.Name, img.Tags = req.Name, req.Tags
	op := "create image " + req.Name
	err := c.retry(ctx, op, func(ctx context.Context) error {
		out, err := c.api.CreateImage(ctx, &ec2.CreateImageInput{
			InstanceId:  aws.String(inst.ID),
			Name:        aws.String(truncate(req.Name, 128)),
			Description: aws.String(truncate("imagegen build "+req.Tags[clouds.TagBuild]+" of "+req.Tags[clouds.TagGenerator], 255)),
			// A stopped instance needs no reboot; a running one (stop_instance:
			// false) is rebooted by EC2 so its disk is consistent.
			NoReboot:          aws.Bool(*c.cfg.StopInstance),
			TagSpecifications: tagSpec(tags, types.ResourceTypeImage, types.ResourceTypeSnapshot),
		})
		if err == nil {
			img.ID = aws.ToString(out.ImageId)
		}
		return err
	})
	if img.ID == "" && (codeOf(err) == "InvalidAMIName.Duplicate" || ctx.Err() != nil) {
		// A retry after a lost answer, or a cancellation that cut it off:
		// adopt the image of that name only if this build made it.
		if id := c.findImage(ctx, req.Name, req.Tags[clouds.TagBuild]); id != "" {
			img.ID = id
			if ctx.Err() == nil {
				err = nil
			}
		}
	}
	if err != nil {
		return err
	}
	req.Log.Info("creating image, waiting for available", "image", img.ID, "name", req.Name)
	return c.waitImage(ctx, img)
}

func recordSnapshots(img *clouds.Image, im types.Image) {
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs == nil || b.Ebs.SnapshotId == nil {
			continue
		}
		id := aws.ToString(b.Ebs.SnapshotId)
		known := false
		for _, r := range img.Resources {
			known = known || r.ID == id
		}
		if !known {
			img.Resources = append(img.Resources, clouds.Resource{Kind: clouds.KindSnapshot, ID: id, Name: aws.ToString(b.DeviceName), Build: img.Tags[clouds.TagBuild]})
		}
	}
}

func (c *Cloud) findImage(ctx context.Context, name, build string) string {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	fs := []types.Filter{{Name: aws.String("name"), Values: []string{name}}}
	if build != "" {
		fs = append(fs, buildFilter(build))
	}
	out, err := c.api.DescribeImages(lctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: fs})
	if err != nil || len(out.Images) == 0 {
		return ""
	}
	return aws.ToString(out.Images[0].ImageId)
}

// DeleteImage deregisters a half-made image and deletes its EBS snapshots,
// which deregistration leaves behind.
func (c *Cloud) DeleteImage(ctx context.Context, img *clouds.Image) error {
	if img.ID == "" {
		return nil
	}
	op := "delete image " + img.ID
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		out, err := c.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.ID}})
		if gone(err) {
			return nil
		}
		if err != nil {
			return classify(op, err)
		}
		for _, im := range out.Images {
			recordSnapshots(img, im)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if build := img.Tags[clouds.TagBuild]; build != "" && img.Name != "" {
		// A failed image may name no snapshots; its tags still find them.
		out, err := c.api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
			Filters: []types.Filter{buildFilter(build), {Name: aws.String("tag:Name"), Values: []string{img.Name}}}})
		if err == nil {
			for _, s := range out.Snapshots {
				recordSnapshots(img, types.Image{BlockDeviceMappings: []types.BlockDeviceMapping{{Ebs: &types.EbsBlockDevice{SnapshotId: s.SnapshotId}}}})
			}
		}
	}
	err = clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(img.ID)})
		if gone(err) {
			return nil
		}
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range img.Resources {
		if r.Kind == clouds.KindSnapshot {
			errs = append(errs, c.deleteSnapshot(ctx, r.ID))
		}
	}
	return errors.Join(errs...)
}

func (c *Cloud) deleteSnapshot(ctx context.Context, id string) error {
	op := "delete snapshot " + id
	// InvalidSnapshot.InUse clears once the deregistration has gone through.
	return clouds.Within(ctx, op, c.cfg.DeleteTimeout, func(ctx context.Context) error {
		return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
			_, err := c.api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
			if gone(err) {
				return nil
			}
			return classify(op, err)
		})
	})
}

var _ clouds.ImageLister = (*Cloud)(nil)

// imagePage is the most images one DescribeImages page asks for (EC2's maximum).
const imagePage = 1000

// BuildImages lists the AMIs this account owns tagged imagegen:build=build
// (any build when build is ""), pending and failed ones too: an attempt killed
// mid-snapshot leaves those. Each carries its EBS snapshots in Resources, so
// DeleteImage removes them with it.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	var out []clouds.Image
	err := c.retry(ctx, "list images", func(ctx context.Context) error {
		out = out[:0]
		in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{buildFilter(build)}, MaxResults: aws.Int32(imagePage)}
		for pages := ec2.NewDescribeImagesPaginator(c.api, in); pages.HasMorePages(); {
			res, err := pages.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, im := range res.Images {
				tags := tagMap(im.Tags)
				b := tags[clouds.TagBuild]
				if b == "" || (build != "" && b != build) || im.State == types.ImageStateDeregistered {
					continue
				}
				// The Name tag holds the name Snapshot was given (the AMI's own
				// name is cut at 128), and DeleteImage finds snapshots by it.
				name := tags["Name"]
				if name == "" {
					name = aws.ToString(im.Name)
				}
				delete(tags, "Name")
				img := clouds.Image{ID: aws.ToString(im.ImageId), Name: name, Tags: tags, Created: creationDate(im)}
				recordSnapshots(&img, im)
				out = append(out, img)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var (
	_ clouds.ImageDescriber = (*Cloud)(nil)
	_ clouds.ImageTagger    = (*Cloud)(nil)
)

// DescribeImage reads an AMI with its tags (the Name tag left out, as
// BuildImages does): clouds.ImageDescriber. An AMI that does not exist, or
// is deregistered, is KindNotFound; so is an id that is no AMI id.
func (c *Cloud) DescribeImage(ctx context.Context, id string) (clouds.Image, error) {
	op := "describe image " + id
	notFound := func(err error) error {
		return &clouds.Error{Kind: clouds.KindNotFound, Op: op, Err: fmt.Errorf("%w: %w", clouds.ErrNotFound, err)}
	}
	var out clouds.Image
	err := c.retry(ctx, op, func(ctx context.Context) error {
		res, err := c.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		if code := codeOf(err); code == "InvalidAMIID.NotFound" || code == "InvalidAMIID.Malformed" || code == "InvalidAMIID.Unavailable" {
			return notFound(err)
		}
		if err != nil {
			return err
		}
		if len(res.Images) == 0 || res.Images[0].State == types.ImageStateDeregistered {
			return notFound(fmt.Errorf("image %s is not in the account's images", id))
		}
		im := res.Images[0]
		tags := tagMap(im.Tags)
		name := tags["Name"]
		if name == "" {
			name = aws.ToString(im.Name)
		}
		delete(tags, "Name")
		out = clouds.Image{ID: aws.ToString(im.ImageId), Name: name, Tags: tags}
		return nil
	})
	return out, err
}

// TagImage sets tags on an AMI with CreateTags, which replaces a tag's value
// when the key is there (values cut to EC2's 256 characters):
// clouds.ImageTagger. Its snapshots keep the tags Snapshot gave them.
func (c *Cloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	if len(tags) == 0 {
		return nil
	}
	spec := tagSpec(tags, types.ResourceTypeImage)
	return c.retry(ctx, "tag image "+id, func(ctx context.Context) error {
		_, err := c.api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: spec[0].Tags})
		return err
	})
}
