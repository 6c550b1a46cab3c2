package clouds

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Backoff is a retry and polling policy: waits grow from Initial by Factor up
// to Max; Attempts (0: unlimited, bounded by ctx) limits the number of tries.
type Backoff struct {
	Initial  time.Duration
	Max      time.Duration
	Factor   float64
	Attempts int
}

// DefaultRetry retries transient API errors.
var DefaultRetry = Backoff{Initial: 500 * time.Millisecond, Max: 10 * time.Second, Factor: 2, Attempts: 8}

// DefaultPoll polls for state changes: quick at first, then every 1.5 s at most,
// so imagegen notices a ready resource within seconds without flooding the API.
var DefaultPoll = Backoff{Initial: 250 * time.Millisecond, Max: 1500 * time.Millisecond, Factor: 1.5}

// Delay returns the wait before try n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	f := b.Factor
	if f < 1 {
		f = 1
	}
	for i := 0; i < n; i++ {
		d = time.Duration(float64(d) * f)
		if b.Max > 0 && d >= b.Max {
			return b.Max
		}
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d
}

// Within runs fn under timeout. When the timeout, not the caller's ctx,
// ends it with an error, that error becomes a KindFailed Error saying what
// was awaited (what) and for how long; otherwise fn's error is returned as is.
func Within(ctx context.Context, what string, timeout time.Duration, fn func(ctx context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(wctx)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return &Error{Kind: KindFailed, Op: what, Err: fmt.Errorf("not done after %s: %w", timeout, err)}
	}
	return err
}

// Retry calls fn until it succeeds, returns a non-transient error, runs out of
// attempts, or ctx ends. A Retry-After the cloud gave is honoured.
func Retry(ctx context.Context, b Backoff, fn func(context.Context) error) error {
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil || !IsTransient(err) {
			return err
		}
		if b.Attempts > 0 && n+1 >= b.Attempts {
			return fmt.Errorf("gave up after %d tries: %w", n+1, err)
		}
		d := b.Delay(n)
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > d {
			d = e.RetryAfter
		}
		if serr := Sleep(ctx, d); serr != nil {
			return fmt.Errorf("%w (last error: %w)", serr, err)
		}
	}
}

// Poll calls check until it reports done, returns an error, or ctx ends.
// Transient errors from check are tolerated (up to b.Attempts in a row, when set).
func Poll(ctx context.Context, b Backoff, check func(context.Context) (bool, error)) error {
	fails := 0
	for n := 0; ; n++ {
		done, err := check(ctx)
		switch {
		case err != nil && IsTransient(err):
			fails++
			if b.Attempts > 0 && fails >= b.Attempts {
				return fmt.Errorf("gave up after %d transient errors in a row: %w", fails, err)
			}
		case err != nil:
			return err
		case done:
			return nil
		default:
			fails = 0
		}
		if err := Sleep(ctx, b.Delay(n)); err != nil {
			return err
		}
	}
}

// Sleep waits for d, or returns ctx's error as soon as ctx ends (at once
// when d is not positive and ctx has ended): the wait drivers use between
// polls and before simulated or retried steps.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
