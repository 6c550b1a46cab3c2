package store

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/internal/secret"
)

// Log lines are stored in batches: one Redis round trip per line would cap a
// script's output at about a megabyte a second.
const (
	logBatch     = 512                    // lines that make the flusher go at once
	logFlushEach = 100 * time.Millisecond // and otherwise lines wait at most this long
	logFlushMax  = 8 * logBatch           // lines stored in one request at most
	// logEntryFloor is less than the JSON of a builder.LogLine adds to its text
	// (time, cloud, stream and the keys: 70 bytes and more), so the tail
	// kept in memory is never shorter than the one the store keeps.
	logEntryFloor = 60
)

// LogSink stores one build × cloud log as the builder hands it lines
// (builder.Observer's Line and builder.LineBatcher's Lines): redacted, in
// order, in batches from its own goroutine, so the script's output never
// waits on Redis. Lines waiting to be stored are kept only as far as the
// store's log limit reaches: when a script prints faster than Redis takes
// it, the lines the store would trim anyway are counted as dropped in
// memory instead of being sent; memory stays within about twice the limit.
type LogSink struct {
	store  *Store
	ctx    context.Context
	build  string
	cloud  string
	log    *slog.Logger
	redact secret.Redactor

	mu           sync.Mutex
	failed       bool
	pending      []builder.LogLine // lines not yet stored, oldest first, from head on
	head         int               // pending[:head] were dropped (trim), not yet compacted away
	pendingBytes int               // the size of pending[head:] as the store counts it, at least
	skipped      int               // lines dropped since the last flush

	running  bool          // the flusher runs (under mu)
	closing  bool          // Close was called: no flusher starts any more (under mu)
	wake     chan struct{} // lines are waiting (pending went from none to some)
	kick     chan struct{} // a full batch is waiting
	flushing sync.Mutex    // one flush at a time, so batches land in order
	keys     *logKeys      // where the log goes, found at the first flush; under flushing
	done     chan struct{}
	once     sync.Once
	flushers sync.WaitGroup
}

var _ builder.LineBatcher = (*LogSink)(nil)

// NewLogSink starts storing the log of build × cloud; Close stores what is
// left. ctx bounds the Redis calls (a build's context without its cancel:
// the log of a canceled build is still stored); redact is applied to the
// lines taken one by one (Line), a second guard behind the builder's own
// redaction. The batches (Lines) are the script's output, which the builder
// redacted as a stream, before it was cut into lines: they are not redacted
// again (that doubled the cost of streaming, and could catch nothing more).
func (s *Store) NewLogSink(ctx context.Context, build, cloud string, log *slog.Logger, redact secret.Redactor) builds.LogSink {
	return s.newLogSink(ctx, build, cloud, log, redact)
}

func (s *Store) newLogSink(ctx context.Context, build, cloud string, log *slog.Logger, redact secret.Redactor) *LogSink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &LogSink{store: s, ctx: ctx, build: build, cloud: cloud, log: log, redact: redact,
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), done: make(chan struct{})}
	return l
}

