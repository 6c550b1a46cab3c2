package clouds

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSharedLookups: callers at once share one look-up; its answer is kept
// for TTL; a failed look-up is not shared nor kept; a caller whose context
// ends stops waiting without ending the others'.
func TestSharedLookups(t *testing.T) {
	var s SharedLookups[string]
	s.TTL = 200 * time.Millisecond
	var calls atomic.Int32
	release := make(chan struct{})
	look := func(ctx context.Context) (string, error) {
		calls.Add(1)
		<-release
		return "ami-1", nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			v, err := s.Get(context.Background(), "base", look)
			if err == nil && v != "ami-1" {
				err = errors.New("got " + v)
			}
			errs <- err
		})
	}
	// A caller that gives up while the look-up runs.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Get(ctx, "base", look); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("canceled caller: %v", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d look-ups for 50 callers at once; want 1", n)
	}
	if v, _ := s.Get(context.Background(), "base", look); v != "ami-1" || calls.Load() != 1 {
		t.Errorf("within TTL: %q after %d look-ups; want the kept answer", v, calls.Load())
	}
	time.Sleep(250 * time.Millisecond)
	if _, _ = s.Get(context.Background(), "base", look); calls.Load() != 2 {
		t.Errorf("%d look-ups after TTL; want a new one", calls.Load())
	}

	// Failures: every caller looks for itself, and nothing is kept.
	var failed atomic.Int32
	fail := func(context.Context) (string, error) {
		failed.Add(1)
		time.Sleep(20 * time.Millisecond)
		return "", errors.New("not found")
	}
	for range 10 {
		wg.Go(func() {
			if _, err := s.Get(context.Background(), "gone", fail); err == nil {
				t.Error("a failed look-up answered nil")
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n < 2 {
		t.Errorf("%d look-ups for 10 callers of a failing one; want each waiting caller to look again", n)
	}
	before := failed.Load()
	if _, err := s.Get(context.Background(), "gone", fail); err == nil || failed.Load() != before+1 {
		t.Errorf("a failure was kept: %v, %d look-ups", err, failed.Load()-before)
	}
}

// TestAccounts: one value per key, made once however many ask at once.
func TestAccounts(t *testing.T) {
	var a Accounts[*int]
	var made atomic.Int32
	mk := func() *int { made.Add(1); n := 0; return &n }
	var wg sync.WaitGroup
	got := make([]*int, 20)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = a.Get("k", mk) }()
	}
	wg.Wait()
	for _, p := range got {
		if p != got[0] {
			t.Fatal("two builds of one account got different values")
		}
	}
	if other := a.Get("other", mk); other == got[0] || made.Load() != 2 {
		t.Errorf("made %d values for two keys (want 2); the other key's is the first's: %v", made.Load(), other == got[0])
	}
	if keys := a.Keys(); len(keys) != 2 {
		t.Errorf("keys %v, want k and other", keys)
	}
}
