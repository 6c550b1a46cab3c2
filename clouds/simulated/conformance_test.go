package simulated_test

import (
	"errors"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/simulated"
)

func harness(opts simulated.Options, cur **simulated.Cloud) cloudtest.Harness {
	return cloudtest.Harness{
		Open: func(t *testing.T) clouds.Cloud {
			*cur = simulated.New(opts)
			return *cur
		},
		Image:    "base-image",
		User:     "ubuntu",
		Size:     "small",
		Live:     func(t *testing.T) []clouds.Resource { return (*cur).Live() },
		Images:   func(t *testing.T) []clouds.Image { return (*cur).Images() },
		BadImage: "no-such-image",
		SkipSSH:  opts.SSH == nil,
	}
}

func TestConformance(t *testing.T) {
	withSSH := quick
	withSSH.SSH = &clouds.Endpoint{Addr: "127.0.0.1:2222", HostKeys: []string{"ssh-ed25519 AAAA"}}
	noImages := quick
	noImages.NoImages = true
	flaky := quick
	flaky.FailRate = 0.2
	flaky.Seed = 7
	for _, tc := range []struct {
		name string
		opts simulated.Options
	}{
		{"default", quick},
		{"ssh endpoint", withSSH},
		{"no images", noImages},
		{"20% transient failures", flaky},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the suite mostly sleeps in the fake's delays
			var cur *simulated.Cloud
			opts := tc.opts
			opts.BaseImages = []string{"base-image"}
			cloudtest.Run(t, harness(opts, &cur))
		})
	}
}

// TestConformanceWithFaults runs the suite with a slow call at every op:
// delays must not break any edge of the contract.
func TestConformanceWithFaults(t *testing.T) {
	for _, op := range simulated.Ops {
		t.Run(string(op), func(t *testing.T) {
			t.Parallel()
			var cur *simulated.Cloud
			opts := fast
			opts.BaseImages = []string{"base-image"}
			h := harness(opts, &cur)
			open := h.Open
			h.Open = func(t *testing.T) clouds.Cloud {
				c := open(t)
				cur.Inject(op, simulated.Fault{Delay: 10 * time.Millisecond, Times: 1})
				cur.Inject(op, simulated.Fault{Err: &clouds.Error{Kind: clouds.KindTransient, Code: "503", Err: errors.New("busy")}, Times: 2})
				return c
			}
			cloudtest.Run(t, h)
		})
	}
}
