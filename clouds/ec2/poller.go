package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
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
	a.instances = clouds.NewPoller(clouds.PollerConfig[API, types.Instance]{
		Fetch: func(ctx context.Context, api API, ids []string) (map[string]types.Instance, int, error) {
			return describeInstances(ctx, api, ids, opt)
		}, Every: every, First: first, Timeout: timeout, Burst: pollBurst})
	a.images = clouds.NewPoller(clouds.PollerConfig[API, types.Image]{
		Fetch: func(ctx context.Context, api API, ids []string) (map[string]types.Image, int, error) {
			return describeImages(ctx, api, ids, opt)
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
// 1 000, then by id those it did not list (not visible yet, or terminated).
func describeInstances(ctx context.Context, api API, ids []string, opts ...func(*ec2.Options)) (map[string]types.Instance, int, error) {
	found := make(map[string]types.Instance, len(ids))
	calls := 0
	describe := func(in *ec2.DescribeInstancesInput) error {
		for {
			calls++
			out, err := api.DescribeInstances(ctx, in, opts...)
			if err != nil {
				return classify("describe instances", err)
			}
			for _, r := range out.Reservations {
				for _, i := range r.Instances {
					found[aws.ToString(i.InstanceId)] = i
				}
			}
			if aws.ToString(out.NextToken) == "" {
				return nil
			}
			in.NextToken = out.NextToken
		}
	}
	rest := ids
	if len(ids) > maxFilterValues {
		err := describe(&ec2.DescribeInstancesInput{MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			buildFilter(""), {Name: aws.String("instance-state-name"), Values: liveStates}}})
		if err != nil {
			return nil, calls, err
		}
		rest = absent(ids, found)
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
// pending imagegen image of the account (what a waiting build waits on is
// pending until it is not), then by id those it did not list.
func describeImages(ctx context.Context, api API, ids []string, opts ...func(*ec2.Options)) (map[string]types.Image, int, error) {
	found := make(map[string]types.Image, len(ids))
	calls := 0
	describe := func(in *ec2.DescribeImagesInput) error {
		for {
			calls++
			out, err := api.DescribeImages(ctx, in, opts...)
			if err != nil {
				return classify("describe images", err)
			}
			for _, im := range out.Images {
				found[aws.ToString(im.ImageId)] = im
			}
			if aws.ToString(out.NextToken) == "" {
				return nil
			}
			in.NextToken = out.NextToken
		}
	}
	rest := ids
	if len(ids) > maxFilterValues {
		err := describe(&ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			buildFilter(""), {Name: aws.String("state"), Values: []string{string(types.ImageStatePending)}}}})
		if err != nil {
			return nil, calls, err
		}
		rest = absent(ids, found)
	}
	for _, chunk := range clouds.Chunks(rest, maxFilterValues) {
		err := describe(&ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(pageSize), Filters: []types.Filter{
			{Name: aws.String("image-id"), Values: chunk}}})
		if err != nil {
			return nil, calls, err
		}
	}
	return found, calls, nil
}

// absent are the ids not in found.
func absent[T any](ids []string, found map[string]T) []string {
	var out []string
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

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
