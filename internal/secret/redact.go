package secret

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"weak"
)

// MinLen is the shortest secret a Redactor replaces: redacting "a" would
// make every log unreadable and protect nothing.
const MinLen = 4

// MaxLen is the longest secret imagegen accepts (see Validate): a stream
// is held back by as many bytes as the longest secret has, before it is
// written to a build log.
const MaxLen = 4 << 10

// ErrTooLong is what Validate's error wraps.
var ErrTooLong = errors.New("secret too long")

// Validate refuses a secret longer than MaxLen. Call it wherever a secret
// comes in (config, an API request), and name the field in the error:
// such a secret is still redacted, but a log stream then waits for that
// many bytes before it is written.
func Validate(s String) error {
	if n := len(s.v); n > MaxLen {
		return fmt.Errorf("%w: %d bytes, at most %d (4 KiB) are allowed so that build logs can be redacted as they stream", ErrTooLong, n, MaxLen)
	}
	return nil
}

// Redactor replaces every occurrence of known secrets in text with
// [redacted]: where occurrences overlap or touch, the bytes they cover
// become one [redacted], so no byte of any occurrence is left. It takes
// time linear in the text, whatever the secrets. Secrets shorter than
// MinLen are ignored. The zero value redacts nothing. A Redactor is never
// modified: copies share it, and it is safe for concurrent use.
type Redactor struct {
	m *matcher
}

// NewRedactor returns a Redactor for the given secrets, in time linear in
// their total length.
func NewRedactor(secrets ...String) Redactor {
	var vals []string
	for _, s := range secrets {
		if len(s.v) >= MinLen {
			vals = append(vals, s.v)
		}
	}
	if len(vals) == 0 {
		return Redactor{}
	}
	return Redactor{m: sharedMatcher(vals)}
}

// matchers are the automata of the Redactors alive, by the digest of their
// secrets: every build redacts the config's secrets, and an automaton of a
// GitHub App's private key is some 180 KiB (two per build made 10 000
// builds in flight hold 3.5 GiB). A matcher no Redactor holds is collected,
// and its entry with it.
var matchers sync.Map // [sha256.Size]byte → weak.Pointer[matcher]

// matcherKey is the key in matchers of sorted secrets without duplicates.
func matcherKey(sorted []string) [sha256.Size]byte {
	h := sha256.New()
	for _, v := range sorted {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// sharedMatcher returns the matcher of vals: one alive already, or a new one.
func sharedMatcher(vals []string) *matcher {
	sorted := slices.Compact(slices.Sorted(slices.Values(vals)))
	key := matcherKey(sorted)
	if v, ok := matchers.Load(key); ok {
		if m := v.(weak.Pointer[matcher]).Value(); m != nil {
			return m
		}
	}
	m := newMatcher(sorted)
	wp := weak.Make(m)
	matchers.Store(key, wp)
	runtime.AddCleanup(m, func(key [sha256.Size]byte) { matchers.CompareAndDelete(key, wp) }, key)
	return m
}

// IsZero reports whether r redacts nothing.
func (r Redactor) IsZero() bool { return r.m == nil }

// Lookbehind is the most bytes a Stream holds back: the longest secret's length.
func (r Redactor) Lookbehind() int {
	if r.m == nil {
		return 0
	}
	return r.m.maxLen
}

// Redact returns text with every secret replaced by [redacted]. Text
// without secrets is returned as it is, without a copy.
func (r Redactor) Redact(text string) string {
	if r.m == nil {
		return text
	}
	if s, n := advance(r.m, 0, text); n == len(text) && r.m.match[s] == 0 {
		return text
	}
	st := r.Stream()
	out := redactTo(st, make([]byte, 0, len(text)+len(Redacted)), text)
	return string(st.Flush(out))
}

// Stream returns a Stream redacting one stream of bytes with r's secrets.
func (r Redactor) Stream() *Stream { return &Stream{m: r.m} }

// Stream redacts a stream of bytes that arrives in pieces (reads from a
// connection): a secret is replaced however the pieces cut it, and a
// secret containing a newline is replaced whole. It holds back the bytes
// that may still begin a secret, never more than Lookbehind; Flush writes
// them at the end. A Stream is for one goroutine at a time.
type Stream struct {
	m     *matcher
	state int32
	pos   int64  // bytes read so far
	held  []byte // the last bytes read, not decided yet: as many as the state's depth
	runs  []run  // stretches known to be covered by secrets, not all written yet
}

// run is the union of overlapping or touching occurrences of secrets:
// [start, end) in stream offsets. A long run is written as it goes
// (marked: its [redacted] is out), so what is held stays bounded.
type run struct {
	start, end int64
	marked     bool
}

// Redact appends to dst the redacted stream as far as p makes it certain,
// and holds back the rest.
func (st *Stream) Redact(dst, p []byte) []byte { return redactTo(st, dst, p) }

// Flush appends to dst what the stream held back: its end is reached.
// The Stream may then be used for a new stream.
func (st *Stream) Flush(dst []byte) []byte {
	if st.m == nil {
		return dst
	}
	dst = emit(st, dst, []byte(nil), st.pos, st.pos)
	st.state, st.held, st.runs = 0, st.held[:0], st.runs[:0]
	return dst
}

func redactTo[T string | []byte](st *Stream, dst []byte, p T) []byte {
	m := st.m
	if m == nil {
		return append(dst, p...)
	}
	base := st.pos
	s := st.state
	for i := 0; i < len(p); {
		var n int
		s, n = advance(m, s, p[i:])
		i += n
		if l := m.match[s]; l != 0 {
			end := base + int64(i)
			st.cover(end-int64(l), end)
		}
	}
	st.state = s
	st.pos = base + int64(len(p))
	// No secret can begin before b: what is before it is decided.
	return emit(st, dst, p, base, st.pos-int64(m.depth[s]))
}

// cover adds the occurrence [start, end); end is past every run's end.
func (st *Stream) cover(start, end int64) {
	marked := false
	k := len(st.runs)
	for k > 0 && st.runs[k-1].end >= start {
		k--
		start = min(start, st.runs[k].start)
		marked = marked || st.runs[k].marked
	}
	st.runs = append(st.runs[:k], run{start, end, marked})
}

// emit appends the stream's bytes before b to dst, redacted, and keeps the
// rest held. The bytes from the held ones on are held, then p from base.
func emit[T string | []byte](st *Stream, dst []byte, p T, base, b int64) []byte {
	heldAt := base - int64(len(st.held))
	// take appends the stream's bytes [from, to) to dst.
	take := func(dst []byte, from, to int64) []byte {
		if from < base {
			dst = append(dst, st.held[from-heldAt:min(to, base)-heldAt]...)
			from = base
		}
		if from < to {
			dst = append(dst, p[from-base:to-base]...)
		}
		return dst
	}
	at := heldAt // the first byte not written
	k := 0
	for ; k < len(st.runs) && st.runs[k].start < b; k++ {
		r := &st.runs[k]
		dst = take(dst, at, r.start)
		if !r.marked {
			dst = append(dst, Redacted...)
			r.marked = true
		}
		if r.end >= b { // it may grow yet: write what is covered so far
			r.start, at = b, b
			break
		}
		at = r.end
	}
	st.runs = append(st.runs[:0], st.runs[k:]...)
	if at < b {
		dst = take(dst, at, b)
	}
	if b < base {
		n := copy(st.held, st.held[b-heldAt:])
		st.held = append(st.held[:n], p...)
	} else {
		st.held = append(st.held[:0], p[b-base:]...)
	}
	return dst
}
