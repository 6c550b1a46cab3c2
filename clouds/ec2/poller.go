package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/imagegen/imagegen/clouds"
)

// account is what the builds of one cloud entry (one region) and one set of
// credentials share: the SDK's adaptive retryers (one for the pollers'
// describe calls, one for the rest), whose client-side rate limit learns
// from RequestLimitExceeded only if every client of the account uses the
// same one, and the batched pollers of instances and images. EC2 throttles per account and region: 1 000 builds each
// describing its own instance every second would spend the account's
// request budget (docs/ec2.md, "API calls").
type account struct {
	retryer aws.Retryer // every call's but the pollers'
	// describe is the pollers' retryer. EC2 throttles describe calls and
	// mutating ones from separate buckets, while an adaptive retryer slows
	// every call it sees down once one is throttled: with one retryer,
	// 1 000 launches throttled on RunInstances held the pollers' looks back
	// behind them, and builds noticed their instances seconds late.
	describe  aws.Retryer
	instances *clouds.Poller[API, types.Instance]
	images    *clouds.Poller[API, types.Image]
	bases     clouds.SharedLookups[types.Image] // base images, by id
}

// pollBurst is how many calls more than one a poller's look may make
// without holding the next one back (clouds.PollerConfig.Burst): 1 000
// images turning available at once are six calls (the pending ones, then
// 200 ids a call), and the next look still comes a second later.
const pollBurst = 5

// maxFilterValues is the most filter values EC2 takes in one call; past it
// EC2 answers FilterLimitExceeded.
const maxFilterValues = 200

// pageSize is the most results one describe page asks for (EC2's maximum).
const pageSize = 1000

// liveStates are the instance states a build's instance is in until it is
// terminated.
var liveStates = []string{"pending", "running", "stopping", "stopped", "shutting-down"}

// accounts are an Opener's accounts, by credentials (accountKey).
type accounts = clouds.Accounts[*account]

// accountKey names the credentials of a build: the default chain's (one
// account for every build), or the access key id and a digest of the secret
// key a password: ask build brought.
func accountKey(akid, secret string) string {
	if secret == "" {
		return "chain"
	}
	h := sha256.Sum256([]byte("imagegen ec2 account\x00" + akid + "\x00" + secret))
	return "key:" + akid + ":" + hex.EncodeToString(h[:16])
}

// newAccount makes the retryer and the pollers of one account.
func (o *Opener) newAccount() *account {
	every, first := o.opts.Poll.Max, o.opts.Poll.Initial
	timeout := 4 * o.cfg.RequestTimeout
	a := &account{retryer: o.newRetryer(), describe: o.newRetryer()}
	opt := func(eo *ec2.Options) { eo.Retryer = a.describe }
	var unlistedInstances, unlistedImages unlisted
	a.instances = clouds.NewPoller(clouds.PollerConfig[API, types.Instance]{
		Fetch: func(ctx context.Context, api API, ids []string) (map[string]types.Instance, int, error) {
			return describeInstances(ctx, api, ids, &unlistedInstances, opt)
		}, Every: every, First: first, Timeout: timeout, Burst: pollBurst})
	a.images = clouds.NewPoller(clouds.PollerConfig[API, types.Image]{
		Fetch: func(ctx context.Context, api API, ids []string) (map[string]types.Image, int, error) {
			return describeImages(ctx, api, ids, &unlistedImages, opt)
		}, Every: every, First: first, Timeout: timeout, Burst: pollBurst})
	return a
}

// newRetryer is the SDK's adaptive retryer: standard retries (more attempts
// for throttling storms, no retry of the errors no retry fixes: EC2 answers
// InsufficientInstanceCapacity with a 500, which the SDK would retry), and a
// client-side rate limit that slows every call of the account down when EC2
// answers RequestLimitExceeded, and speeds up again as calls succeed.
func (o *Opener) newRetryer() aws.Retryer {
	standard := func(so *retry.StandardOptions) {
		so.MaxAttempts = o.cfg.MaxAttempts
		so.MaxBackoff = o.opts.MaxBackoff
		if o.opts.NoRetryQuota {
			so.RateLimiter = ratelimit.None
		}
		so.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
			var ae smithy.APIError
			if errors.As(err, &ae) {
				if _, ok := permanent[ae.ErrorCode()]; ok {
					return aws.FalseTernary
				}
			}
			return aws.UnknownTernary
		})}, so.Retryables...)
	}
	return retry.NewAdaptiveMode(func(ao *retry.AdaptiveModeOptions) {
		ao.StandardOptions = append(ao.StandardOptions, standard)
	})
}

