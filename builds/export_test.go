package builds

// What the tests in package builds_test need of the package's insides.
var (
	PlanID       = planID
	CloudStatus  = cloudStatus
	RecordResult = recordResult
)

const (
	ZeroSHA         = zeroSHA
	PlanConcurrency = planConcurrency
)
