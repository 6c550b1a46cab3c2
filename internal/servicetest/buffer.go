package servicetest

import (
	"bytes"
	"sync"
)

// Buffer collects what many goroutines write (a service's logs, a guest's
// console) for a test to read, e.g. to check that no secret reached it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
