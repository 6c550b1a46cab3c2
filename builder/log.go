package builder

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/imagegen/imagegen/internal/secret"
)

// buildLog turns everything a build says into redacted LogLines for the
// observer, and keeps the script's last lines for a failure's tail.
type buildLog struct {
	cloud    string
	observer Observer
	redact   secret.Redactor
	now      func() time.Time

	mu    sync.Mutex // the observer sees one call at a time, in order
	batch []LogLine  // reused for LineBatcher calls; under mu
}

func (l *buildLog) lineAt(t time.Time, stream, text string) {
	if l.observer == nil {
		return
	}
	l.redactedLine(t, stream, l.redact.Redact(text))
}

// redactedLine passes one line redacted already (on its stream).
func (l *buildLog) redactedLine(t time.Time, stream, text string) {
	if l.observer == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observer.Line(LogLine{Time: t, Cloud: l.cloud, Stream: stream, Text: text})
}

// redactedLines passes lines already redacted (by sshexec, on the stream)
// that share a time, in one call to a LineBatcher observer.
func (l *buildLog) redactedLines(t time.Time, stream string, texts []string) {
	if l.observer == nil || len(texts) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lb, ok := l.observer.(LineBatcher)
	if !ok {
		for _, s := range texts {
			l.observer.Line(LogLine{Time: t, Cloud: l.cloud, Stream: stream, Text: s})
		}
		return
	}
	b := l.batch[:0]
	for _, s := range texts {
		b = append(b, LogLine{Time: t, Cloud: l.cloud, Stream: stream, Text: s})
	}
	lb.Lines(b)
	clear(b) // keep no output alive until the next batch
	l.batch = b
}

func (l *buildLog) phase(p Phase, at time.Time) {
	if l.observer == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observer.Phase(l.cloud, p, at)
}

// logger returns a *slog.Logger whose records become LogLines on stream,
// so drivers and imagegen's own code log through the standard API.
func (l *buildLog) logger(stream string) *slog.Logger {
	return slog.New(&lineHandler{log: l, stream: stream, level: slog.LevelInfo})
}

// lineHandler is a slog.Handler writing "LEVEL msg key=value..." lines
// (level only when it is not INFO: the log is for people).
type lineHandler struct {
	log    *buildLog
	stream string
	level  slog.Level
	attrs  []slog.Attr
	groups []string
}

func (h *lineHandler) Enabled(_ context.Context, lv slog.Level) bool { return lv >= h.level }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteByte(' ')
	}
	b.WriteString(r.Message)
	prefix := strings.Join(h.groups, ".")
	for _, a := range h.attrs {
		writeAttr(&b, "", a, h.log.redact)
	}
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, prefix, a, h.log.redact)
		return true
	})
	t := r.Time
	if t.IsZero() {
		t = h.log.now()
	}
	h.log.lineAt(t, h.stream, b.String())
	return nil
}

// writeAttr writes a as key=value, the value redacted before it is quoted:
// quoting escapes a secret's newlines, quotes or backslashes, and the line
// would not hold it as it is any more.
func writeAttr(b *bytes.Buffer, prefix string, a slog.Attr, redact secret.Redactor) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if prefix != "" {
		key = prefix + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, ga := range a.Value.Group() {
			writeAttr(b, key, ga, redact)
		}
		return
	}
	v := redact.Redact(a.Value.String())
	if strings.ContainsAny(v, " \t\n\"=") || v == "" {
		v = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(b, " %s=%s", key, v)
}

func (h *lineHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	prefix := strings.Join(h.groups, ".")
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if prefix != "" {
			a.Key = prefix + "." + a.Key
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.groups = append(append([]string(nil), h.groups...), name)
	return &h2
}

// lineWriter is an io.Writer (a VM's console) split into LogLines, holding at
// most maxLine bytes of an unfinished line. It redacts what is written as a
// stream, before cutting lines, as sshexec does the script's output.
type lineWriter struct {
	log      *buildLog
	stream   string
	mu       sync.Mutex
	redact   *secret.Stream // made at the first write
	redacted []byte         // reused: what redact let through
	buf      []byte
}

const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.redact == nil {
		w.redact = w.log.redact.Stream()
	}
	w.redacted = w.redact.Redact(w.redacted[:0], p)
	w.split(w.redacted)
	return len(p), nil
}

// split adds p to the unfinished line and passes on the lines it ends. A
// line longer than maxLine is cut in maxLine pieces (one of exactly maxLine
// is whole), as sshexec cuts the script's.
func (w *lineWriter) split(p []byte) {
	for len(p) > 0 {
		if len(w.buf) == maxLine {
			if p[0] == '\n' {
				p = p[1:]
			}
			w.flushLocked()
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 || len(w.buf)+i > maxLine {
			take := min(maxLine-len(w.buf), len(p))
			w.buf = append(w.buf, p[:take]...)
			p = p[take:]
			continue
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.flushLocked()
	}
}

func (w *lineWriter) flushLocked() {
	text := strings.TrimRight(string(w.buf), "\r")
	w.buf = w.buf[:0]
	w.log.redactedLine(w.log.now(), w.stream, text)
}

// Flush writes what the redaction held back and an unfinished last line.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.redact != nil {
		w.redacted = w.redact.Flush(w.redacted[:0])
		w.split(w.redacted)
	}
	if len(w.buf) > 0 {
		w.flushLocked()
	}
}
