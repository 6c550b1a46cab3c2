// Package chaos is imagegen's fault-injection suite: real serve and worker
// processes, SIGKILLed and restarted, on a Redis restarted mid-run (see chaos_test.go).
package chaos

import (
	"fmt"
	"strings"
)

// Table is what a chaos run found. Every column but Finished must be 0, and
// Finished must equal Accepted.
type Table struct {
	Accepted     int // pushes answered 202 (each one build: one generator on one cloud)
	Finished     int // builds whose commit status ended success, failure or error
	Pending      int // accepted builds whose status is pending or missing at the end
	Duplicates   int // builds recorded, check runs created, or deliveries enqueued more than once
	Leftovers    int // resources tagged imagegen:build still in the cloud after the sweep, orphan images included
	Secrets      int // secrets found in logs, statuses, check runs or Redis
	OrphanImages int // of Leftovers: images no build record names (an attempt killed after its snapshot)
}

// OK says whether the run kept every promise.
func (t Table) OK() bool {
	return t.Accepted > 0 && t.Finished == t.Accepted && t.Pending == 0 && t.Duplicates == 0 && t.Leftovers == 0 && t.Secrets == 0
}

// String renders the table as markdown, with the run's conditions above it.
func (t Table) String() string {
	var b strings.Builder
	b.WriteString("| builds accepted | builds finished | statuses left pending | duplicate builds | resources left after the sweep | secrets found |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d |\n", t.Accepted, t.Finished, t.Pending, t.Duplicates, t.Leftovers, t.Secrets)
	return b.String()
}
