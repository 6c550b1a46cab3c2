// Package chaos is imagegen's fault-injection suite: real serve and worker
// processes, SIGKILLed and restarted, on a network that breaks (see chaos_test.go).
package chaos

import (
	"fmt"
	"strings"
)

// Table is what a chaos run found. Every column but Finished must be 0, and
// Finished must equal Accepted, for the run and for each fault's builds.
type Table struct {
	Accepted     int // pushes answered 202 (each one build: one generator on every chaos cloud)
	Finished     int // builds whose commit statuses all ended success, failure or error
	Pending      int // accepted builds with a status pending or missing at the end
	Duplicates   int // builds recorded, check runs created, or deliveries enqueued more than once
	Leftovers    int // resources tagged imagegen:build still in a cloud after the sweep, orphan images included
	Secrets      int // secrets found in logs, statuses, check runs or Redis
	OrphanImages int // of Leftovers: images no build record names (an attempt killed after its snapshot)

	// Faults are the network faults of the run, in the order injected.
	Faults []FaultRow
}

// FaultRow is one network fault and what became of the builds it hit: the
// builds that had resources on a cloud while it lasted.
type FaultRow struct {
	Fault      string // what was done, and for how long
	Injected   int    // how many times (connections reset, abandoned; partitions)
	InFlight   int    // builds with resources on a cloud while it lasted
	Finished   int    // of them, builds whose statuses all ended
	Duplicates int    // of them, builds recorded or check runs created twice
	Leftovers  int    // resources of theirs left after the sweep
	Lost       int    // for SSH faults, cloud parts of theirs that failed saying "connection lost"
}

// OK says whether the fault's builds kept every promise.
func (r FaultRow) OK() bool {
	return r.Finished == r.InFlight && r.Duplicates == 0 && r.Leftovers == 0
}

// OK says whether the run kept every promise.
func (t Table) OK() bool {
	for _, r := range t.Faults {
		if !r.OK() {
			return false
		}
	}
	return t.Accepted > 0 && t.Finished == t.Accepted && t.Pending == 0 && t.Duplicates == 0 && t.Leftovers == 0 && t.Secrets == 0
}

// String renders the table as markdown: the run's row, then one row per
// network fault, counting the builds in flight while it lasted (the secret
// scan is of the whole run, so fault rows show "·" there).
func (t Table) String() string {
	var b strings.Builder
	b.WriteString("| builds | accepted | finished | statuses left pending | duplicate builds | resources left after the sweep | secrets found |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| all | %d | %d | %d | %d | %d | %d |\n", t.Accepted, t.Finished, t.Pending, t.Duplicates, t.Leftovers, t.Secrets)
	for _, r := range t.Faults {
		what := r.Fault
		if r.Lost > 0 {
			what += fmt.Sprintf(`; of their cloud parts, %d failed "connection lost"`, r.Lost)
		}
		fmt.Fprintf(&b, "| in flight during: %s (×%d) | %d | %d | %d | %d | %d | · |\n",
			what, r.Injected, r.InFlight, r.Finished, r.InFlight-r.Finished, r.Duplicates, r.Leftovers)
	}
	return b.String()
}
