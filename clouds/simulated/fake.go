// Package simulated is an in-memory cloud: it launches nothing, but keeps key pairs,
// servers and images the way a cloud would, with delays and injectable faults.
package simulated

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Options shape a fake cloud. The zero value is a cloud that does everything at once.
type Options struct {
	// LaunchDelay is how long a server takes to become active, SSHDelay how much
	// longer until it would answer SSH; StopDelay and SnapshotDelay likewise.
	LaunchDelay, SSHDelay, StopDelay, SnapshotDelay time.Duration

	// FailRate is the fraction of API calls that fail with a transient error;
	// the fake retries them with a short backoff, as real drivers retry theirs,
	// so only a run of failures reaches the caller.
	FailRate float64
	// PermanentFailRate is the fraction of API calls that fail permanently
	// (clouds.KindFailed); these reach the caller at once.
	PermanentFailRate float64

	// SSH, when set, is where launched instances are reachable (a real local
	// sshd). Nil: inst.SSH stays nil and the pipeline runs no script.
	SSH *clouds.Endpoint

	// NoImages makes Features().Images false, like type ssh.
	NoImages bool
	// PoweroffOverSSH sets Features().PoweroffOverSSH, like type qemu.
	PoweroffOverSSH bool

	// BaseImages, when set, are the only base images Launch accepts (besides
	// images this cloud made); any other fails with clouds.KindNotFound.
	// Empty: every image name is accepted.
	BaseImages []string

	// StateFile, when set, keeps the cloud's resources and images in that file
	// (locked per call) instead of in memory, so they outlive the process and
	// every process using the file sees one cloud (see state.go).
	StateFile string

	// Seed seeds the randomness of FailRate and image ids (0: time-based).
	Seed int64
	// Now is the clock for creation times (nil: time.Now). Delays are always
	// real time, so a frozen test clock cannot make a wait endless.
	Now func() time.Time
}

// Op names a step of the fake's work, for Inject.
type Op string

// The operations faults can be injected at. Each is one API call the fake
// makes (OpWaitRunning and OpWaitImage are the status checks of the waits).
const (
	OpImportKey   Op = "create key-pair"
	OpLaunch      Op = "create server"
	OpWaitRunning Op = "wait server"
	OpStop        Op = "stop server"
	OpSnapshot    Op = "create image"
	OpWaitImage   Op = "wait image"
	OpTerminate   Op = "delete server"
	OpDeleteKey   Op = "delete key-pair"
	OpDeleteImage Op = "delete image"
	OpLeftovers   Op = "list leftovers"
	OpRemove      Op = "remove resource"
)

// Ops lists every Op, in pipeline order.
var Ops = []Op{OpImportKey, OpLaunch, OpWaitRunning, OpStop, OpSnapshot, OpWaitImage,
	OpTerminate, OpDeleteKey, OpDeleteImage, OpLeftovers, OpRemove}

// Fault is what happens at an Op instead of (or before) the normal behaviour.
type Fault struct {
	// Err is returned instead of doing the op. A *clouds.Error is returned as
	// is (a transient one is retried like any transient API error); any other
	// error is wrapped as a clouds.KindFailed *clouds.Error.
	Err error
	// Times is how many calls the fault hits; 0 means every call.
	Times int
	// Delay is waited (honouring ctx) before the op, or before Err.
	Delay time.Duration
	// Block makes the op wait until ctx is done and return ctx's error.
	Block bool
}

// retry is the fake's own retry policy for transient API errors: quick, so
// tests and load runs stay fast, and with enough tries that a FailRate of a
// few percent almost never reaches the caller.
var retry = clouds.Backoff{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 2, Attempts: 6}

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

type faultState struct {
	Fault
	left int // calls left; <0: unlimited
}

// Cloud is an in-memory clouds.Cloud. It is safe for concurrent use by many builds.
type Cloud struct {
	opts   Options
	now    func() time.Time
	prefix string // makes image ids differ between processes

	mu        sync.Mutex
	rng       *mrand.Rand
	seq       int
	resources map[string]*resource // by id
	images    map[string]*image    // by id
	faults    map[Op][]*faultState
	calls     []string
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
		images:    map[string]*image{},
		faults:    map[Op][]*faultState{},
	}
}

// Inject adds a fault at op. Faults at one op are used in the order injected.
func (c *Cloud) Inject(op Op, f Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	left := f.Times
	if left <= 0 {
		left = -1
	}
	c.faults[op] = append(c.faults[op], &faultState{Fault: f, left: left})
}

