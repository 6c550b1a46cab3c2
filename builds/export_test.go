package builds

import "time"

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

// SetRecordRetry shortens how long a result's write is retried; the returned
// func restores it.
func SetRecordRetry(d time.Duration) (restore func()) {
	old := recordRetry
	recordRetry = d
	return func() { recordRetry = old }
}
