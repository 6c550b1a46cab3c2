package secret

import (
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRedactor(t *testing.T) {
	tests := []struct {
		name    string
		secrets []String
		in      string
		want    string
	}{
		{"none", nil, "password is pw12345", "password is pw12345"},
		{"one", []String{New("pw12345")}, "password is pw12345!", "password is [redacted]!"},
		{"repeated", []String{New("s3cret")}, "s3cret s3cret", "[redacted] [redacted]"},
		{"longest first", []String{New("abcd"), New("abcdefgh")}, "x abcdefgh y abcd", "x [redacted] y [redacted]"},
		{"too short is kept", []String{New("ab")}, "about abba", "about abba"},
		{"empty secret", []String{New("")}, "text", "text"},
		{"touching occurrences are one", []String{New("s3cret")}, "s3crets3cret!", "[redacted]!"},
		{"overlapping occurrences leave nothing", []String{New("abcab")}, "xabcabcaby", "x[redacted]y"},
		{"one inside another", []String{New("bcd"), New("xbcdx"), New("cdxq")}, "1xbcdxq2", "1[redacted]2"},
		{"repetitive", []String{New("aaaa")}, "baaaaaaab aaab", "b[redacted]b aaab"},
		{"a prefix and a suffix", []String{New("tok-123"), New("tok-"), New("-123")}, "tok-12 tok-123 -123", "[redacted]12 [redacted] [redacted]"},
		{"multi-line", []String{New("line1\nline2")}, "key:\nline1\nline2\nend", "key:\n[redacted]\nend"},
		{"multi-line broken differently", []String{New("line1\nline2")}, "line1\n\nline2", "line1\n\nline2"},
		{"not UTF-8", []String{New("\xff\xfe\x00\x01")}, "a\xff\xfe\x00\x01b\xff\xfe", "a[redacted]b\xff\xfe"},
		{"duplicates", []String{New("pw12345"), New("pw12345")}, "pw12345", "[redacted]"},
		{"at the ends", []String{New("pw12345")}, "pw12345 pw12345", "[redacted] [redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRedactor(tt.secrets...)
			if got := r.Redact(tt.in); got != tt.want {
				t.Fatalf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// The same whatever the pieces: two at every place, and a byte at a time.
			for cut := 0; cut <= len(tt.in); cut++ {
				st := r.Stream()
				out := st.Redact(nil, []byte(tt.in[:cut]))
				out = st.Redact(out, []byte(tt.in[cut:]))
				if got := string(st.Flush(out)); got != tt.want {
					t.Fatalf("in two pieces cut at %d: %q, want %q", cut, got, tt.want)
				}
			}
			st := r.Stream()
			var out []byte
			for i := range len(tt.in) {
				out = st.Redact(out, []byte{tt.in[i]})
			}
			if got := string(st.Flush(out)); got != tt.want {
				t.Fatalf("a byte at a time: %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRedactKeepsCleanText: text without a secret is the same string.
func TestRedactKeepsCleanText(t *testing.T) {
	r := NewRedactor(New("hunter2-very-secret"), New("tok-0123"))
	in := strings.Repeat("hunter2-very-secre tok-012 ", 100)
	if got := r.Redact(in); got != in {
		t.Fatalf("changed: %q", got)
	}
	if n := testing.AllocsPerRun(10, func() { r.Redact(in) }); n != 0 {
		t.Errorf("%v allocations for a text without secrets", n)
	}
}

// TestStreamHoldsBackTheLongestSecret: a Stream holds back at most
// Lookbehind bytes, even inside a run of secrets that goes on and on (it
// writes one [redacted] at its start), and writes everything else at once.
func TestStreamHoldsBackTheLongestSecret(t *testing.T) {
	long := strings.Repeat("k", 3000) + "!"
	r := NewRedactor(New("aaaa"), New("aaab"), New(long), New("line1\nline2"))
	if r.Lookbehind() != len(long) {
		t.Fatalf("Lookbehind %d, want %d", r.Lookbehind(), len(long))
	}
	st := r.Stream()
	var out []byte
	in := 0
	feed := func(s string) {
		out = st.Redact(out, []byte(s))
		in += len(s)
		if len(st.held) > r.Lookbehind() {
			t.Fatalf("after %d bytes, %d held back; Lookbehind is %d", in, len(st.held), r.Lookbehind())
		}
	}
	feed("start ")
	for range 1000 {
		feed(strings.Repeat("a", 1000)) // one long run: a megabyte of secrets
	}
	if got := string(out); got != "start "+Redacted {
		t.Fatalf("during the run: %q", got)
	}
	feed("b end\nline1\n")
	if got := string(out); got != "start "+Redacted+" end\n" {
		t.Fatalf("after the run: %q (line1 may begin a secret: it waits)", got)
	}
	feed("line3\n" + strings.Repeat("k", 5000))
	if got := string(out); got != "start "+Redacted+" end\nline1\nline3\n"+strings.Repeat("k", 5000-len(long)+1) {
		t.Fatalf("later: %q", got)
	}
	if got := string(st.Flush(out)); got != "start "+Redacted+" end\nline1\nline3\n"+strings.Repeat("k", 5000) {
		t.Fatalf("flushed: %q", got)
	}
	if len(st.runs) > 0 || len(st.held) > 0 {
		t.Fatalf("a flushed stream keeps %d runs, %d bytes", len(st.runs), len(st.held))
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(New(strings.Repeat("x", MaxLen))); err != nil {
		t.Fatalf("a secret of MaxLen: %v", err)
	}
	err := Validate(New(strings.Repeat("x", MaxLen+1)))
	if !errors.Is(err, ErrTooLong) || err.Error() != "secret too long: 4097 bytes, at most 4096 (4 KiB) are allowed so that build logs can be redacted as they stream" {
		t.Fatalf("err %v", err)
	}
}

// TestLongRepetitiveSecretIsLinear: a 900 kB password of one letter, printed
// in a log, took minutes to redact (a quadratic Boyer–Moore table).
func TestLongRepetitiveSecretIsLinear(t *testing.T) {
	pw := strings.Repeat("a", 900_000)
	log := "x" + pw + "y\n" + pw[:450_000] + "b\n" + pw[1:] + "\n" + strings.Repeat("aaaab", 100_000)
	start := time.Now()
	r := NewRedactor(New(pw), New(pw[:450_000]+"b"))
	got := r.Redact(log)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %s", d)
	}
	if want := "x" + Redacted + "y\n" + Redacted + "\n" + pw[1:] + "\n" + strings.Repeat("aaaab", 100_000); got != want {
		t.Errorf("got %.100q…, want %.100q…", got, want)
	}
}

// TestRedactorConcurrentUse: one Redactor serves many goroutines at once
// (a build's two output streams, its console, its own log lines), each with
// its own Stream. Run with -race.
func TestRedactorConcurrentUse(t *testing.T) {
	r := NewRedactor(New("hunter2-very-secret"), New("aaaa"), New("line1\nline2"))
	in := strings.Repeat("x hunter2-very-secret aaaaa line1\nline2 y\n", 200)
	want := strings.Repeat("x [redacted] [redacted] [redacted] y\n", 200)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			if g%2 == 0 {
				if got := r.Redact(in); got != want {
					t.Errorf("Redact: %.100q", got)
				}
				return
			}
			st := r.Stream()
			var out []byte
			for p := []byte(in); len(p) > 0; p = p[min(len(p), g):] {
				out = st.Redact(out, p[:min(len(p), g)])
			}
			if got := string(st.Flush(out)); got != want {
				t.Errorf("Stream in pieces of %d: %.100q", g, got)
			}
		})
	}
	wg.Wait()
}

// TestRedactorsShareTheirAutomaton: Redactors of the same secrets (in any
// order, duplicates too) share one automaton while one is alive; other
// secrets get their own; an automaton no Redactor holds is let go.
func TestRedactorsShareTheirAutomaton(t *testing.T) {
	a, b := New("shared-secret-one"), New("shared-secret-two")
	r1 := NewRedactor(a, b)
	r2 := NewRedactor(b, a, a)
	if r1.m != r2.m {
		t.Error("two Redactors of the same secrets have two automata")
	}
	if r3 := NewRedactor(a, New("another-secret")); r3.m == r1.m {
		t.Error("Redactors of different secrets share an automaton")
	}
	if got := r2.Redact("x shared-secret-two y"); got != "x "+Redacted+" y" {
		t.Errorf("the shared automaton redacts %q", got)
	}
	NewRedactor(New("short-lived-secret"))
	key := matcherKey([]string{"short-lived-secret"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if _, ok := matchers.Load(key); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the automaton of a Redactor no one holds is still kept after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := matchers.Load(matcherKey([]string{"shared-secret-one", "shared-secret-two"})); !ok {
		t.Error("the automaton of live Redactors was dropped")
	}
	runtime.KeepAlive(r1)
	runtime.KeepAlive(r2)
}