// Live returns the resources that exist now (key pairs, servers), images
// excluded, in creation order.
func (c *Cloud) Live() []clouds.Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer save()
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

// BuildImages lists the images tagged with the build ("" for every build):
// clouds.ImageLister.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []clouds.Image
	for _, im := range c.Images() {
		if b := im.Tags[clouds.TagBuild]; b != "" && (build == "" || b == build) {
			out = append(out, im)
		}
	}
	return out, nil
}

// Images returns the images that exist, usable or half-made, with their tags,
// in creation order.
func (c *Cloud) Images() []clouds.Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer save()
	}
	is := make([]*image, 0, len(c.images))
	for _, im := range c.images {
		is = append(is, im)
	}
	slices.SortFunc(is, func(a, b *image) int { return a.seq - b.seq })
	out := make([]clouds.Image, len(is))
	for i, im := range is {
		out[i] = im.Image
		out[i].Tags = maps.Clone(im.Tags)
	}
	return out
}

// ImageState returns an image's state: "pending", "active" or "error"; ok is
// false when no such image exists.
func (c *Cloud) ImageState(id string) (state string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if save, err := c.syncState(); err == nil {
		defer save()
	}
	im, ok := c.images[id]
	if !ok {
		return "", false
	}
	return c.imageStateLocked(im), true
}

// Calls returns the ordered log of what happened: "create key-pair kp-1",
// "create server srv-2", "stop server srv-2", "create image sim-…",
// "delete server srv-2". Failed calls and status checks are not in it.
func (c *Cloud) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// Features implements clouds.Cloud.
func (c *Cloud) Features() clouds.Features {
	return clouds.Features{Images: !c.opts.NoImages, PoweroffOverSSH: c.opts.PoweroffOverSSH}
}

// Launch implements clouds.Cloud: a key pair, then a server, each recorded in
// inst before the fake "boots" it for LaunchDelay+SSHDelay.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	log := logger(req.Log)
	if inst.Build == "" {
		inst.Build = req.Build
	}
	switch {
	case req.Build == "":
		return clouds.Errorf(clouds.KindInvalid, "launch server", "no build id")
	case req.Image == "":
		return clouds.Errorf(clouds.KindInvalid, "launch server", "no base image")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !c.knowsImage(req.Image) {
		return &clouds.Error{Kind: clouds.KindNotFound, Op: "launch server", Code: "ImageNotFound",
			Err: fmt.Errorf("base image %q does not exist", req.Image), Hint: "check the image id in the generator spec"}
	}
	name := req.Name
	if name == "" {
		name = "imagegen-" + req.Build
	}
	tags := map[string]string{clouds.TagBuild: req.Build}

	var kp *resource
	err := c.api(ctx, OpImportKey, func() error {
		kp = c.createLocked(clouds.KindKeyPair, "kp", name, req.Build, tags, stateActive, time.Time{})
		return nil
	})
	if err != nil {
		return err
	}
	inst.Add(kp.Resource)
	log.Info("simulated cloud: key pair created", "key_pair", kp.ID)

	stags := maps.Clone(req.Tags)
	if stags == nil {
		stags = map[string]string{}
	}
	stags[clouds.TagBuild] = req.Build
	var srv *resource
	err = c.api(ctx, OpLaunch, func() error {
		srv = c.createLocked(clouds.KindServer, "srv", name, req.Build, stags, stateBuilding, time.Now().Add(c.opts.LaunchDelay))
		return nil
	})
	if err != nil {
		return err
	}
	inst.ID = srv.ID
	inst.Add(srv.Resource)
	log.Info("simulated cloud: server created; booting", "server", srv.ID, "image", req.Image, "size", req.Size)

	if err := c.waitRunning(ctx, srv.ID); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, c.opts.SSHDelay); err != nil {
		return err
	}
	if c.opts.SSH == nil {
		log.Info("simulated cloud: the instance has no SSH endpoint, so the script will not run (configure ssh: to run it on a local sshd)")
		return nil
	}
	ep := *c.opts.SSH
	ep.HostKeys = slices.Clone(ep.HostKeys)
	inst.SSH = &ep
	log.Info("simulated cloud: server running", "server", srv.ID, "ssh", ep.Addr)
	return nil
}

func (c *Cloud) knowsImage(id string) bool {
	if len(c.opts.BaseImages) == 0 || slices.Contains(c.opts.BaseImages, id) {
		return true
	}
	ok := false
	_ = c.withState(func() error { _, ok = c.images[id]; return nil })
	return ok
}

