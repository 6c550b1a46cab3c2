package ec2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/secret"
)

// pollEvery is the poller's period in these tests.
const pollEvery = 25 * time.Millisecond

// openPolled opens a Cloud on the fake, its poller looking every pollEvery.
func openPolled(t *testing.T, f *ec2test.Fake, ask bool, password string) *Cloud {
	t.Helper()
	o, err := New("poll-test", Config{Region: "us-east-1", Endpoint: f.URL, SSHCIDRs: []string{"127.0.0.1/32"}, AccessKeyID: "AKIDPOLLTEST"}, ask,
		Options{Poll: clouds.Backoff{Initial: pollEvery, Max: pollEvery, Factor: 1}, MaxBackoff: 5 * time.Millisecond, NoRetryQuota: true,
			Credentials: credentials.NewStaticCredentialsProvider("AKIDPOLLTEST", "poll-test-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	return openWith(t, o, password)
}

func openWith(t *testing.T, o *Opener, password string) *Cloud {
	t.Helper()
	cred := clouds.Credentials{}
	if password != "" {
		cred.Password = secret.New(password)
	}
	c, err := o.Open(context.Background(), cred)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Cloud)
}

// runInstances starts n instances tagged as builds', straight through the API.
func runInstances(t *testing.T, c *Cloud, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		out, err := c.api.RunInstances(context.Background(), &ec2.RunInstancesInput{
			ImageId: aws.String(ec2test.BaseImage), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			TagSpecifications: tagSpec(map[string]string{clouds.TagBuild: fmt.Sprintf("poll-%04d", i)}, types.ResourceTypeInstance),
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = aws.ToString(out.Instances[0].InstanceId)
	}
	return ids
}

// createImages makes an image of each instance, tagged as a build's,
// straight through the API.
func createImages(t *testing.T, c *Cloud, instances []string) []string {
	t.Helper()
	images := make([]string, len(instances))
	for i, id := range instances {
		out, err := c.api.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(fmt.Sprintf("img-%d", i)),
			TagSpecifications: tagSpec(map[string]string{clouds.TagBuild: fmt.Sprintf("poll-%04d", i)}, types.ResourceTypeImage)})
		if err != nil {
			t.Fatal(err)
		}
		images[i] = aws.ToString(out.ImageId)
	}
	return images
}

// waitAll waits for every id with wait, at once, and returns the errors.
func waitAll(ids []string, wait func(id string) error) []error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = wait(id) })
	}
	wg.Wait()
	return errs
}

