package ec2test_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

// TestDescribeImagesPages: DescribeImages pages as EC2 does, read through the
// SDK's own paginator: MaxResults per page (capped by ImagePage), a NextToken
// while more remain, none on the last page; EC2's refusals for bad input.
func TestDescribeImagesPages(t *testing.T) {
	f := ec2test.New(ec2test.Options{ImagePage: 3})
	defer f.Close()
	c := client(f)
	ctx := context.Background()
	want := map[string]bool{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		tags := map[string]string{"team": "lab"}
		if n == "c" || n == "f" {
			tags = map[string]string{"imagegen:build": "b1"}
		}
		if id := f.AddImage("img-"+n, "", tags); tags["team"] != "" {
			want[id] = true
		}
	}

	tests := []struct {
		name  string
		max   int32
		pages []int // images per page
	}{
		{"asked 2 a page", 2, []int{2, 2, 1}},
		{"asked 1000, EC2 answers 3", 1000, []int{3, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(tc.max),
				Filters: []types.Filter{{Name: aws.String("tag:team"), Values: []string{"lab"}}}}
			p := ec2.NewDescribeImagesPaginator(c, in)
			var pages []int
			seen := map[string]bool{}
			for p.HasMorePages() {
				out, err := p.NextPage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pages = append(pages, len(out.Images))
				for _, im := range out.Images {
					id := aws.ToString(im.ImageId)
					if seen[id] || !want[id] {
						t.Errorf("image %s listed twice or not of team lab", id)
					}
					seen[id] = true
				}
			}
			if len(seen) != len(want) || len(pages) != len(tc.pages) {
				t.Fatalf("pages %v holding %d images, want pages %v holding %d", pages, len(seen), tc.pages, len(want))
			}
			for i := range pages {
				if pages[i] != tc.pages[i] {
					t.Errorf("pages %v, want %v", pages, tc.pages)
				}
			}
		})
	}

	t.Run("every image visible, one a page: the base image first", func(t *testing.T) {
		p := ec2.NewDescribeImagesPaginator(c, &ec2.DescribeImagesInput{MaxResults: aws.Int32(1)})
		var ids []string
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, im := range out.Images {
				ids = append(ids, aws.ToString(im.ImageId))
			}
		}
		if len(ids) != 8 || ids[0] != ec2test.BaseImage {
			t.Fatalf("listed %v, want the base image then the 7 of the account", ids)
		}
	})

	refusals := []struct {
		name string
		in   *ec2.DescribeImagesInput
		code string
	}{
		{"MaxResults with ImageIds", &ec2.DescribeImagesInput{ImageIds: []string{ec2test.BaseImage}, MaxResults: aws.Int32(5)}, "InvalidParameterCombination"},
		{"MaxResults over 1000", &ec2.DescribeImagesInput{MaxResults: aws.Int32(1001)}, "InvalidParameterValue"},
		{"a token the fake never gave", &ec2.DescribeImagesInput{MaxResults: aws.Int32(5), NextToken: aws.String("bm9wZQ")}, "InvalidPaginationToken"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.DescribeImages(ctx, tc.in)
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
		})
	}
}
