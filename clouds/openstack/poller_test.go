package openstack_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
)

const pollEvery = 25 * time.Millisecond

// openPolled opens the fake's cloud "hotel" with its pollers looking every pollEvery.
func openPolled(t *testing.T, f *openstacktest.Fake) *openstack.Cloud {
	t.Helper()
	opts := fastOpts
	opts.Poll = clouds.Backoff{Initial: pollEvery, Max: pollEvery, Factor: 1}
	op, err := openstack.New("test-hotel", openstack.Config{Cloud: "hotel", CloudsFile: cloudsYAML(t, f, "secret"), Flavor: "m1.small",
		ConsoleTimeout: 2 * time.Second}, false, opts)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	return cl.(*openstack.Cloud)
}

// polledBuild runs one build's cloud steps: launch, stop, snapshot, terminate.
func polledBuild(c *openstack.Cloud, t *testing.T, id string) error {
	req := launchReq(t, id)
	req.Log = slog.New(slog.DiscardHandler)
	inst := &clouds.Instance{Build: id}
	ctx := context.Background()
	defer func() { _ = c.Terminate(ctx, inst) }()
	if err := c.Launch(ctx, req, inst); err != nil {
		return fmt.Errorf("%s: launch: %w", id, err)
	}
	if err := c.Stop(ctx, inst); err != nil {
		return fmt.Errorf("%s: stop: %w", id, err)
	}
	img := &clouds.Image{}
	if err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + id, Tags: provenance(id), Log: req.Log}, img); err != nil {
		return fmt.Errorf("%s: snapshot: %w", id, err)
	}
	return nil
}

// TestWaitsShareBatchedCalls: builds waiting at once share the account's
// looks: one list of the project's servers a look (a GET when one server is
// waited for), one list of images by id (100 ids a call; past 100, the
// images still being made, then by id those it missed).
func TestWaitsShareBatchedCalls(t *testing.T) {
	for _, n := range []int{1, 150} {
		t.Run(fmt.Sprintf("%d builds", n), func(t *testing.T) {
			// Snapshots take 1 s so that, on a loaded machine too, more than
			// 100 builds wait on their images at once (with 300 ms, at most
			// 83 of 150 did at load 6).
			f := newFake(t, openstacktest.Options{ServerQuota: 1000, BootDelay: 300 * time.Millisecond,
				StopDelay: 100 * time.Millisecond, SnapshotDelay: time.Second})
			c := openPolled(t, f)
			start := time.Now()
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { errs[i] = polledBuild(c, t, fmt.Sprintf("os-poll-%03d", i)) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, c) // a look made as the last build ended is counted too
			srv, img := c.PollerStats()
			lists, _ := f.CountSince(start, `^GET /RegionOne/compute/v2\.1/servers/detail$`)
			gets, _ := f.CountSince(start, `^GET /RegionOne/compute/v2\.1/servers/[^/]+$`)
			imageLists, _ := f.CountSince(start, `^GET /RegionOne/image/v2/images$`)
			// Image GETs are the launches' look-ups of the base image, one
			// shared by every launch of the account.
			imageGets, _ := f.CountSince(start, `^GET /RegionOne/image/v2/images/[^/]+$`)
			// Per build, each of the n builds would make a call every look.
			if lists+gets > 2*srv.Looks+3 || srv.Calls > srv.Looks+2 {
				t.Errorf("servers: %d lists and %d GETs for %d looks (%d calls) of %d builds", lists, gets, srv.Looks, srv.Calls, n)
			}
			if imageGets != 1 || imageLists != img.Calls || img.Calls > img.Looks+3+n/25 {
				t.Errorf("images: %d lists and %d GETs for %d looks (%d calls) of %d builds", imageLists, imageGets, img.Looks, img.Calls, n)
			}
			if n > 1 && (srv.Most < n/2 || img.Most <= 100) {
				t.Errorf("at most %d servers and %d images waited for at once: the builds did not wait together", srv.Most, img.Most)
			}
			for _, b := range []int{0, n - 1} {
				assertClean(t, f, "RegionOne", fmt.Sprintf("os-poll-%03d", b))
			}
			waitIdle(t, c)
		})
	}
}

// TestWaitsThroughThrottling: Nova and Glance allow 5 looks (lists, a
// server's GET) a second and answer 429 with Retry-After past it; 60
// builds still finish, their pollers backing off.
func TestWaitsThroughThrottling(t *testing.T) {
	f := newFake(t, openstacktest.Options{ServerQuota: 1000, BootDelay: time.Second, StopDelay: 100 * time.Millisecond, SnapshotDelay: 300 * time.Millisecond,
		Throttle: []openstacktest.Throttle{{Match: `^GET .*/(servers/[^/]+|images)$`, Rate: 5, Burst: 5}}})
	c := openPolled(t, f)
	start := time.Now()
	errs := make([]error, 60)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = polledBuild(c, t, fmt.Sprintf("os-thr-%03d", i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	n, throttled := f.CountSince(start, `^GET .*/(servers/[^/]+|images)$`)
	if throttled == 0 {
		t.Errorf("none of %d looks was throttled: the test throttles nothing", n)
	}
	waitIdle(t, c)
}

func TestWaitServerEdges(t *testing.T) {
	f := newFake(t, openstacktest.Options{ServerQuota: 100, BootDelay: 200 * time.Millisecond})
	c := openPolled(t, f)
	ctx := context.Background()
	t.Run("a server Nova does not list fails after a few looks", func(t *testing.T) {
		err := c.Stop(ctx, &clouds.Instance{ID: "6a4d5f3e-0000-4000-8000-000000000000"})
		if !clouds.IsNotFound(err) {
			t.Errorf("got %v; want not-found", err)
		}
	})
	t.Run("the build's context ends its wait, not the others'", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			req := launchReq(t, "os-cancel")
			req.Log = slog.New(slog.DiscardHandler)
			inst := &clouds.Instance{}
			done <- c.Launch(cctx, req, inst)
			_ = c.Terminate(ctx, inst)
		}()
		other := make(chan error, 1)
		go func() { other <- polledBuild(c, t, "os-other") }()
		time.Sleep(4 * pollEvery)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled launch: %v", err)
		}
		if err := <-other; err != nil {
			t.Errorf("the other build: %v", err)
		}
		assertClean(t, f, "RegionOne", "os-cancel")
	})
	waitIdle(t, c)
	if strings.Contains(strings.Join(f.Rejected(), " "), "image list parameter") {
		t.Errorf("the fake refused an image list: %v", f.Rejected())
	}
}

func waitIdle(t *testing.T, c *openstack.Cloud) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.Polling() {
		if time.Now().After(deadline) {
			t.Fatal("the account's pollers still run after every wait ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