func waitStopped(t *testing.T, c *Cloud) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.Polling() {
		if time.Now().After(deadline) {
			t.Fatal("the account's pollers still run after every wait ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWaitsShareBatchedCalls: however many builds wait, each look is one
// DescribeInstances call (200 ids a call; past 200, every live imagegen
// instance in pages, then by id only those it missed), and never more
// filter values than EC2 takes.
func TestWaitsShareBatchedCalls(t *testing.T) {
	for _, n := range []int{1, 150, 450} {
		t.Run(fmt.Sprintf("%d builds", n), func(t *testing.T) {
			// Instances are invisible for 60 ms after RunInstances (eventual
			// consistency) and boot in 300 ms.
			f := ec2test.New(ec2test.Options{BootDelay: 300 * time.Millisecond, Hidden: 60 * time.Millisecond})
			defer f.Close()
			c := openPolled(t, f, false, "")
			ids := runInstances(t, c, n)
			before := f.Calls("DescribeInstances")
			start := time.Now()
			errs := waitAll(ids, func(id string) error {
				return c.waitInstance(context.Background(), id, types.InstanceStateNameRunning, time.Minute, nil)
			})
			took := time.Since(start)
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("waits failed: %v", err)
			}
			waitStopped(t, c) // a look made as the last wait ended is counted too
			calls := f.Calls("DescribeInstances") - before
			st, _ := c.PollerStats()
			// A look every 25 ms over ~300 ms; each one call, more only
			// for the instances the broad look did not list yet.
			if maxLooks := int(took/pollEvery) + 3; st.Looks > maxLooks {
				t.Errorf("%d looks in %v; want at most one every %v", st.Looks, took, pollEvery)
			}
			if calls != st.Calls || calls > st.Looks+2*(n/maxFilterValues+1) {
				t.Errorf("%d DescribeInstances calls for %d looks of %d builds (poller counted %d); want about one a look", calls, st.Looks, n, st.Calls)
			}
			for _, r := range f.Requests() {
				if r.Action == "DescribeInstances" && len(r.Form.Get("InstanceId.1")) > 0 {
					t.Fatalf("a look named InstanceId (which fails on an id EC2 does not list yet): %v", r.Form)
				}
			}
			waitStopped(t, c)
		})
	}
}

func TestWaitInstanceEdges(t *testing.T) {
	f := ec2test.New(ec2test.Options{BootDelay: 100 * time.Millisecond, TerminateDelay: 50 * time.Millisecond})
	defer f.Close()
	c := openPolled(t, f, false, "")
	ctx := context.Background()

	t.Run("an id EC2 never lists fails after a few looks", func(t *testing.T) {
		err := c.waitInstance(ctx, "i-0123456789abcdef0", types.InstanceStateNameRunning, time.Minute, nil)
		var ce *clouds.Error
		if !errors.As(err, &ce) || ce.Kind != clouds.KindNotFound || ce.Code != "InvalidInstanceID.NotFound" ||
			!strings.Contains(err.Error(), "has not listed instance i-0123456789abcdef0 in 10 looks") {
			t.Errorf("got %v; want not-found after 10 looks", err)
		}
	})
	t.Run("waiting for terminated: not listed is terminated", func(t *testing.T) {
		if err := c.waitInstance(ctx, "i-0fedcba9876543210", types.InstanceStateNameTerminated, time.Minute, nil); err != nil {
			t.Errorf("got %v", err)
		}
	})
	t.Run("an instance terminated while booting fails at once", func(t *testing.T) {
		id := runInstances(t, c, 1)[0]
		if _, err := c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
			t.Fatal(err)
		}
		err := c.waitInstance(ctx, id, types.InstanceStateNameRunning, time.Minute, nil)
		if clouds.KindOf(err) != clouds.KindFailed || !strings.Contains(err.Error(), "instance is ") {
			t.Errorf("got %v; want the instance's end", err)
		}
	})
	t.Run("the build's context ends its wait, not the others'", func(t *testing.T) {
		ids := runInstances(t, c, 2)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.waitInstance(cctx, ids[0], types.InstanceStateNameStopped, time.Minute, nil) }()
		other := make(chan error, 1)
		go func() { other <- c.waitInstance(ctx, ids[1], types.InstanceStateNameRunning, time.Minute, nil) }()
		time.Sleep(3 * pollEvery)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("canceled wait: %v", err)
		}
		if err := <-other; err != nil {
			t.Errorf("the other wait: %v", err)
		}
	})
	t.Run("the boot timeout is the wait's own", func(t *testing.T) {
		id := runInstances(t, c, 1)[0]
		err := c.waitInstance(ctx, id, types.InstanceStateNameStopped, 100*time.Millisecond, nil)
		if clouds.KindOf(err) != clouds.KindFailed || !strings.Contains(err.Error(), "not done after 100ms") {
			t.Errorf("got %v; want the wait's timeout", err)
		}
	})
	waitStopped(t, c)
}

