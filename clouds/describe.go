package clouds

import "context"

// ImageDescriber is implemented by clouds that can read one image's tags
// back: `imagegen trace --config` and `imagegen verify` ask the cloud itself,
// so an image's provenance is known even when imagegen's records are gone,
// and a tag edited since the build is seen as it is now.
type ImageDescriber interface {
	// DescribeImage returns the image id as the cloud holds it now: its id,
	// name and imagegen:* tags (Glance properties, EC2 tags, the qemu
	// sidecar). An image that does not exist (deleted, deregistered, or an id
	// of another cloud) is an error of KindNotFound.
	DescribeImage(ctx context.Context, id string) (Image, error)
}

// ImageTagger is implemented by clouds that can add tags to an existing
// image. The pipeline tags each image with TagProvenance once the statement
// naming its id is signed; the tags given are set (added, or replaced when
// present) and every other tag is left as it is. An image that does not
// exist is an error of KindNotFound. Tagging twice with the same tags is
// the same as once.
type ImageTagger interface {
	TagImage(ctx context.Context, id string, tags map[string]string) error
}