// describeInstances looks at instances ids: with an instance-id filter (an
// id EC2 does not know yet is absent, where InstanceIds would fail the
// whole call with InvalidInstanceID.NotFound), in calls of 200 ids; more
// than 200 waiting, every live imagegen instance of the region in pages of
// 1 000, then by id those it listed before and misses now (terminated), and
// those it has never listed every freshLooks looks (unlisted.pick).
func describeInstances(ctx context.Context, api API, ids []string, u *unlisted, opts ...func(*ec2.Options)) (map[string]types.Instance, int, error) {
	found := make(map[string]types.Instance, len(ids))
	calls := 0
	describe := func(in *ec2.DescribeInstancesInput) error {
		for pages := ec2.NewDescribeInstancesPaginator(api, in); pages.HasMorePages(); {
			calls++
			out, err := pages.NextPage(ctx, opts...)
			if err != nil {
				return classify("describe instances", err)
			}
			for _, r := range out.Reservations {
				for _, i := range r.Instances {
					found[aws.ToString(i.InstanceId)] = i
				}
			}
		}
		return nil
	}
	rest := ids
	if len(ids) > maxFilterValues {
		err := describe(&ec2.DescribeInstancesInput{MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			buildFilter(""), {Name: aws.String("instance-state-name"), Values: liveStates}}})
		if err != nil {
			return nil, calls, err
		}
		rest = u.pick(ids, func(id string) (time.Time, bool) { _, ok := found[id]; return time.Time{}, ok })
	}
	for _, chunk := range clouds.Chunks(rest, maxFilterValues) {
		err := describe(&ec2.DescribeInstancesInput{MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			{Name: aws.String("instance-id"), Values: chunk}}})
		if err != nil {
			return nil, calls, err
		}
	}
	return found, calls, nil
}

// describeImages looks at images ids as describeInstances does instances:
// by image-id filter, 200 a call; more than 200 waiting, first every
// imagegen image of the account created in the hours the waiting ones were
// (the creation-date filter, an hour a value: the images a build waits on
// are listed whatever their state, so one that turned available or failed
// needs no second call), then by id those unlisted.pick chooses: listed
// before and missed now (deregistered), or never listed in freshLooks looks
// (EC2 does not show them yet, or they were made long ago).
func describeImages(ctx context.Context, api API, ids []string, u *unlisted, opts ...func(*ec2.Options)) (map[string]types.Image, int, error) {
	found := make(map[string]types.Image, len(ids))
	calls := 0
	describe := func(in *ec2.DescribeImagesInput) error {
		for pages := ec2.NewDescribeImagesPaginator(api, in); pages.HasMorePages(); {
			calls++
			out, err := pages.NextPage(ctx, opts...)
			if err != nil {
				return classify("describe images", err)
			}
			for _, im := range out.Images {
				found[aws.ToString(im.ImageId)] = im
			}
		}
		return nil
	}
	rest := ids
	if len(ids) > maxFilterValues {
		broad := func(f types.Filter) error {
			return describe(&ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(pageSize), Filters: []types.Filter{buildFilter(""), f}})
		}
		pending := types.Filter{Name: aws.String("state"), Values: []string{string(types.ImageStatePending)}}
		var err error
		if u.byState() {
			err = broad(pending)
		} else if err = broad(types.Filter{Name: aws.String("creation-date"), Values: u.hours(ids, time.Now())}); codeOf(err) == "InvalidParameterValue" {
			// An EC2-compatible cloud that does not know the filter: list
			// the pending images instead (those that turned available or
			// failed are then looked at by id).
			u.noCreationDate()
			err = broad(pending)
		}
		if err != nil {
			return nil, calls, err
		}
		rest = u.pick(ids, func(id string) (time.Time, bool) {
			im, ok := found[id]
			if !ok {
				return time.Time{}, false
			}
			created, _ := time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
			return created, true
		})
	}
	for _, chunk := range clouds.Chunks(rest, maxFilterValues) {
		err := describe(&ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			{Name: aws.String("image-id"), Values: chunk}}})
		if err != nil {
			return nil, calls, err
		}
		for _, id := range chunk {
			if im, ok := found[id]; ok {
				created, _ := time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
				u.seen(id, created)
			}
		}
	}
	return found, calls, nil
}