// waitRunning waits until the server has booted, checking its status once
// before the wait (where a fault may hit) and once after.
func (c *Cloud) waitRunning(ctx context.Context, id string) error {
	var readyAt time.Time
	check := func() error {
		r, ok := c.resources[id]
		if !ok {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "wait server", Err: fmt.Errorf("server %s disappeared while booting", id)}
		}
		readyAt = r.readyAt
		return nil
	}
	if err := c.api(ctx, OpWaitRunning, check); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, time.Until(readyAt)); err != nil {
		return err
	}
	return c.api(ctx, OpWaitRunning, func() error {
		if err := check(); err != nil {
			return err
		}
		if r := c.resources[id]; r.state == stateBuilding {
			r.state = stateActive
		}
		return nil
	})
}

// Stop implements clouds.Cloud.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	if inst.ID == "" {
		return clouds.Errorf(clouds.KindInvalid, "stop server", "the instance has no server")
	}
	err := c.api(ctx, OpStop, func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "stop server", Err: fmt.Errorf("server %s: %w", inst.ID, clouds.ErrNotFound)}
		}
		if r.state != stateStopped {
			c.calls = append(c.calls, "stop server "+r.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, c.opts.StopDelay); err != nil {
		return err
	}
	return c.withState(func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "stop server", Err: fmt.Errorf("server %s disappeared while stopping", inst.ID)}
		}
		r.state = stateStopped
		return nil
	})
}

// Snapshot implements clouds.Cloud: the image id is in img.ID at once; the
// image turns usable after SnapshotDelay.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	log := logger(req.Log)
	if c.opts.NoImages {
		return clouds.Errorf(clouds.KindInvalid, "create image", "this cloud makes no images")
	}
	if inst.ID == "" {
		return clouds.Errorf(clouds.KindInvalid, "create image", "the instance has no server")
	}
	if req.Name == "" {
		return clouds.Errorf(clouds.KindInvalid, "create image", "no image name")
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	if tags[clouds.TagBuild] == "" {
		tags[clouds.TagBuild] = inst.Build
	}
	var im *image
	err := c.api(ctx, OpSnapshot, func() error {
		r, ok := c.resources[inst.ID]
		if !ok {
			return &clouds.Error{Kind: clouds.KindNotFound, Op: "create image", Err: fmt.Errorf("server %s: %w", inst.ID, clouds.ErrNotFound)}
		}
		if r.state != stateStopped {
			// Real clouds would snapshot a running disk; refusing catches a
			// pipeline that forgot Stop.
			return &clouds.Error{Kind: clouds.KindInvalid, Op: "create image", Code: "InvalidState",
				Err: fmt.Errorf("server %s is %s, not stopped", inst.ID, r.state)}
		}
		c.seq++
		im = &image{
			Image:   clouds.Image{ID: fmt.Sprintf("sim-%s-%d", c.prefix, c.seq), Name: req.Name, Tags: tags},
			build:   tags[clouds.TagBuild],
			server:  inst.ID,
			state:   statePending,
			created: c.now(),
			readyAt: time.Now().Add(c.opts.SnapshotDelay),
			seq:     c.seq,
		}
		c.images[im.ID] = im
		c.calls = append(c.calls, "create image "+im.ID)
		return nil
	})
	if err != nil {
		return err
	}
	img.ID, img.Name, img.Tags = im.ID, im.Name, maps.Clone(tags)
	log.Info("simulated cloud: image created; saving", "image", im.ID, "name", im.Name)
	return c.waitImage(ctx, im.ID, im.readyAt)
}

func (c *Cloud) waitImage(ctx context.Context, id string, readyAt time.Time) error {
	check := func() (bool, error) {
		im, ok := c.images[id]
		if !ok {
			return false, &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Err: fmt.Errorf("image %s was deleted while saving", id)}
		}
		switch c.imageStateLocked(im) {
		case stateError:
			return false, &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Code: "error",
				Err: fmt.Errorf("image %s failed: its server %s was deleted before the image was usable", id, im.server)}
		case stateActive:
			return true, nil
		}
		return false, nil
	}
	if err := c.api(ctx, OpWaitImage, func() error { _, err := check(); return err }); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, time.Until(readyAt)); err != nil {
		return err
	}
	return c.api(ctx, OpWaitImage, func() error {
		done, err := check()
		if err == nil && !done {
			err = &clouds.Error{Kind: clouds.KindFailed, Op: "wait image", Err: fmt.Errorf("image %s is still saving", id)}
		}
		return err
	})
}

