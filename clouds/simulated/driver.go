// Package simulated is cloud type "simulated": it launches nothing but keeps key pairs, servers and images, with delays and faults.
// A production driver (load tests, trying the service) with fault injection for chaos and bench; it knows clouds only, no real cloud.
package simulated

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Cloud is an in-memory clouds.Cloud. It is safe for concurrent use by many builds.
type Cloud struct {
	opts   Options
	now    func() time.Time
	prefix string // makes image ids differ between processes

	mu        sync.Mutex
	rng       *mrand.Rand
	seq       int
	resources map[string]*resource // by id
	// byBuild indexes the resources tagged with a build by that build, so
	// Leftovers of one build does not look at every resource (10 000
	// builds starting at once made that quadratic).
	byBuild map[string][]*resource
	images  map[string]*image // by id; with a state file, read on first use (imgs)
	// With a state file: whether images holds the file's images, whether
	// they changed since, and why they could not be read.
	imagesLoaded, imagesDirty bool
	imagesErr                 error
	added                     []BaseImage // base images AddBaseImage added
	faults                    map[Op][]*faultState
	calls                     []string
	onLaunch                  func(build string, at time.Time)
}

var _ clouds.Cloud = (*Cloud)(nil)

// New returns an empty fake cloud.
func New(opts Options) *Cloud {
	seed := opts.Seed
	var prefix string
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		for _, x := range b {
			seed = seed<<8 | int64(x)
		}
		prefix = hex.EncodeToString(b[:3])
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rng := mrand.New(mrand.NewPCG(uint64(seed), uint64(seed)>>1|1))
	if prefix == "" {
		prefix = fmt.Sprintf("%06x", rng.Uint32()&0xffffff)
	}
	return &Cloud{
		opts:      opts,
		now:       now,
		prefix:    prefix,
		rng:       rng,
		resources: map[string]*resource{},
		byBuild:   map[string][]*resource{},
		images:    map[string]*image{},
		faults:    map[Op][]*faultState{},
	}
}

// opener hands every build the same Cloud, so servers and images persist
// across the builds a worker runs, as on a real cloud.
type opener struct {
	cloud *Cloud
	ask   bool
}

// Open implements clouds.Opener. A password: ask simulated cloud wants some
// password, so the re-run flow can be tried; any non-empty one is accepted.
func (o *opener) Open(ctx context.Context, cred clouds.Credentials) (clouds.Cloud, error) {
	if o.ask && cred.Password.IsZero() {
		return nil, &clouds.Error{Kind: clouds.KindAuth, Op: "open", Err: errors.New("this cloud asks for a password and none was given")}
	}
	return o.cloud, nil
}

// CloudOf returns the shared Cloud of a simulated cloud's Opener (for tests
// and load runs that inspect it); nil when op is not one.
func CloudOf(op clouds.Opener) *Cloud {
	if o, ok := op.(*opener); ok {
		return o.cloud
	}
	return nil
}

// Features implements clouds.Cloud.
func (c *Cloud) Features() clouds.Features {
	return clouds.Features{Images: !c.opts.NoImages, PoweroffOverSSH: c.opts.PoweroffOverSSH}
}

// Live returns the resources that exist now (key pairs, servers), images
// excluded, in creation order.
func (c *Cloud) Live() []clouds.Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer func() { _ = save() }() // best effort: a read-only listing
	}
	rs := make([]*resource, 0, len(c.resources))
	for _, r := range c.resources {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *resource) int { return a.seq - b.seq })
	out := make([]clouds.Resource, len(rs))
	for i, r := range rs {
		out[i] = r.Resource
	}
	return out
}

// Count returns how many resources of kind (clouds.KindServer, …) exist
// now: Live's length for one kind, without copying the resources, for load
// runs that watch thousands of builds.
func (c *Cloud) Count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer func() { _ = save() }() // best effort: a read-only count
	}
	n := 0
	for _, r := range c.resources {
		if r.Kind == kind {
			n++
		}
	}
	return n
}

// Calls returns the ordered log of what happened: "create key-pair kp-1",
// "create server srv-2", "stop server srv-2", "create image sim-…",
// "delete server srv-2". Failed calls and status checks are not in it.
func (c *Cloud) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// OnLaunch calls fn with the build and the time of every Launch request, as
// it arrives (before any API call of it), for benchmarks that time the way
// to a cloud's first call; nil stops it. fn must be quick and safe for
// concurrent use.
func (c *Cloud) OnLaunch(fn func(build string, at time.Time)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onLaunch = fn
}

// retry is the fake's own retry policy for transient API errors: quick, so
// tests and load runs stay fast, and with enough tries that a FailRate of a
// few percent almost never reaches the caller.
var retry = clouds.Backoff{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 2, Attempts: 6}

// api is one API call: injected faults and random failures first, then do
// (under c.mu). Transient failures are retried, as real drivers retry them.
func (c *Cloud) api(ctx context.Context, op Op, do func() error) error {
	return clouds.Retry(ctx, retry, func(ctx context.Context) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.fault(ctx, op); err != nil {
			return err
		}
		return c.withState(func() error {
			if err := c.randomFailureLocked(op); err != nil {
				return err
			}
			return do()
		})
	})
}

// createLocked makes a resource; c.mu is held.
func (c *Cloud) createLocked(kind, idPrefix, name, build string, tags map[string]string, state string, readyAt time.Time) *resource {
	c.seq++
	r := &resource{
		Resource: clouds.Resource{Kind: kind, ID: fmt.Sprintf("%s-%d", idPrefix, c.seq), Name: name, Build: build},
		tags:     tags,
		state:    state,
		created:  c.now(),
		readyAt:  readyAt,
		seq:      c.seq,
	}
	c.addLocked(r)
	c.calls = append(c.calls, "create "+kind+" "+r.ID)
	return r
}

// addLocked adds r to the resources and their index; c.mu is held.
func (c *Cloud) addLocked(r *resource) {
	c.resources[r.ID] = r
	if b := r.tags[clouds.TagBuild]; b != "" {
		c.byBuild[b] = append(c.byBuild[b], r)
	}
}

// deleteLocked removes r from the resources and their index; c.mu is held.
func (c *Cloud) deleteLocked(r *resource) {
	delete(c.resources, r.ID)
	b := r.tags[clouds.TagBuild]
	if b == "" {
		return
	}
	rs := slices.DeleteFunc(c.byBuild[b], func(x *resource) bool { return x == r })
	if len(rs) == 0 {
		delete(c.byBuild, b)
	} else {
		c.byBuild[b] = rs
	}
}

// Server and image states.
const (
	stateBuilding = "building"
	stateActive   = "active"
	stateStopped  = "stopped"
	statePending  = "pending"
	stateError    = "error"
)

type resource struct {
	clouds.Resource
	tags    map[string]string
	state   string
	created time.Time
	readyAt time.Time // when a building server turns active (real clock)
	seq     int
}

type image struct {
	clouds.Image
	build   string
	server  string // the server it was made from; deleting that server early spoils it
	state   string
	created time.Time
	readyAt time.Time
	seq     int
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
