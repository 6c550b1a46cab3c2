package clouds

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Poller looks at many resources of one kind (instances, images) of one
// account and region in a few API calls per look, and hands every build
// waiting on one of them what the look saw: with 1 000 builds waiting, the
// cloud sees about one call per look, not 1 000. A driver keeps one Poller
// per kind, region and credentials, shared by every build there.
//
// Its goroutine runs only while some build waits, looks every Every, and
// slows down by itself when a look took several calls (pages) beyond its
// Burst or the cloud throttled it, so its average stays at one call per
// Every (1.125 with a Burst).
type Poller[C, T any] struct {
	cfg PollerConfig[C, T]

	mu      sync.Mutex
	waiters map[string]map[*watch[T]]struct{} // by resource id
	client  C                                 // the newest waiter's, while some wait
	running bool
	wake    chan struct{} // the loop's: a waiter left, or the poller should look again
	stats   PollerStats
}

// PollerConfig is what a Poller needs.
type PollerConfig[C, T any] struct {
	// Fetch looks at the resources ids, with client (the API client of a
	// build waiting now), in as few calls as it can and returns those the
	// cloud listed (an id it did not list is absent: not visible yet, or
	// gone) and how many API calls that took.
	Fetch func(ctx context.Context, client C, ids []string) (found map[string]T, calls int, err error)
	// Every is the time between two looks (default 1 s); First, the wait
	// before the first look of a poller that was idle (default Every).
	Every, First time.Duration
	// Timeout bounds one look (default 1 minute).
	Timeout time.Duration
	// Burst lets a look make up to Burst calls more than one (pages, or
	// what a broad look missed, looked at by id: 1 000 images finishing at
	// once) without holding the next look back, as long as such extra calls
	// average at most one every burstRefill periods: over time the poller
	// makes at most 1.125 calls per Every. With 0, each extra call holds the
	// next look back one period (one call per Every).
	Burst int
}

// burstRefill is how many periods a Poller takes to earn one spare call of
// its Burst back.
const burstRefill = 8

// PollerStats counts a Poller's work since it was made.
type PollerStats struct {
	Looks  int // looks at the waiting resources
	Calls  int // API calls they made
	Errors int // looks that failed
	Most   int // the most resources waiting at once
}

// Seen is what one look saw of a resource.
type Seen[T any] struct {
	Value T
	// Found is false when the cloud did not list the resource.
	Found bool
}

type watch[T any] struct {
	ch chan seen[T] // holds the newest look only
}

type seen[T any] struct {
	Seen[T]
	err error
}

// NewPoller returns an idle Poller.
func NewPoller[C, T any](cfg PollerConfig[C, T]) *Poller[C, T] {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.First <= 0 {
		cfg.First = cfg.Every
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	return &Poller[C, T]{cfg: cfg, waiters: map[string]map[*watch[T]]struct{}{}, wake: make(chan struct{}, 1)}
}

// Stats returns what the Poller has done so far.
func (p *Poller[C, T]) Stats() PollerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Running reports whether the Poller's goroutine runs (some build waits).
func (p *Poller[C, T]) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

// Wait calls check with what each look sees of resource id until check says
// done or fails, or ctx ends. The looks use client (or another waiting
// build's: one of the same account), which the Poller keeps only while
// some build waits. A look that failed with a transient error (a
// throttled or failed call) is skipped, as Poll skips it; another error ends
// the wait, wrapped with what (what was being waited for).
func (p *Poller[C, T]) Wait(ctx context.Context, client C, what, id string, check func(Seen[T]) (done bool, err error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := p.add(client, id)
	defer p.remove(id, w)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s := <-w.ch:
			if s.err != nil {
				if IsTransient(s.err) {
					continue
				}
				return fmt.Errorf("%s: %w", what, s.err)
			}
			done, err := check(s.Seen)
			if err != nil || done {
				return err
			}
		}
	}
}

