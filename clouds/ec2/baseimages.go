package ec2

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// TagImage (clouds.ImageTagger), which the test's result uses as
// provenance does, is in images.go.
var _ clouds.ImageFinder = (*Cloud)(nil)

// FindImages finds base images with DescribeImages, as Packer's
// source_ami_filter does: the owner as Owners, the name glob as the name
// filter (EC2 takes * and ?), tags as tag:KEY filters, visibility as
// is-public; available images only, newest first by CreationDate.
func (c *Cloud) FindImages(ctx context.Context, f clouds.ImageFilter) ([]clouds.Image, error) {
	in := &ec2.DescribeImagesInput{Filters: imageFilters(f), MaxResults: aws.Int32(imagePage)}
	if f.Owner != "" {
		in.Owners = []string{f.Owner}
	}
	var out []clouds.Image
	err := c.retry(ctx, "find base images "+f.String(), func(ctx context.Context) error {
		out = out[:0]
		for pages := ec2.NewDescribeImagesPaginator(c.api, in); pages.HasMorePages(); {
			res, err := pages.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, im := range res.Images {
				// EC2 filters on the server; the checks again here keep a
				// cloud that ignores a filter (an EC2-compatible one) honest.
				tags := tagMap(im.Tags)
				if im.State != types.ImageStateAvailable || !f.MatchName(aws.ToString(im.Name)) || !f.MatchTags(tags) {
					continue
				}
				out = append(out, clouds.Image{ID: aws.ToString(im.ImageId), Name: aws.ToString(im.Name), Tags: tags, Created: creationDate(im)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	clouds.SortNewestFirst(out)
	return out, nil
}

// imageFilters are DescribeImages' filters for f.
func imageFilters(f clouds.ImageFilter) []types.Filter {
	fs := []types.Filter{{Name: aws.String("state"), Values: []string{"available"}}}
	if f.Name != "" {
		fs = append(fs, types.Filter{Name: aws.String("name"), Values: []string{f.Name}})
	}
	for _, k := range slices.Sorted(maps.Keys(f.Tags)) {
		fs = append(fs, types.Filter{Name: aws.String("tag:" + k), Values: []string{f.Tags[k]}})
	}
	switch f.Visibility {
	case "public":
		fs = append(fs, types.Filter{Name: aws.String("is-public"), Values: []string{"true"}})
	case "private", "shared":
		fs = append(fs, types.Filter{Name: aws.String("is-public"), Values: []string{"false"}})
	}
	return fs
}

// creationDate is when EC2 made the image; zero when it does not say.
func creationDate(im types.Image) time.Time {
	t, err := time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
	if err != nil {
		return time.Time{}
	}
	return t
}