// run is the flusher, started by the first lines since it last ran (a
// build waiting on its cloud holds no goroutine for its log: 10 000 builds
// in flight held 10 000). It gives the lines logFlushEach to gather unless
// a whole batch is waiting sooner, stores them, and returns once none is
// left.
func (l *LogSink) run() {
	defer l.flushers.Done()
	t := time.NewTimer(logFlushEach)
	t.Stop()
	for {
		select {
		case <-l.done:
			l.flush()
			return
		case <-l.wake:
		}
		t.Reset(logFlushEach)
		select {
		case <-l.done:
			t.Stop()
			l.flush()
			return
		case <-l.kick:
			t.Stop()
		case <-t.C:
		}
		l.flush()
		l.mu.Lock()
		if len(l.pending) == l.head && l.skipped == 0 {
			// Idle: the lines' array goes too (a build waiting on its cloud
			// for minutes keeps nothing for its log).
			l.running, l.pending, l.head = false, nil, 0
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// Close stores the lines still waiting and stops the flusher: the whole log
// is stored when it returns.
func (l *LogSink) Close() {
	l.once.Do(func() {
		l.mu.Lock()
		l.closing = true
		l.mu.Unlock()
		close(l.done)
	})
	l.flushers.Wait()
	l.flush()
}

// flush stores every waiting line, logFlushMax at a time: a small request
// each, and the lines still waiting meanwhile can be trimmed in memory.
func (l *LogSink) flush() {
	l.flushing.Lock()
	defer l.flushing.Unlock()
	for {
		l.mu.Lock()
		n := min(len(l.pending)-l.head, logFlushMax)
		batch := slices.Clone(l.pending[l.head : l.head+n])
		skipped := l.skipped
		for _, ln := range batch {
			l.pendingBytes -= len(ln.Text) + logEntryFloor
		}
		clear(l.pending[l.head : l.head+n])
		l.head += n
		if l.head == len(l.pending) {
			l.pending, l.head = l.pending[:0], 0
		}
		l.skipped = 0
		l.mu.Unlock()
		if n == 0 && skipped == 0 {
			return
		}
		if err := l.append(batch, skipped); err != nil {
			l.mu.Lock()
			first := !l.failed
			l.failed = true
			l.mu.Unlock()
			if first {
				l.log.Warn("store build log", "err", err)
			}
		}
	}
}

// append stores a batch; the first finds out whether the build is kept
// under the keys of an older version (legacy) and remembers it. l.flushing
// is held.
func (l *LogSink) append(batch []builds.LogEntry, skipped int) error {
	if l.keys == nil {
		legacy, err := l.store.legacy(l.ctx, l.build)
		if err != nil {
			return err
		}
		k := logKeysOf(l.build, l.cloud, legacy)
		l.keys = &k
	}
	return l.store.appendLogs(l.ctx, *l.keys, batch, skipped)
}

// Line takes one line.
func (l *LogSink) Line(ln builder.LogLine) {
	ln.Text = l.redact.Redact(ln.Text)
	l.mu.Lock()
	l.add(ln)
	n := len(l.pending) - l.head
	l.trim()
	l.mu.Unlock()
	l.signal(1, n)
}

// Lines takes the script's output one read at a time (builder.LineBatcher):
// one lock and one wake-up for the whole batch; redacted already.
func (l *LogSink) Lines(ls []builder.LogLine) {
	l.mu.Lock()
	for _, ln := range ls { // ln is a copy: the slice is reused once Lines returns
		l.add(ln)
	}
	n := len(l.pending) - l.head
	l.trim()
	l.mu.Unlock()
	l.signal(len(ls), n)
}

// add appends one line to pending; l.mu is held.
func (l *LogSink) add(ln builder.LogLine) {
	if ln.Cloud == "" {
		ln.Cloud = l.cloud
	}
	l.pending = append(l.pending, ln)
	l.pendingBytes += len(ln.Text) + logEntryFloor
}

// trim drops the oldest waiting lines while the rest alone exceed the log
// limit: the store would trim them anyway. l.mu is held.
func (l *LogSink) trim() {
	for l.pendingBytes > l.store.logLimit && len(l.pending)-l.head > 1 {
		l.pendingBytes -= len(l.pending[l.head].Text) + logEntryFloor
		l.pending[l.head] = builder.LogLine{} // its text can go
		l.head++
		l.skipped++
	}
	// Compact once the dropped part is the larger: amortized, each line is
	// copied at most once more.
	if l.head > 0 && l.head >= len(l.pending)/2 {
		l.pending = append(l.pending[:0], l.pending[l.head:]...)
		clear(l.pending[len(l.pending) : l.head+len(l.pending)])
		l.head = 0
	}
}

// signal tells the flusher that k lines were added, making n waiting,
// starting it if it does not run.
func (l *LogSink) signal(k, n int) {
	send := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	l.mu.Lock()
	start := !l.running && !l.closing
	if start {
		l.running = true
		l.flushers.Add(1)
	}
	l.mu.Unlock()
	if start {
		go l.run()
		send(l.wake)
	}
	switch {
	case n >= logBatch:
		send(l.wake)
		send(l.kick)
	case n == k: // the first lines since the last flush
		send(l.wake)
	}
}
