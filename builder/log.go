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

func (l *buildLog) line(stream, text string) {
	l.lineAt(l.now(), stream, text)
}

func (l *buildLog) lineAt(t time.Time, stream, text string) {
	if l.observer == nil {
		return
	}
	ll := LogLine{Time: t, Cloud: l.cloud, Stream: stream, Text: l.redact.Redact(text)}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observer.Line(ll)
}

// redactedLines passes lines already redacted (by sshexec, a whole read at
// once) that share a time, in one call to a LineBatcher observer.
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
		writeAttr(&b, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, prefix, a)
		return true
	})
	t := r.Time
	if t.IsZero() {
		t = h.log.now()
	}
	h.log.lineAt(t, h.stream, b.String())
	return nil
}

func writeAttr(b *bytes.Buffer, prefix string, a slog.Attr) {
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
			writeAttr(b, key, ga)
		}
		return
	}
	v := a.Value.String()
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
// most maxLine bytes of an unfinished line.
type lineWriter struct {
	log    *buildLog
	stream string
	mu     sync.Mutex
	buf    []byte
}

const maxLine = 64 << 10

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLine - len(w.buf)
			take := min(room, len(p))
			w.buf = append(w.buf, p[:take]...)
			p = p[take:]
			if len(w.buf) >= maxLine {
				w.flushLocked()
			}
			continue
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.flushLocked()
	}
	return n, nil
}

func (w *lineWriter) flushLocked() {
	text := strings.TrimRight(string(w.buf), "\r")
	w.buf = w.buf[:0]
	w.log.line(w.stream, text)
}

// Flush writes an unfinished last line.
func (w *lineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.flushLocked()
	}
}