func (p *Poller[C, T]) add(client C, id string) *watch[T] {
	w := &watch[T]{ch: make(chan seen[T], 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.client = client
	ws := p.waiters[id]
	if ws == nil {
		ws = map[*watch[T]]struct{}{}
		p.waiters[id] = ws
	}
	ws[w] = struct{}{}
	p.stats.Most = max(p.stats.Most, p.waitingLocked())
	if !p.running {
		p.running = true
		go p.loop()
	}
	return w
}

func (p *Poller[C, T]) remove(id string, w *watch[T]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.waiters[id]
	delete(ws, w)
	if len(ws) == 0 {
		delete(p.waiters, id)
	}
	if len(p.waiters) == 0 {
		// Let the loop see it now rather than at its next look.
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

func (p *Poller[C, T]) waitingLocked() int {
	n := 0
	for _, ws := range p.waiters {
		n += len(ws)
	}
	return n
}

// loop looks at the waiting resources until none is waited for.
func (p *Poller[C, T]) loop() {
	t := time.NewTimer(p.cfg.First)
	defer t.Stop()
	fails := 0
	spare, refilled := float64(p.cfg.Burst), time.Now()
	for {
		select {
		case <-t.C:
		case <-p.wake:
			if p.idle() {
				return
			}
			continue // the timer still runs
		}
		client, ids := p.ids()
		if ids == nil {
			if p.idle() {
				return
			}
			t.Reset(p.cfg.Every)
			continue
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
		found, calls, err := p.cfg.Fetch(ctx, client, ids)
		cancel()
		p.deliver(ids, found, calls, err)
		// One call per Every on average: a look of several calls (pages,
		// or more ids than one call takes) waits as many periods, less
		// the spare calls of the Burst (refilled one every burstRefill
		// periods).
		now := time.Now()
		spare = min(float64(p.cfg.Burst), spare+float64(now.Sub(refilled))/float64(burstRefill*p.cfg.Every))
		refilled = now
		extra := float64(max(calls, 1) - 1)
		use := min(extra, spare)
		spare -= use
		next := p.cfg.Every + time.Duration((extra-use)*float64(p.cfg.Every))
		if err != nil {
			// Throttled or failing: back off, as the cloud asks or twice as
			// long each time, up to 8 periods.
			fails++
			next = max(next, p.cfg.Every<<min(fails, 3))
			var e *Error
			if errors.As(err, &e) && e.RetryAfter > next {
				next = e.RetryAfter
			}
		} else {
			fails = 0
		}
		t.Reset(max(next-time.Since(start), p.cfg.Every/2))
	}
}

// idle stops the loop when no one waits (dropping the client it was lent):
// it reports whether it did.
func (p *Poller[C, T]) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 {
		return false
	}
	p.running = false
	var zero C
	p.client = zero
	return true
}

// ids are the resources waited for now (nil for none) and the client to
// look with.
func (p *Poller[C, T]) ids() (C, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) == 0 {
		return p.client, nil
	}
	ids := make([]string, 0, len(p.waiters))
	for id := range p.waiters {
		ids = append(ids, id)
	}
	slices.Sort(ids) // the same calls for the same waiters
	return p.client, ids
}

// deliver hands each waiter of ids what the look saw, replacing a look it
// has not taken yet: a waiter only ever needs the newest.
func (p *Poller[C, T]) deliver(ids []string, found map[string]T, calls int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Looks++
	p.stats.Calls += calls
	if err != nil {
		p.stats.Errors++
	}
	for _, id := range ids {
		var s seen[T]
		if err != nil {
			s.err = err
		} else {
			s.Value, s.Found = found[id]
		}
		for w := range p.waiters[id] {
			select {
			case w.ch <- s:
			default:
				select {
				case <-w.ch:
				default:
				}
				w.ch <- s // this loop is the only sender
			}
		}
	}
}

// Chunks cuts ids into slices of at most n (a cloud's limit on ids or filter
// values in one call).
func Chunks(ids []string, n int) [][]string {
	var out [][]string
	for len(ids) > n {
		out = append(out, ids[:n:n])
		ids = ids[n:]
	}
	if len(ids) > 0 {
		out = append(out, ids)
	}
	return out
}