// unlisted decides which of the waiting ids a broad look (every live
// imagegen instance; every imagegen image created in the waiting ones'
// hours) did not list are worth a look by id. An id a broad look listed
// before and misses now has changed (the instance terminated, the image was
// deregistered): it is looked at at once. An id no broad look has listed
// yet is most likely one EC2 does not show yet (eventual consistency, right
// after it was made), which a look by id would miss too: while builds start
// one after another, looking up the newest of them by id made every look
// two calls. It is looked at by id once freshLooks broad looks in a row
// missed it (a resource that changed before it was ever listed, or one an
// earlier worker made long ago).
type unlisted struct {
	mu      sync.Mutex
	pending bool                 // the cloud refused the creation-date filter: list pending images
	listed  map[string]time.Time // listed: when it was created (images; zero for instances)
	missed  map[string]int       // never listed: broad looks in a row that missed it
	created map[string]time.Time // found by id, not listed yet: when it was created
}

// freshLooks is how many broad looks in a row may miss an id no broad look
// has listed before it is looked at by id.
const freshLooks = 3

// maxHours is the most creation hours a broad look of images names; past
// it (images waited on for days), the look names every hour it can, the
// newest first, and the rest are looked at by id.
const maxHours = 48

// pick records what a broad look listed (listed reports whether it listed
// an id, and when that was created) and returns the waiting ids to look at
// by id. Ids no longer waiting are forgotten.
func (u *unlisted) pick(ids []string, listed func(id string) (time.Time, bool)) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	was, missed, created := u.listed, u.missed, u.created
	u.listed, u.missed, u.created = make(map[string]time.Time, len(ids)), map[string]int{}, map[string]time.Time{}
	var out []string
	for _, id := range ids {
		if at, ok := listed(id); ok {
			u.listed[id] = at
			continue
		}
		if at, ok := created[id]; ok {
			u.created[id] = at // found by id: its hour is in the next look
		}
		if _, ok := was[id]; ok {
			out = append(out, id)
			continue
		}
		if n := missed[id] + 1; n >= freshLooks {
			out = append(out, id)
		} else {
			u.missed[id] = n
		}
	}
	return out
}

// noCreationDate records that the cloud refused the creation-date filter.
func (u *unlisted) noCreationDate() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.pending = true
}

// byState reports whether a broad look of images lists the pending ones
// (the cloud refused the creation-date filter).
func (u *unlisted) byState() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pending
}

// seen records when an image found by id was created, so the next broad
// look names its hour.
func (u *unlisted) seen(id string, created time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.created == nil {
		u.created = map[string]time.Time{}
	}
	u.created[id] = created
}

// hours are the creation-date filter's values for a broad look of images
// at time now: the hour of every waiting image a look has seen, and the
// hours of the last and the next few minutes (an image made just now, by
// EC2's clock) for those never seen.
func (u *unlisted) hours(ids []string, now time.Time) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	set := map[string]time.Time{}
	add := func(t time.Time) {
		h := t.UTC().Truncate(time.Hour)
		set[h.Format("2006-01-02T15")+"*"] = h
	}
	for _, d := range []time.Duration{-clockSkew, 0, clockSkew} {
		add(now.Add(d))
	}
	for _, id := range ids {
		if at, ok := u.listed[id]; ok && !at.IsZero() {
			add(at)
		} else if at, ok := u.created[id]; ok && !at.IsZero() {
			add(at)
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b string) int { return set[b].Compare(set[a]) }) // newest first
	return out[:min(len(out), maxHours)]
}

// clockSkew is how far EC2's clock and this machine's may be apart, for
// the creation hour of an image made just now.
const clockSkew = 5 * time.Minute

// notFoundLooks is how many looks in a row may miss a new instance (EC2 is
// eventually consistent: right after RunInstances, describing it may not
// find it) before the wait fails.
const notFoundLooks = 10

