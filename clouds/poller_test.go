package clouds

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAPI is a cloud whose resources turn ready at given times; every look
// is one call, or as many as calls says.
type fakeAPI struct {
	mu      sync.Mutex
	readyAt map[string]time.Time // ids the API lists, and when each is ready
	looks   [][]string           // the ids of every look
	clients []string             // the client each look was made with
	calls   int                  // per look; 0: 1
	fail    []error              // the next looks' errors
}

func (f *fakeAPI) fetch(_ context.Context, client string, ids []string) (map[string]bool, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.looks = append(f.looks, slices.Clone(ids))
	f.clients = append(f.clients, client)
	if len(f.fail) > 0 {
		err := f.fail[0]
		f.fail = f.fail[1:]
		return nil, 1, err
	}
	out := map[string]bool{}
	for _, id := range ids {
		if at, ok := f.readyAt[id]; ok {
			out[id] = !time.Now().Before(at)
		}
	}
	return out, max(f.calls, 1), nil
}

func (f *fakeAPI) lookCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.looks)
}

func newTestPoller(f *fakeAPI, every time.Duration) *Poller[string, bool] {
	return NewPoller(PollerConfig[string, bool]{Fetch: f.fetch, Every: every, First: every / 2})
}

// ready waits until the resource is listed as ready.
func ready(what string) func(Seen[bool]) (bool, error) {
	return func(s Seen[bool]) (bool, error) {
		if !s.Found {
			return false, Errorf(KindNotFound, what, "not listed")
		}
		return s.Value, nil
	}
}

func TestPollerBatchesAndFansOut(t *testing.T) {
	const n = 300
	now := time.Now()
	f := &fakeAPI{readyAt: map[string]time.Time{}}
	for i := range n {
		// Ready at spread-out times, some at once.
		f.readyAt[fmt.Sprintf("i-%03d", i)] = now.Add(time.Duration(i%6) * 40 * time.Millisecond)
	}
	p := newTestPoller(f, 20*time.Millisecond)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range n {
		id := fmt.Sprintf("i-%03d", i)
		wg.Go(func() {
			if err := p.Wait(context.Background(), "client-"+id, "wait for "+id, id, ready(id)); err != nil {
				t.Errorf("%s: %v", id, err)
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return
	}
	looks := f.lookCount()
	// 300 waits over ~200 ms at a look every 20 ms: a look at most every
	// 10 ms (the floor after a slow look), each with every waiting id.
	if looks > 30 {
		t.Errorf("%d looks for %d waits over 200 ms; want one every 20 ms", looks, n)
	}
	most := 0
	for _, ids := range f.looks {
		most = max(most, len(ids))
		if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
			t.Errorf("look ids %v: want sorted, each once", ids)
		}
	}
	if most < n/2 {
		t.Errorf("the largest look asked for %d ids; want most of the %d waiting in one look", most, n)
	}
	if st := p.Stats(); st.Looks != looks || st.Calls != looks || st.Most < n/2 {
		t.Errorf("stats %+v; want %d looks and calls, most ≥ %d", st, looks, n/2)
	}
	for _, c := range f.clients {
		if !strings.HasPrefix(c, "client-i-") {
			t.Errorf("a look used client %q, not a waiter's", c)
		}
	}
	waitIdle(t, p)
}

func TestPollerAbsentAndErrors(t *testing.T) {
	f := &fakeAPI{readyAt: map[string]time.Time{"known": time.Now()}}
	p := newTestPoller(f, 5*time.Millisecond)
	ctx := context.Background()

	// An id the API does not list: check decides (here, at the third look).
	missed := 0
	err := p.Wait(ctx, "c", "wait for unknown", "unknown", func(s Seen[bool]) (bool, error) {
		if s.Found {
			t.Error("an unknown id was found")
		}
		if missed++; missed < 3 {
			return false, nil
		}
		return false, Errorf(KindNotFound, "wait for unknown", "not listed in %d looks", missed)
	})
	if !IsNotFound(err) || missed != 3 {
		t.Errorf("unknown id: %v after %d looks; want not-found after 3", err, missed)
	}

	// Transient failures (throttling) are skipped; the wait goes on.
	f.mu.Lock()
	f.fail = []error{&Error{Kind: KindTransient, Code: "RequestLimitExceeded", Err: errors.New("slow down")},
		&Error{Kind: KindTransient, Code: "429", Err: errors.New("slow down")}}
	f.mu.Unlock()
	if err := p.Wait(ctx, "c", "wait for known", "known", ready("known")); err != nil {
		t.Errorf("through transient errors: %v", err)
	}

	// Another error ends the wait, saying what was waited for.
	f.mu.Lock()
	f.fail = []error{&Error{Kind: KindAuth, Code: "AuthFailure", Err: errors.New("bad key")}}
	f.mu.Unlock()
	err = p.Wait(ctx, "c", "wait for known", "known", ready("known"))
	if KindOf(err) != KindAuth || !strings.HasPrefix(err.Error(), "wait for known: ") {
		t.Errorf("auth failure: %v; want the auth error, prefixed with the wait", err)
	}
	waitIdle(t, p)
}

func TestPollerCancellationLeavesOthers(t *testing.T) {
	f := &fakeAPI{readyAt: map[string]time.Time{"slow": time.Now().Add(time.Hour), "soon": time.Now().Add(150 * time.Millisecond)}}
	p := newTestPoller(f, 10*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	canceled := make(chan error, 1)
	go func() { canceled <- p.Wait(ctx, "c", "wait for slow", "slow", ready("slow")) }()
	soon := make(chan error, 1)
	go func() { soon <- p.Wait(context.Background(), "c", "wait for soon", "soon", ready("soon")) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-canceled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled wait: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a canceled wait did not return")
	}
	if err := <-soon; err != nil {
		t.Errorf("the other wait: %v", err)
	}
	// Once the canceled waiter has left, looks no longer ask for it.
	f.mu.Lock()
	last := f.looks[len(f.looks)-1]
	f.mu.Unlock()
	if slices.Contains(last, "slow") {
		t.Errorf("the last look %v still asks for the canceled wait's id", last)
	}
	// A wait on a canceled context returns at once, without a look.
	before := f.lookCount()
	if err := p.Wait(ctx, "c", "wait", "slow", ready("slow")); !errors.Is(err, context.Canceled) {
		t.Errorf("wait on a canceled context: %v", err)
	}
	waitIdle(t, p)
	if f.lookCount() != before {
		t.Error("a wait on a canceled context made a look")
	}
}

func TestPollerStopsWhenNoOneWaits(t *testing.T) {
	f := &fakeAPI{readyAt: map[string]time.Time{"a": time.Now().Add(30 * time.Millisecond)}}
	p := newTestPoller(f, 5*time.Millisecond)
	base := runtime.NumGoroutine()
	for range 3 {
		if err := p.Wait(context.Background(), "c", "wait for a", "a", ready("a")); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, p)
	}
	looks := f.lookCount()
	time.Sleep(50 * time.Millisecond)
	if n := f.lookCount(); n != looks {
		t.Errorf("%d looks after every wait ended", n-looks)
	}
	p.mu.Lock()
	client := p.client
	p.mu.Unlock()
	if client != "" {
		t.Errorf("the idle poller keeps client %q", client)
	}
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after the waits, %d before", n, base)
	}
}

func TestPollerPacesCallsAndHonoursRetryAfter(t *testing.T) {
	const every = 20 * time.Millisecond
	t.Run("a look of several calls waits as many periods", func(t *testing.T) {
		f := &fakeAPI{readyAt: map[string]time.Time{"a": time.Now().Add(time.Hour)}, calls: 4}
		p := newTestPoller(f, every)
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		_ = p.Wait(ctx, "c", "wait", "a", ready("a"))
		// 4 calls a look at one call per 20 ms: a look every 80 ms, 5 in 400 ms.
		if n := f.lookCount(); n < 3 || n > 7 {
			t.Errorf("%d looks of 4 calls in 400 ms; want about 5", n)
		}
		waitIdle(t, p)
	})
	t.Run("throttled looks back off, as long as Retry-After says", func(t *testing.T) {
		f := &fakeAPI{readyAt: map[string]time.Time{"a": time.Now()}}
		f.fail = []error{&Error{Kind: KindTransient, Code: "429", RetryAfter: 300 * time.Millisecond, Err: errors.New("slow down")}}
		p := newTestPoller(f, every)
		start := time.Now()
		if err := p.Wait(context.Background(), "c", "wait", "a", ready("a")); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("the wait ended %v after a Retry-After of 300ms", took)
		}
		if n := f.lookCount(); n != 2 {
			t.Errorf("%d looks; want the throttled one and one after Retry-After", n)
		}
		waitIdle(t, p)
	})
}

