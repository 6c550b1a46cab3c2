// Package configtest loads configs for tests of imagegen's service: a
// config whose clouds may be simulated, checked as the service checks it.
package configtest

import (
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
)

// Config parses yml as an imagegen.yaml whose clouds may be of type
// simulated, with no environment variables, and checks it can run the
// service (config.CheckService); any error fails tb. Paths in yml must be
// absolute.
func Config(tb testing.TB, yml string) *config.Config {
	tb.Helper()
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	cfg, err := config.Parse([]byte(yml), "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	if err := cfg.CheckService(); err != nil {
		tb.Fatalf("config: %v", err)
	}
	return cfg
}
