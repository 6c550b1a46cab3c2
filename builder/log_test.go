package builder

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/internal/secret"
)

// TestConsoleRedactsAsAStream: the console (a lineWriter) redacts what is
// written before cutting lines: a secret split between writes, a multi-line
// key, a secret across the maxLine cut, and at the end what was held back.
func TestConsoleRedactsAsAStream(t *testing.T) {
	const pw, key = "hunter2-very-secret", "-----BEGIN KEY-----\nMIIE\n-----END KEY-----"
	rec := &recorder{}
	l := &buildLog{cloud: "sim", observer: rec, redact: secret.NewRedactor(secret.New(pw), secret.New(key)), now: time.Now}
	w := &lineWriter{log: l, stream: StreamConsole}
	long := strings.Repeat(".", maxLine-5)
	for _, s := range []string{"boot: pw=hunt", "er2-very-secret ok\n", key[:22], key[22:] + "\n", long, pw + "\nlast: " + key[:25]} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	want := []string{"boot: pw=[redacted] ok", "[redacted]", long + "[reda", "cted]", "last: " + key[:19], key[20:24]}
	if got := rec.text(StreamConsole); !slices.Equal(got, want) {
		t.Errorf("got %.300q, want %.300q", got, want)
	}
}

// TestLoggerRedactsBeforeQuoting: a secret in an attribute is redacted
// before the value is quoted (quoting would escape its quote, backslash or
// newline, and the line would no longer hold it as it is).
func TestLoggerRedactsBeforeQuoting(t *testing.T) {
	const pw = `p"w\se cret` + "\n!"
	rec := &recorder{}
	l := &buildLog{cloud: "sim", observer: rec, redact: secret.NewRedactor(secret.New(pw)), now: time.Now}
	l.logger(StreamImagegen).Error("login failed", "err", errors.New("bad password "+pw), "pw", pw)
	got := rec.text(StreamImagegen)
	if len(got) != 1 || got[0] != `ERROR login failed err="bad password [redacted]" pw=[redacted]` {
		t.Errorf("got %q", got)
	}
}

// TestConsoleCutsLongLines: the console's lines are cut as sshexec cuts the
// script's (a line of exactly maxLine is whole, a longer one is cut in
// maxLine pieces), however the writes fall.
func TestConsoleCutsLongLines(t *testing.T) {
	exact, long := strings.Repeat("e", maxLine), strings.Repeat("x", 2*maxLine+7)
	text := exact + "\n" + exact + "y\n" + long + "\nshort\r\nend"
	want := []string{exact, exact, "y", long[:maxLine], long[maxLine : 2*maxLine], long[2*maxLine:], "short", "end"}
	for _, size := range []int{1, 7, 4096, maxLine, maxLine + 1, len(text)} {
		rec := &recorder{}
		w := &lineWriter{log: &buildLog{cloud: "sim", observer: rec, now: time.Now}, stream: StreamConsole}
		for p := text; len(p) > 0; {
			n := min(size, len(p))
			_, _ = w.Write([]byte(p[:n]))
			p = p[n:]
		}
		w.Flush()
		if got := rec.text(StreamConsole); !slices.Equal(got, want) {
			t.Errorf("writes of %d bytes: got %d lines %.200q, want %d lines", size, len(got), got, len(want))
		}
	}
}
