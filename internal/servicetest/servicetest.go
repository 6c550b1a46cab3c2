// Package servicetest sets up what tests of imagegen's service share: a
// config with the simulated cloud type, and a log buffer to search for secrets.
package servicetest

import (
	"bytes"
	"sync"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/fake"
	"github.com/imagegen/imagegen/config"
)

// Config parses yml as an imagegen.yaml whose clouds may be of type
// simulated, with no environment variables, and checks it can run the
// service (config.CheckService); any error fails tb. Paths in yml must be
// absolute.
func Config(tb testing.TB, yml string) *config.Config {
	tb.Helper()
	reg := clouds.NewRegistry()
	reg.Register(fake.Type, fake.Configure)
	cfg, err := config.Parse([]byte(yml), "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	if err := cfg.CheckService(); err != nil {
		tb.Fatalf("config: %v", err)
	}
	return cfg
}

// Logs collects a service's logs, written from many goroutines, for the
// checks that no secret reaches them.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
