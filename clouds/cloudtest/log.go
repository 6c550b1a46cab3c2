package cloudtest

import (
	"strings"
	"sync/atomic"
	"testing"
)

// tWriter sends a driver's log lines to t.Log until the test ends.
type tWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