func (c *Cloud) imageStateLocked(im *image) string {
	if im.state == statePending && !time.Now().Before(im.readyAt) {
		im.state = stateActive
	}
	return im.state
}

// Terminate implements clouds.Cloud: it deletes inst's resources newest first;
// one already gone is success. It tries every resource and joins the errors.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for _, r := range slices.Backward(inst.Resources) {
		op := OpTerminate
		switch r.Kind {
		case clouds.KindKeyPair:
			op = OpDeleteKey
		case clouds.KindImage:
			op = OpDeleteImage
		}
		if err := c.remove(ctx, op, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeleteImage implements clouds.Cloud.
func (c *Cloud) DeleteImage(ctx context.Context, img *clouds.Image) error {
	if img.ID == "" {
		return nil
	}
	return c.api(ctx, OpDeleteImage, func() error {
		if _, ok := c.images[img.ID]; ok {
			delete(c.images, img.ID)
			c.calls = append(c.calls, "delete image "+img.ID)
		}
		return nil
	})
}

// Leftovers implements clouds.Cloud.
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	err := c.api(ctx, OpLeftovers, func() error {
		out = out[:0]
		rs := make([]*resource, 0, len(c.resources))
		for _, r := range c.resources {
			if b := r.tags[clouds.TagBuild]; b != "" && (build == "" || b == build) {
				rs = append(rs, r)
			}
		}
		slices.SortFunc(rs, func(a, b *resource) int { return a.seq - b.seq })
		for _, r := range rs {
			out = append(out, r.Resource)
		}
		return nil
	})
	return out, err
}

// Remove implements clouds.Cloud.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	return c.remove(ctx, OpRemove, r)
}

// remove deletes one resource in one API call (op); gone already is success.
func (c *Cloud) remove(ctx context.Context, op Op, r clouds.Resource) error {
	return c.api(ctx, op, func() error {
		if r.Kind == clouds.KindImage {
			if _, ok := c.images[r.ID]; ok {
				delete(c.images, r.ID)
				c.calls = append(c.calls, "delete image "+r.ID)
			}
			return nil
		}
		res, ok := c.resources[r.ID]
		if !ok || res.Kind != r.Kind {
			return nil
		}
		delete(c.resources, r.ID)
		c.calls = append(c.calls, "delete "+r.Kind+" "+r.ID)
		if r.Kind == clouds.KindServer {
			// Deleting a server whose image is still saving spoils the image,
			// as on real clouds: the contract says Snapshot's return comes first.
			for _, im := range c.images {
				if im.server == r.ID && c.imageStateLocked(im) == statePending {
					im.state = stateError
				}
			}
		}
		return nil
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
	c.resources[r.ID] = r
	c.calls = append(c.calls, "create "+kind+" "+r.ID)
	return r
}

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

// fault applies the next injected fault at op, if any.
func (c *Cloud) fault(ctx context.Context, op Op) error {
	c.mu.Lock()
	var f *Fault
	if q := c.faults[op]; len(q) > 0 {
		fs := q[0]
		ff := fs.Fault
		f = &ff
		if fs.left > 0 {
			fs.left--
			if fs.left == 0 {
				c.faults[op] = q[1:]
			}
		}
	}
	c.mu.Unlock()
	if f == nil {
		return nil
	}
	if f.Block {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := clouds.Sleep(ctx, f.Delay); err != nil {
		return err
	}
	if f.Err == nil {
		return nil
	}
	var ce *clouds.Error
	if errors.As(f.Err, &ce) {
		return f.Err
	}
	return &clouds.Error{Kind: clouds.KindFailed, Op: string(op), Code: "InjectedFault", Err: f.Err}
}

func (c *Cloud) randomFailureLocked(op Op) error {
	if c.opts.FailRate <= 0 && c.opts.PermanentFailRate <= 0 {
		return nil
	}
	x := c.rng.Float64()
	switch {
	case x < c.opts.FailRate:
		return &clouds.Error{Kind: clouds.KindTransient, Op: string(op), Code: "503",
			Err: errors.New("simulated transient failure (fail_rate)")}
	case x < c.opts.FailRate+c.opts.PermanentFailRate:
		return &clouds.Error{Kind: clouds.KindFailed, Op: string(op), Code: "SimulatedFailure",
			Err: errors.New("simulated permanent failure (permanent_fail_rate)")}
	}
	return nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
