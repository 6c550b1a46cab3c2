package clouds

import "context"

// ImageTagger is implemented by clouds that can add tags to an existing
// image. The pipeline tags each image with TagTested once its test has run
// (the result is not known at Snapshot); the tags given are set (added, or
// replaced when present) and every other tag is left as it is. An image that
// does not exist is an error of KindNotFound. Tagging twice with the same
// tags is the same as once.
type ImageTagger interface {
	TagImage(ctx context.Context, id string, tags map[string]string) error
}

// TagRole is "test" on the resources of the VM a build boots from its new
// image to test it (they carry TagBuild too: the sweep finds them by it).
const TagRole = "imagegen:role"

// The values of TagTested.
const (
	TestedPassed  = "passed"
	TestedFailed  = "failed"
	TestedSkipped = "skipped" // the cloud gives no SSH (simulated): the test could not run
)
