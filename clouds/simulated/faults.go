package simulated

import (
	"context"
	"errors"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

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

	// The calls of the optional interfaces, which the pipeline makes only
	// for provenance (not in Ops).
	OpDescribeImage Op = "describe image" // clouds.ImageDescriber
	OpTagImage      Op = "tag image"      // clouds.ImageTagger
)

// Ops lists every Op the pipeline's Cloud calls make, in pipeline order.
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

type faultState struct {
	Fault
	left int // calls left; <0: unlimited
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
