package clouds

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// SharedLookups lets the builds of one account share look-ups of what does
// not change from build to build (a base image): builds launching at once
// from one image ask the cloud once, not once each, and builds within TTL of
// a look-up that succeeded take its answer. A look-up that failed is not
// shared: each build waiting on it then looks for itself, so a transient
// error of one build, or its canceled context, is not every build's.
type SharedLookups[T any] struct {
	// TTL is how long a look-up that succeeded is taken as the answer
	// (default 1 minute).
	TTL time.Duration

	mu sync.Mutex
	by map[string]*lookup[T]
}

// lookup is one look-up, shared by the builds that want it while it runs and
// for TTL after it succeeded.
type lookup[T any] struct {
	done chan struct{}
	val  T
	err  error
	at   time.Time // when it ended; zero while it runs
}

// Get returns the answer for key: a look-up under way's, or one that
// succeeded within TTL, or look's, called now.
func (s *SharedLookups[T]) Get(ctx context.Context, key string, look func(context.Context) (T, error)) (T, error) {
	ttl := s.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	s.mu.Lock()
	if s.by == nil {
		s.by = map[string]*lookup[T]{}
	}
	l := s.by[key]
	if l != nil && !l.at.IsZero() && time.Since(l.at) > ttl {
		l = nil
	}
	if l == nil {
		l = &lookup[T]{done: make(chan struct{})}
		s.by[key] = l
		s.mu.Unlock()
		v, err := look(ctx)
		s.mu.Lock()
		l.val, l.err, l.at = v, err, time.Now()
		if err != nil && s.by[key] == l {
			delete(s.by, key)
		}
		s.mu.Unlock()
		close(l.done)
		return v, err
	}
	s.mu.Unlock()
	select {
	case <-l.done:
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("look up %s: %w", key, ctx.Err())
	}
	if l.err != nil {
		return look(ctx)
	}
	return l.val, nil
}

// Accounts holds what the builds of one account (one set of credentials in
// one region) share — their pollers and look-ups — made on first use and
// kept for the life of the Opener.
type Accounts[V any] struct {
	mu sync.Mutex
	by map[string]V
}

// Get returns key's value, made with mk the first time key is asked.
func (a *Accounts[V]) Get(key string, mk func() V) V {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.by == nil {
		a.by = map[string]V{}
	}
	v, ok := a.by[key]
	if !ok {
		v = mk()
		a.by[key] = v
	}
	return v
}

// Keys returns the keys of the accounts made so far, in no order.
func (a *Accounts[V]) Keys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.by))
	for k := range a.by {
		keys = append(keys, k)
	}
	return keys
}
