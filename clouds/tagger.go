package clouds

// The image lifecycle's tags, set through ImageTagger (describe.go).

// TagRole is "test" on the resources of the VM a build boots from its new
// image to test it (they carry TagBuild too: the sweep finds them by it).
const TagRole = "imagegen:role"

// The values of TagTested.
const (
	TestedPassed  = "passed"
	TestedFailed  = "failed"
	TestedSkipped = "skipped" // the cloud gives no SSH (simulated): the test could not run
)
