package clouds

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		b    Backoff
		n    int
		want time.Duration
	}{
		{"first", Backoff{Initial: 10 * ms, Max: time.Second, Factor: 2}, 0, 10 * ms},
		{"grows", Backoff{Initial: 10 * ms, Max: time.Second, Factor: 2}, 3, 80 * ms},
		{"caps", Backoff{Initial: 10 * ms, Max: 50 * ms, Factor: 2}, 3, 50 * ms},
		{"caps for huge n", Backoff{Initial: 10 * ms, Max: 50 * ms, Factor: 2}, 1 << 20, 50 * ms},
		{"initial above max", Backoff{Initial: time.Second, Max: 50 * ms, Factor: 2}, 0, 50 * ms},
		{"no max", Backoff{Initial: ms, Factor: 10}, 3, time.Second},
		{"factor below 1 is 1", Backoff{Initial: 10 * ms, Factor: 0.5}, 5, 10 * ms},
		{"zero initial", Backoff{}, 0, 100 * ms},
		{"default poll caps", DefaultPoll, 100, 1500 * time.Millisecond},
		{"default retry caps", DefaultRetry, 100, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.n); got != tt.want {
				t.Errorf("Delay(%d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	permanent := &Error{Kind: KindQuota, Err: errors.New("quota")}
	tests := []struct {
		name      string
		attempts  int
		errs      []error // returned by successive calls; nil after the list
		wantCalls int
		wantErr   error
	}{
		{"success", 0, nil, 1, nil},
		{"transient then success", 0, []error{errTransient, errTransient}, 3, nil},
		{"permanent stops", 0, []error{errTransient, permanent, errTransient}, 2, permanent},
		{"unknown stops", 0, []error{errors.New("?")}, 1, nil},
		{"attempts run out", 3, []error{errTransient, errTransient, errTransient, errTransient}, 3, errTransient},
		{"canceled is not retried", 0, []error{context.Canceled}, 1, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			b := fastBackoff
			b.Attempts = tt.attempts
			err := Retry(context.Background(), b, func(context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tt.wantCalls)
			}
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && tt.wantCalls == len(tt.errs)+1 && err != nil:
				t.Errorf("err = %v, want nil", err)
			case tt.wantErr == nil && tt.wantCalls == len(tt.errs) && err == nil:
				t.Errorf("err = nil, want the last error")
			}
		})
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	tooFast := &Error{Kind: KindTransient, Code: "429", RetryAfter: 80 * time.Millisecond, Err: errors.New("slow down")}
	calls := 0
	var gap time.Duration
	var last time.Time
	err := Retry(context.Background(), fastBackoff, func(context.Context) error {
		calls++
		if calls == 2 {
			gap = time.Since(last)
			return nil
		}
		last = time.Now()
		return tooFast
	})
	if err != nil || calls != 2 {
		t.Fatalf("Retry = %v after %d calls", err, calls)
	}
	if gap < 80*time.Millisecond {
		t.Fatalf("retried after %v; Retry-After said 80ms", gap)
	}
}

func TestRetryStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Retry(ctx, Backoff{Initial: time.Hour}, func(context.Context) error { return errTransient })
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Retry took %v after its context ended", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errTransient) {
		t.Fatalf("err = %v, want the deadline and the last error", err)
	}
}

func TestPoll(t *testing.T) {
	permanent := &Error{Kind: KindFailed, Err: errors.New("error state")}
	type step struct {
		done bool
		err  error
	}
	tests := []struct {
		name      string
		attempts  int
		steps     []step // after the list: done
		wantCalls int
		wantErr   error
		wantFail  bool
	}{
		{"done at once", 0, nil, 1, nil, false},
		{"done after waiting", 0, []step{{}, {}, {}}, 4, nil, false},
		{"transient tolerated", 3, []step{{err: errTransient}, {err: errTransient}, {}, {err: errTransient}, {err: errTransient}}, 6, nil, false},
		{"transient in a row gives up", 3, []step{{err: errTransient}, {err: errTransient}, {err: errTransient}, {}}, 3, errTransient, true},
		{"permanent stops", 0, []step{{}, {err: permanent}, {}}, 2, permanent, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := fastBackoff
			b.Attempts = tt.attempts
			calls := 0
			err := Poll(context.Background(), b, func(context.Context) (bool, error) {
				calls++
				if calls <= len(tt.steps) {
					s := tt.steps[calls-1]
					return s.done, s.err
				}
				return true, nil
			})
			if calls != tt.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tt.wantCalls)
			}
			if (err != nil) != tt.wantFail || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPollStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Poll(ctx, Backoff{Initial: time.Hour}, func(context.Context) (bool, error) { return false, nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Poll took %v after its context ended", took)
	}
}

func TestWithin(t *testing.T) {
	block := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		fn       func(context.Context) error
		wantKind Kind   // "" : not a classified error
		wantMsg  string // in the error; "" : no error
	}{
		{"done in time", context.Background(), func(context.Context) error { return nil }, "", ""},
		{"its own error", context.Background(), func(context.Context) error { return errors.New("boom") }, "", "boom"},
		{"the timeout ends it", context.Background(), block, KindFailed, "not done after 20ms"},
		{"the caller ends it", canceled, block, "", "context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Within(tc.ctx, "wait for it", 20*time.Millisecond, tc.fn)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err %v, want %q", err, tc.wantMsg)
			}
			var ce *Error
			if got := errors.As(err, &ce); got != (tc.wantKind != "") || (got && ce.Kind != tc.wantKind) {
				t.Errorf("err %#v, want kind %q", err, tc.wantKind)
			}
		})
	}
}