func TestChunks(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	tests := []struct {
		n    int
		want [][]string
	}{
		{2, [][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
		{5, [][]string{ids}},
		{200, [][]string{ids}},
	}
	for _, tt := range tests {
		got := Chunks(ids, tt.n)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Chunks(%v, %d) = %v; want %v", ids, tt.n, got, tt.want)
		}
	}
	if got := Chunks(nil, 3); got != nil {
		t.Errorf("Chunks(nil) = %v", got)
	}
	// A chunk cannot grow into the next one.
	c := Chunks(ids, 2)
	_ = append(c[0], "x")
	if ids[2] != "c" {
		t.Error("appending to a chunk overwrote the next")
	}
}

// waitIdle waits until p's goroutine has stopped.
func waitIdle[C, T any](t *testing.T, p *Poller[C, T]) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for p.Running() {
		if time.Now().After(deadline) {
			t.Fatal("the poller still runs after every wait ended")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPollerBurst: with a Burst, looks of several calls are not held back
// until the spare calls are spent; then the extra calls average one every
// eight periods.
func TestPollerBurst(t *testing.T) {
	const every = 20 * time.Millisecond
	looks := func(burst int) int {
		f := &fakeAPI{readyAt: map[string]time.Time{"a": time.Now().Add(time.Hour)}, calls: 4}
		p := NewPoller(PollerConfig[string, bool]{Fetch: f.fetch, Every: every, First: every / 2, Burst: burst})
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		_ = p.Wait(ctx, "c", "wait", "a", ready("a"))
		waitIdle(t, p)
		return f.lookCount()
	}
	// 600 ms is 30 periods. Without a Burst: a look every 4 periods, ≈ 8.
	// With 12 spare calls, refilled by 3.75 over the 30 periods: L looks
	// take L periods plus the extra calls the spare ones did not pay for
	// (3L − 15.75), so L + 3L − 15.75 = 30, ≈ 11.4; more would be more
	// than 1.125 calls a period beyond the Burst.
	plain, burst := looks(0), looks(12)
	t.Logf("%d looks without a Burst, %d with", plain, burst)
	if plain < 5 || plain > 10 {
		t.Errorf("%d looks of 4 calls in 30 periods without a Burst; want about 8", plain)
	}
	if burst < plain+2 || burst > 12 {
		t.Errorf("%d looks of 4 calls in 30 periods with a Burst of 12 (%d without); want about 11, at most 12", burst, plain)
	}
}