// TestWaitsThroughThrottling: the account allows 4 describe calls a
// second; the pollers' looks (one call each) and the SDK's adaptive retries
// keep 300 waiting builds going, every one noticing its instance.
func TestWaitsThroughThrottling(t *testing.T) {
	f := ec2test.New(ec2test.Options{BootDelay: 2 * time.Second,
		Throttle: []ec2test.Throttle{{Actions: []string{"DescribeInstances", "DescribeImages"}, Rate: 4, Burst: 4}}})
	defer f.Close()
	c := openPolled(t, f, false, "")
	ids := runInstances(t, c, 300)
	start := time.Now()
	errs := waitAll(ids, func(id string) error {
		return c.waitInstance(context.Background(), id, types.InstanceStateNameRunning, time.Minute, nil)
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("waits failed: %v", err)
	}
	calls, throttled := f.CallsSince(start, "DescribeInstances")
	if throttled == 0 {
		t.Errorf("no call of %d was throttled: the test throttles nothing", calls)
	}
	// Without batching: 300 builds × a look every 25 ms.
	if calls > 100 {
		t.Errorf("%d DescribeInstances calls (%d throttled) for 300 builds", calls, throttled)
	}
	waitStopped(t, c)
}

// TestImagesShareBatchedCalls: builds waiting on images past 200 look at
// the pending imagegen images in one call, then by id at those it missed.
func TestImagesShareBatchedCalls(t *testing.T) {
	f := ec2test.New(ec2test.Options{ImageDelay: 700 * time.Millisecond, Hidden: 350 * time.Millisecond})
	defer f.Close()
	c := openPolled(t, f, false, "")
	ctx := context.Background()
	ids := runInstances(t, c, 250)
	images := createImages(t, c, ids)
	before := f.Calls("DescribeImages")
	recorded := make([]*clouds.Image, len(images))
	errs := waitAll(images, func(id string) error {
		img := &clouds.Image{ID: id}
		for i := range images {
			if images[i] == id {
				recorded[i] = img
			}
		}
		return c.waitImage(ctx, img)
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("waits failed: %v", err)
	}
	waitStopped(t, c)
	_, st := c.PollerStats()
	// Each look is one broad call (every imagegen image created this hour,
	// pending or not: one that turned available needs no second call). EC2
	// shows a new image only after 350 ms (14 looks): those it does not
	// show yet are looked up by id every freshLooks looks, not at every
	// look (two calls of 200 ids a look, as before).
	broad, byID := 0, 0
	for _, r := range f.Requests() {
		if r.Action != "DescribeImages" {
			continue
		}
		if r.Form.Get("Filter.1.Name") == "image-id" {
			byID++
		} else {
			broad++
		}
	}
	if calls := f.Calls("DescribeImages") - before; calls != st.Calls || broad > st.Looks {
		t.Errorf("%d DescribeImages calls (%d broad) for %d looks; the poller counted %d", calls, broad, st.Looks, st.Calls)
	}
	if 3*byID > 2*st.Looks {
		t.Errorf("%d DescribeImages calls by image id for 250 images in %d looks; want at most two (200 ids a call) every %d looks", byID, st.Looks, freshLooks)
	}
	t.Logf("%d looks, %d calls by id", st.Looks, byID)
	for _, img := range recorded {
		if len(img.Resources) != 1 || img.Resources[0].Kind != clouds.KindSnapshot {
			t.Fatalf("image %s: snapshots %v; want its one EBS snapshot recorded", img.ID, img.Resources)
		}
	}
	waitStopped(t, c)
}

// TestAccountsAreShared: the builds of one cloud share the account's
// retryer and pollers; a password: ask build's own key has its own.
func TestAccountsAreShared(t *testing.T) {
	f := ec2test.New(ec2test.Options{})
	defer f.Close()
	o, err := New("acct", Config{Region: "us-east-1", Endpoint: f.URL, SSHCIDRs: []string{"127.0.0.1/32"}, AccessKeyID: "AKIDASK"}, true,
		Options{Credentials: credentials.NewStaticCredentialsProvider("AKIDASK", "x", "")})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, b := openWith(t, o, "secret-a"), openWith(t, o, "secret-a"), openWith(t, o, "secret-b")
	if a1.acct != a2.acct {
		t.Error("two builds with the same key have different accounts")
	}
	if a1.acct == b.acct {
		t.Error("builds with different keys share an account")
	}
	if _, ok := a1.acct.retryer.(interface {
		GetAttemptToken(context.Context) (func(error) error, error)
	}); !ok {
		t.Errorf("the retryer %T is not the SDK's adaptive mode", a1.acct.retryer)
	}
	// The pollers' describe calls learn EC2's limit on describe calls
	// apart from the mutating calls' (EC2 throttles them from separate
	// buckets).
	if _, ok := a1.acct.describe.(*retry.AdaptiveMode); !ok || a1.acct.describe == a1.acct.retryer {
		t.Errorf("the pollers' retryer %T: want an adaptive one of their own", a1.acct.describe)
	}
	for _, k := range o.accts.Keys() {
		if strings.Contains(k, "secret-") {
			t.Errorf("an account key holds the secret: %q", k)
		}
	}
}

// TestBaseImageLookedUpOnce: launches at once from one AMI share one
// DescribeImages; a failed look-up is not remembered.
func TestBaseImageLookedUpOnce(t *testing.T) {
	f := ec2test.New(ec2test.Options{})
	defer f.Close()
	c := openPolled(t, f, false, "")
	ctx := context.Background()
	f.Inject(ec2test.Fault{Action: "DescribeImages", Delay: 100 * time.Millisecond, Times: 1})
	errs := waitAll(make([]string, 50), func(string) error {
		im, err := c.baseImage(ctx, ec2test.BaseImage)
		if err == nil && aws.ToString(im.RootDeviceName) != "/dev/sda1" {
			err = fmt.Errorf("base image %+v", im)
		}
		return err
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := f.Calls("DescribeImages"); n != 1 {
		t.Errorf("%d DescribeImages for 50 launches of one AMI; want 1", n)
	}
	// An unknown AMI fails every time it is asked for, and is asked again.
	for range 2 {
		if _, err := c.baseImage(ctx, "ami-0123456789abcdef1"); !clouds.IsNotFound(err) {
			t.Errorf("unknown AMI: %v", err)
		}
	}
	if n := f.Calls("DescribeImages"); n != 3 {
		t.Errorf("%d DescribeImages after two look-ups of an unknown AMI; want 3", n)
	}
}

// TestThrottlingRetriedByTheAccountsAdaptiveRetryer: the fake's token
// bucket answers RequestLimitExceeded; the SDK's adaptive retryer, one per
// account and used by every client of it, retries inside the call, so each
// call the driver makes succeeds. With the SDK's retries off (max_attempts
// 1), the same calls fail with EC2's code: the retries are the retryer's.
func TestThrottlingRetriedByTheAccountsAdaptiveRetryer(t *testing.T) {
	throttle := []ec2test.Throttle{{Actions: []string{"DescribeKeyPairs"}, Rate: 20, Burst: 1}}
	call := func(c *Cloud) error {
		_, err := c.api.DescribeKeyPairs(context.Background(), &ec2.DescribeKeyPairsInput{})
		return err
	}
	open := func(f *ec2test.Fake, attempts int) *Opener {
		o, err := New("throttled", Config{Region: "us-east-1", Endpoint: f.URL, SSHCIDRs: []string{"127.0.0.1/32"}, MaxAttempts: attempts}, false,
			Options{MaxBackoff: 20 * time.Millisecond, NoRetryQuota: true,
				Credentials: credentials.NewStaticCredentialsProvider("AKIDTHROTTLE", "throttle-secret", "")})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}

	f := ec2test.New(ec2test.Options{Throttle: throttle})
	defer f.Close()
	o := open(f, 0)
	a, b := openWith(t, o, ""), openWith(t, o, "")
	for _, c := range []*Cloud{a, b} {
		r := c.api.(*ec2.Client).Options().Retryer
		if _, ok := r.(*retry.AdaptiveMode); !ok || r != c.acct.retryer {
			t.Fatalf("the client's retryer is %T, not the account's adaptive one", r)
		}
	}
	start := time.Now()
	errs := waitAll(make([]string, 4), func(string) error {
		if err := call(a); err != nil {
			return err
		}
		return call(b)
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("throttled calls failed through the retryer: %v", err)
	}
	calls, throttled := f.CallsSince(start, "DescribeKeyPairs")
	if throttled == 0 || calls != 8+throttled {
		t.Errorf("%d calls, %d throttled, for 8 calls of the driver; want every throttled one retried", calls, throttled)
	}

	g := ec2test.New(ec2test.Options{Throttle: throttle})
	defer g.Close()
	once := openWith(t, open(g, 1), "")
	errs = waitAll(make([]string, 4), func(string) error { return call(once) })
	failed := 0
	for _, err := range errs {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "RequestLimitExceeded" {
			failed++
		} else if err != nil {
			t.Errorf("without retries: %v; want RequestLimitExceeded or success", err)
		}
	}
	if failed == 0 {
		t.Error("without the SDK's retries no call failed: the fake throttled nothing")
	}
}

// TestUnlistedPick: of the ids a broad look missed, those it listed before
// are looked at by id at once (they changed), those it never listed only
// once freshLooks looks in a row missed them (EC2 does not show them yet);
// ids no longer waited on are forgotten.
func TestUnlistedPick(t *testing.T) {
	var u unlisted
	look := func(ids []string, listed ...string) []string {
		in := map[string]bool{}
		for _, id := range listed {
			in[id] = true
		}
		return u.pick(ids, func(id string) (time.Time, bool) { return time.Time{}, in[id] })
	}
	steps := []struct {
		ids, listed, want []string
	}{
		{ids: []string{"a", "b", "c"}, listed: []string{"a"}, want: nil},           // b, c: new, not shown yet
		{ids: []string{"a", "b", "c"}, listed: []string{"b"}, want: []string{"a"}}, // a was listed: it changed (gone)
		{ids: []string{"b", "c"}, listed: []string{"b"}, want: []string{"c"}},      // c missed freshLooks times
		{ids: []string{"b", "c"}, listed: []string{"b"}, want: nil},                // c: counted again from 1
		{ids: []string{"c", "d"}, listed: []string{"c", "d"}, want: nil},           // b no longer waited on
		{ids: []string{"b", "c", "d"}, listed: []string{"d"}, want: []string{"c"}}, // b forgotten: new again
	}
	for i, st := range steps {
		if got := look(st.ids, st.listed...); !slices.Equal(got, st.want) {
			t.Fatalf("look %d (waiting %v, listed %v): by id %v; want %v", i+1, st.ids, st.listed, got, st.want)
		}
	}
}

// TestUnlistedHours: a broad look of images names the hour of every waiting
// image it has seen (listed, or found by id) and the hours around now, the
// newest first, at most maxHours.
func TestUnlistedHours(t *testing.T) {
	now := time.Date(2026, 12, 7, 21, 58, 0, 0, time.UTC)
	var u unlisted
	if got, want := u.hours(nil, now), []string{"2026-12-07T22*", "2026-12-07T21*"}; !slices.Equal(got, want) {
		t.Fatalf("hours at %v with nothing seen: %v; want %v (now and 5 minutes either side)", now, got, want)
	}
	u.pick([]string{"a", "b"}, func(id string) (time.Time, bool) {
		if id == "a" {
			return time.Date(2026, 12, 7, 18, 30, 0, 0, time.UTC), true
		}
		return time.Time{}, false
	})
	u.seen("b", time.Date(2026, 12, 6, 23, 59, 0, 0, time.UTC))
	want := []string{"2026-12-07T22*", "2026-12-07T21*", "2026-12-07T18*", "2026-12-06T23*"}
	if got := u.hours([]string{"a", "b"}, now); !slices.Equal(got, want) {
		t.Fatalf("hours: %v; want %v", got, want)
	}
	if got := u.hours([]string{"b"}, now); !slices.Equal(got, []string{"2026-12-07T22*", "2026-12-07T21*", "2026-12-06T23*"}) {
		t.Fatalf("hours waiting on b only: %v; want a's hour left out", got)
	}
	// b, found by id, keeps its hour through the next look.
	u.pick([]string{"a", "b"}, func(string) (time.Time, bool) { return time.Time{}, false })
	if got := u.hours([]string{"b"}, now); !slices.Contains(got, "2026-12-06T23*") {
		t.Fatalf("hours after a look that missed b: %v; want b's hour kept", got)
	}
	var many []string
	for i := range 3 * maxHours {
		id := fmt.Sprintf("i%d", i)
		many = append(many, id)
		u.seen(id, now.Add(-time.Duration(i)*time.Hour))
	}
	u.pick(many, func(string) (time.Time, bool) { return time.Time{}, false })
	if got := u.hours(many, now); len(got) != maxHours || got[0] != "2026-12-07T22*" {
		t.Fatalf("hours of %d waiting images a day apart: %d values starting %v; want %d, the newest first", len(many), len(got), got[:2], maxHours)
	}
}

// TestImagesWithoutCreationDateFilter: an EC2-compatible cloud that refuses
// the creation-date filter still has its images waited on, by listing the
// pending ones (and by id those that stopped being pending); the filter is
// asked once, not at every look.
func TestImagesWithoutCreationDateFilter(t *testing.T) {
	f := ec2test.New(ec2test.Options{ImageDelay: 200 * time.Millisecond, NoFilters: []string{"creation-date"}})
	defer f.Close()
	c := openPolled(t, f, false, "")
	ctx := context.Background()
	ids := runInstances(t, c, 210)
	images := createImages(t, c, ids)
	errs := waitAll(images, func(id string) error { return c.waitImage(ctx, &clouds.Image{ID: id}) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("waits failed: %v", err)
	}
	waitStopped(t, c)
	refused, pending := 0, 0
	for _, r := range f.Requests() {
		if r.Action != "DescribeImages" {
			continue
		}
		switch r.Form.Get("Filter.2.Name") {
		case "creation-date":
			refused++
		case "state":
			pending++
		}
	}
	if refused != 1 || pending == 0 {
		t.Fatalf("%d looks with the creation-date filter (refused), %d listing pending images; want 1 and some", refused, pending)
	}
}