// waitInstance waits until the instance is in state want, looking with the
// account's poller. An instance that ends terminated on the way fails at
// once with EC2's reason.
func (c *Cloud) waitInstance(ctx context.Context, id string, want types.InstanceStateName, timeout time.Duration, seen func(types.Instance)) error {
	what := fmt.Sprintf("wait for instance %s to be %s", id, want)
	missed := 0
	return clouds.Within(ctx, what, timeout, func(ctx context.Context) error {
		return c.acct.instances.Wait(ctx, c.api, what, id, func(s clouds.Seen[types.Instance]) (bool, error) {
			if !s.Found {
				if want == types.InstanceStateNameTerminated {
					return true, nil
				}
				if missed++; missed < notFoundLooks {
					return false, nil
				}
				return false, &clouds.Error{Kind: clouds.KindNotFound, Op: what, Code: "InvalidInstanceID.NotFound",
					Err: fmt.Errorf("EC2 has not listed instance %s in %d looks", id, missed)}
			}
			missed = 0
			return instanceDone(what, s.Value, want, seen)
		})
	})
}

// instanceDone says whether instance i is in state want, or fails when it
// ended terminated on the way.
func instanceDone(what string, i types.Instance, want types.InstanceStateName, seen func(types.Instance)) (bool, error) {
	if i.State == nil {
		return want == types.InstanceStateNameTerminated, nil
	}
	if seen != nil {
		seen(i)
	}
	st := i.State.Name
	switch {
	case st == want:
		return true, nil
	case want != types.InstanceStateNameTerminated && (st == types.InstanceStateNameTerminated || st == types.InstanceStateNameShuttingDown):
		reason := aws.ToString(i.StateTransitionReason)
		kind := clouds.KindFailed
		code := ""
		if i.StateReason != nil {
			reason = aws.ToString(i.StateReason.Message)
			code = aws.ToString(i.StateReason.Code)
			if strings.Contains(code, "InsufficientInstanceCapacity") || strings.Contains(reason, "InsufficientInstanceCapacity") {
				kind = clouds.KindCapacity
			}
		}
		return false, &clouds.Error{Kind: kind, Op: what, Code: code, Err: fmt.Errorf("instance is %s: %s", st, reason)}
	}
	return false, nil
}

// waitImage waits until the image is available, looking with the account's
// poller and recording its EBS snapshots in img as they appear; a failed
// image fails at once with EC2's reason. An image not listed yet is waited
// for (eventual consistency) until the timeout.
func (c *Cloud) waitImage(ctx context.Context, img *clouds.Image) error {
	what := "wait for image " + img.ID + " to be available"
	return clouds.Within(ctx, what, c.cfg.ImageTimeout, func(ctx context.Context) error {
		return c.acct.images.Wait(ctx, c.api, what, img.ID, func(s clouds.Seen[types.Image]) (bool, error) {
			if !s.Found {
				return false, nil
			}
			im := s.Value
			recordSnapshots(img, im)
			switch im.State {
			case types.ImageStateAvailable:
				return true, nil
			case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
				msg := "no reason given"
				code := ""
				if im.StateReason != nil {
					msg, code = aws.ToString(im.StateReason.Message), aws.ToString(im.StateReason.Code)
				}
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Code: code,
					Err: fmt.Errorf("image %s is %s: %s", img.ID, im.State, msg)}
			}
			return false, nil
		})
	})
}

// baseImage is lookupBaseImage, shared by the account's launches: builds
// launching at once from one AMI ask EC2 once, not once each, and for a
// minute after it was found.
func (c *Cloud) baseImage(ctx context.Context, id string) (types.Image, error) {
	return c.acct.bases.Get(ctx, id, func(ctx context.Context) (types.Image, error) { return c.lookupBaseImage(ctx, id) })
}

// PollerStats are what the account's pollers of instances and of images
// have done (for tests and benchmarks).
func (c *Cloud) PollerStats() (instances, images clouds.PollerStats) {
	return c.acct.instances.Stats(), c.acct.images.Stats()
}

// Polling reports whether a poller of the cloud's account runs: a build
// waits on one of its instances or images.
func (c *Cloud) Polling() bool {
	return c.acct.instances.Running() || c.acct.images.Running()
}
