package access

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter bounds failures per key (a client address) with a token bucket
// per key, kept for the size most recently seen keys. Each attempt takes a
// token before it is checked and gives it back when it succeeds, so
// parallel attempts cannot all slip past an empty bucket.
type Limiter struct {
	mu    sync.Mutex
	every rate.Limit
	burst int
	size  int
	order *list.List               // of *bucket, most recently used first
	byKey map[string]*list.Element // key → its element in order
}

type bucket struct {
	key string
	lim *rate.Limiter
}

// NewLimiter allows burst failures per key at once, then one every refill;
// it remembers size keys.
func NewLimiter(refill time.Duration, burst, size int) *Limiter {
	return &Limiter{every: rate.Every(refill), burst: burst, size: size, order: list.New(), byKey: map[string]*list.Element{}}
}

// attempt is one authentication's claim on its key's bucket.
type attempt struct {
	r   *rate.Reservation
	now time.Time
}

// refund gives the token back: the attempt succeeded.
func (a attempt) refund() { a.r.CancelAt(a.now) }

// reserve takes a token from key's bucket for an attempt at now. When the
// bucket is empty it takes nothing and says how long until it is not.
func (l *Limiter) reserve(key string, now time.Time) (attempt, time.Duration) {
	lim := l.bucket(key)
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return attempt{}, d
	}
	return attempt{r: r, now: now}, 0
}

func (l *Limiter) bucket(key string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byKey[key]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	// Forgetting the least recently seen key resets its bucket: an address
	// not seen for the last size others had stopped failing long ago, unless
	// someone spreads over more addresses than that (see docs/RELIABILITY.md).
	if l.order.Len() >= l.size {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.byKey, old.Value.(*bucket).key)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(l.every, l.burst)}
	l.byKey[key] = l.order.PushFront(b)
	return b.lim
}
