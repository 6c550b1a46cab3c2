package cloudtest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/simulated"
)

// Mutants are drivers that each break one rule of the contract; the suite
// must fail every one of them, in the subtest that checks that rule.
var mutants = map[string]struct {
	wrap     func(*simulated.Cloud) clouds.Cloud
	wantFail string // the failing subtest
}{
	"records after wait": {func(c *simulated.Cloud) clouds.Cloud { return recordsLate{c} }, "LaunchRecordsBeforeWait"},
	"leaks key pairs":    {func(c *simulated.Cloud) clouds.Cloud { return keepsKeys{c} }, "HappyPath"},
	"terminate twice":    {func(c *simulated.Cloud) clouds.Cloud { return &onceOnly{Cloud: c} }, "TerminateTwice"},
	"no leftovers":       {func(c *simulated.Cloud) clouds.Cloud { return noLeftovers{c} }, "LeftoversAndRemove"},
	"untagged":           {func(c *simulated.Cloud) clouds.Cloud { return untagged{c} }, "EveryResourceCarriesBuild"},
	"image not deleted":  {func(c *simulated.Cloud) clouds.Cloud { return keepsImages{c} }, "DeleteImageIdempotent"},
	"lists no images":    {func(c *simulated.Cloud) clouds.Cloud { return listsNothing{c} }, "BuildImages"},
	"lists every build":  {func(c *simulated.Cloud) clouds.Cloud { return listsAll{c} }, "BuildImages"},
	"tags nothing":       {func(c *simulated.Cloud) clouds.Cloud { return tagsNothing{c} }, "DescribeAndTagImage"},
	"tags replace all":   {func(c *simulated.Cloud) clouds.Cloud { return tagsReplaceAll{c} }, "DescribeAndTagImage"},
}

const mutantEnv = "CLOUDTEST_MUTANT"

func harness(wrap func(*simulated.Cloud) clouds.Cloud) cloudtest.Harness {
	var cur *simulated.Cloud
	return cloudtest.Harness{
		Open: func(t *testing.T) clouds.Cloud {
			cur = simulated.New(simulated.Options{LaunchDelay: 50 * time.Millisecond, SnapshotDelay: 5 * time.Millisecond, BaseImages: []string{"base"}})
			return wrap(cur)
		},
		Image: "base", User: "ubuntu", BadImage: "nope", SkipSSH: true,
		Live:   func(t *testing.T) []clouds.Resource { return cur.Live() },
		Images: func(t *testing.T) []clouds.Image { return cur.Images() },
	}
}

// TestMutantChild runs the suite against one mutant; it does something only
// when TestSuiteFailsBrokenDrivers starts it in a child process.
func TestMutantChild(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		return
	}
	cloudtest.Run(t, harness(mutants[name].wrap))
}

func TestSuitePassesTheFake(t *testing.T) {
	cloudtest.Run(t, harness(func(c *simulated.Cloud) clouds.Cloud { return c }))
}

func TestSuiteFailsBrokenDrivers(t *testing.T) {
	for name, m := range mutants {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMutantChild$", "-test.v")
			cmd.Env = append(os.Environ(), mutantEnv+"="+name)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("the suite passed a driver that %s (err %v):\n%s", name, err, out)
			}
			if want := "--- FAIL: TestMutantChild/" + m.wantFail; !strings.Contains(string(out), want) {
				t.Fatalf("want %q in the output:\n%s", want, out)
			}
		})
	}
}

// recordsLate fills inst only after the inner Launch returns, and not at all on error.
type recordsLate struct{ *simulated.Cloud }

func (c recordsLate) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	var tmp clouds.Instance
	if err := c.Cloud.Launch(ctx, req, &tmp); err != nil {
		return err
	}
	*inst = tmp
	return nil
}

// keepsKeys never deletes key pairs.
type keepsKeys struct{ *simulated.Cloud }

func (c keepsKeys) Terminate(ctx context.Context, inst *clouds.Instance) error {
	cp := *inst
	cp.Resources = nil
	for _, r := range inst.Resources {
		if r.Kind != clouds.KindKeyPair {
			cp.Resources = append(cp.Resources, r)
		}
	}
	return c.Cloud.Terminate(ctx, &cp)
}

// onceOnly fails a second Terminate of the same instance.
type onceOnly struct {
	*simulated.Cloud
	done map[string]bool
}

func (c *onceOnly) Terminate(ctx context.Context, inst *clouds.Instance) error {
	if c.done == nil {
		c.done = map[string]bool{}
	}
	if c.done[inst.ID] && inst.ID != "" {
		return clouds.Errorf(clouds.KindNotFound, "delete server", "%s is gone", inst.ID)
	}
	c.done[inst.ID] = true
	return c.Cloud.Terminate(ctx, inst)
}

// noLeftovers finds nothing.
type noLeftovers struct{ *simulated.Cloud }

func (noLeftovers) Leftovers(context.Context, string) ([]clouds.Resource, error) { return nil, nil }

// untagged launches for another build id than the request's.
type untagged struct{ *simulated.Cloud }

func (c untagged) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	req.Build = "someone-else"
	return c.Cloud.Launch(ctx, req, inst)
}

// keepsImages pretends to delete images.
type keepsImages struct{ *simulated.Cloud }

func (keepsImages) DeleteImage(context.Context, *clouds.Image) error { return nil }

// listsNothing implements clouds.ImageLister but finds no image.
type listsNothing struct{ *simulated.Cloud }

func (listsNothing) BuildImages(context.Context, string) ([]clouds.Image, error) { return nil, nil }

// tagsNothing implements clouds.ImageTagger and changes nothing.
type tagsNothing struct{ *simulated.Cloud }

func (tagsNothing) TagImage(context.Context, string, map[string]string) error { return nil }

// tagsReplaceAll describes an image with only the tags last given to TagImage.
type tagsReplaceAll struct{ *simulated.Cloud }

func (c tagsReplaceAll) DescribeImage(ctx context.Context, id string) (clouds.Image, error) {
	im, err := c.Cloud.DescribeImage(ctx, id)
	if err == nil {
		im.Tags = map[string]string{clouds.TagCommit: im.Tags[clouds.TagCommit]}
	}
	return im, err
}

// listsAll ignores the build it is asked for.
type listsAll struct{ *simulated.Cloud }

func (c listsAll) BuildImages(ctx context.Context, _ string) ([]clouds.Image, error) {
	return c.Cloud.BuildImages(ctx, "")
}
