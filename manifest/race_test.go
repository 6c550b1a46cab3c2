//go:build race

package manifest

// raceEnabled: the race detector multiplies allocations; budgets do not hold.
const raceEnabled = true
