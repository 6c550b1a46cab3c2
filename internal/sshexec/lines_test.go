package sshexec

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/secret/secrettest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// chunkReader hands out its text in reads of the given sizes (the last size
// repeats), as a network does.
type chunkReader struct {
	s     string
	sizes []int
	reads int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := r.sizes[min(r.reads, len(r.sizes)-1)]
	r.reads++
	n = copy(p[:min(len(p), n)], r.s)
	r.s = r.s[n:]
	return n, nil
}

// batch is one emit call as readLines made it.
type batch struct {
	t     time.Time
	lines []string
}

func readAll(t *testing.T, text string, sizes []int, redact secret.Redactor) ([]string, []batch) {
	t.Helper()
	var all []string
	var batches []batch
	readLines(&chunkReader{s: text, sizes: sizes}, redact, func(at time.Time, lines []string) {
		if at.IsZero() {
			t.Fatal("a batch without a time")
		}
		// The slice is reused after emit returns: keep a copy.
		batches = append(batches, batch{at, slices.Clone(lines)})
		all = append(all, lines...)
	})
	return all, batches
}

// TestReadLinesWhateverTheReads: the lines are the same however the output
// is split into reads, long lines are cut at the same places, and a line of
// exactly MaxLine stays whole.
func TestReadLinesWhateverTheReads(t *testing.T) {
	long := strings.Repeat("x", 200000)
	exact := strings.Repeat("e", MaxLine)
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"lines", "one\ntwo\nthree\n", []string{"one", "two", "three"}},
		{"crlf and empty lines", "a\r\n\n\r\nb\r\r\n", []string{"a", "", "", "b"}},
		{"unfinished last line", "a\nb", []string{"a", "b"}},
		{"a lone carriage return at the end", "a\n\r", []string{"a"}},
		{"long line cut in MaxLine pieces", long + "\nshort\n",
			[]string{long[:MaxLine], long[MaxLine : 2*MaxLine], long[2*MaxLine : 3*MaxLine], long[3*MaxLine:], "short"}},
		{"long unfinished line", long,
			[]string{long[:MaxLine], long[MaxLine : 2*MaxLine], long[2*MaxLine : 3*MaxLine], long[3*MaxLine:]}},
		{"a line of exactly MaxLine is whole", exact + "\n" + exact + "y\n", []string{exact, exact, "y"}},
		{"many short lines", strings.Repeat("0123456789\n", 20000), slices.Repeat([]string{"0123456789"}, 20000)},
	}
	reads := map[string][]int{
		"1 byte":             {1},
		"7 bytes":            {7},
		"4 KiB":              {4096},
		"odd then large":     {3, 65537, 1 << 20},
		"as large as it can": {1 << 20},
	}
	for _, tt := range tests {
		for rname, sizes := range reads {
			if len(tt.text) > 100000 && sizes[0] < 4096 && len(sizes) == 1 {
				continue // byte by byte through 200 kB proves nothing more, slowly
			}
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				got, _ := readAll(t, tt.text, sizes, secret.Redactor{})
				if !slices.Equal(got, tt.want) {
					t.Errorf("got %d lines %.200q, want %d lines %.200q", len(got), got, len(tt.want), tt.want)
				}
			})
		}
	}
}

// TestReadLinesBatchPerRead: the lines a read completes come in one call
// with one time, in order, and a read completing nothing makes no call.
func TestReadLinesBatchPerRead(t *testing.T) {
	text := "a\nb\nc" + "d\ne\n" // reads: "a\nb\nc", "d\ne\n"
	_, batches := readAll(t, text, []int{5, 4}, secret.Redactor{})
	want := [][]string{{"a", "b"}, {"cd", "e"}}
	if len(batches) != len(want) {
		t.Fatalf("%d batches %v, want %d", len(batches), batches, len(want))
	}
	for i, b := range batches {
		if !slices.Equal(b.lines, want[i]) {
			t.Errorf("batch %d: %q, want %q", i, b.lines, want[i])
		}
	}
	if batches[1].t.Before(batches[0].t) {
		t.Errorf("batch times go back: %v then %v", batches[0].t, batches[1].t)
	}

	// 100-byte lines read 32 KiB at a time: hundreds of lines a call.
	lines := strings.Repeat(strings.Repeat("z", 99)+"\n", 10000)
	got, batches := readAll(t, lines, []int{1 << 20}, secret.Redactor{})
	if len(got) != 10000 || len(batches) > len(lines)/(readChunk/2) {
		t.Errorf("%d lines in %d batches; want 10000 lines in at most %d", len(got), len(batches), len(lines)/(readChunk/2))
	}
}

// TestReadLinesRedactsAcrossReads: a secret split between two reads, at
// every place, is still replaced, with one secret or several; a secret with
// newlines in it (a key) is replaced whole, while the halves of one printed
// on two lines are not the secret; a secret across the MaxLine cut of a
// long line is replaced before the line is cut (the [redacted] may be).
func TestReadLinesRedactsAcrossReads(t *testing.T) {
	const pw, token, key = "hunter2-very-secret", "tok-0123456789", "-----BEGIN KEY-----\nMIIE\r\n-----END KEY-----\n"
	long := strings.Repeat(".", MaxLine-5)
	tests := []struct {
		name    string
		secrets []secret.String
		text    string
		want    []string
		cuts    []int // where the first read ends; default: everywhere
		then    int   // the size of the next reads; default: as large as they can be
	}{
		{"one secret", []secret.String{secret.New(pw)},
			"before\npw=" + pw + " end\nafter\n", []string{"before", "pw=[redacted] end", "after"}, nil, 0},
		{"two secrets", []secret.String{secret.New(pw), secret.New(token)},
			"t=" + token + "\npw=" + pw + "\n", []string{"t=[redacted]", "pw=[redacted]"}, nil, 0},
		{"multi-line secret", []secret.String{secret.New(key)},
			"key:\n" + key + "end\n" + key[:19] + "\n", []string{"key:", "[redacted]end", "-----BEGIN KEY-----"}, nil, 0},
		{"a secret broken by a newline is two harmless halves", []secret.String{secret.New(pw)},
			"pw=hunter2-\nvery-secret\n", []string{"pw=hunter2-", "very-secret"}, nil, 0},
		{"across the MaxLine cut", []secret.String{secret.New(pw)},
			long + pw + "\nnext\n", []string{long + "[reda", "cted]", "next"},
			[]int{1, 2, 3, 4, 5, 6, 7}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := secret.NewRedactor(tt.secrets...)
			cuts := tt.cuts
			if cuts == nil {
				for cut := 1; cut < len(tt.text); cut++ {
					cuts = append(cuts, cut)
				}
			}
			for _, cut := range cuts {
				got, _ := readAll(t, tt.text, []int{cut, cmp.Or(tt.then, 1<<20)}, r)
				if !slices.Equal(got, tt.want) {
					t.Fatalf("first read of %d bytes: got %.200q, want %.200q", cut, got, tt.want)
				}
			}
		})
	}
}

// TestRunScriptToBatchesAndRedacts: over a real sshd, a script's output
// arrives in batches, in order, each stamped once; a secret printed in two
// writes a moment apart (so in two reads) is redacted, in the lines and in
// the failed script's tail.
func TestRunScriptToBatchesAndRedacts(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)
	const pw = "hunter2-very-secret"
	red := secret.NewRedactor(secret.New(pw))
	var mu sync.Mutex
	var stdout, stderr []string
	calls := 0
	out := Output{
		Redact: red,
		Batch: func(b Batch) {
			mu.Lock()
			defer mu.Unlock()
			if b.Time.IsZero() || len(b.Lines) == 0 {
				t.Errorf("batch %+v", b)
			}
			calls++
			switch b.Stream {
			case "stdout":
				stdout = append(stdout, b.Lines...)
			case "stderr":
				stderr = append(stderr, b.Lines...)
			}
		},
	}
	script := fmt.Sprintf("seq 1 20000\nprintf 'pw=%s'; sleep 0.3; printf -- '%s tail\\n'\necho oops >&2\nexit 3", pw[:7], pw[7:])
	code, err := c.RunScriptTo(context.Background(), "batches", script, out)
	var ee *ExitError
	if code != 3 || !errors.As(err, &ee) {
		t.Fatalf("code %d err %v, want 3 and an *ExitError", code, err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := make([]string, 0, 20001)
	for i := 1; i <= 20000; i++ {
		want = append(want, fmt.Sprint(i))
	}
	want = append(want, "pw=[redacted] tail")
	if !slices.Equal(stdout, want) {
		t.Errorf("stdout: %d lines, last %q; want %d lines in order, last %q", len(stdout), stdout[max(0, len(stdout)-1):], len(want), want[len(want)-1])
	}
	if !slices.Equal(stderr, []string{"oops"}) {
		t.Errorf("stderr %q", stderr)
	}
	if calls >= 20000/10 {
		t.Errorf("%d calls for 20002 lines: not batched", calls)
	}
	if last := ee.Tail[len(ee.Tail)-2:]; !slices.Contains(last, "pw=[redacted] tail") || strings.Contains(err.Error(), pw) {
		t.Errorf("tail %q, error %q: want the redacted line and no secret", ee.Tail, err)
	}
}

// BenchmarkReadLines is sshexec's own share of streaming, without SSH:
// 100-byte lines handed over 32 KiB at a time (as the channel does), through
// readLines and run's emit (lock, tail, callback), as RunScriptTo does.
func BenchmarkReadLines(b *testing.B) {
	text := strings.Repeat(strings.Repeat("x", 99)+"\n", 100000) // 10 MB
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	tail := newTail(TailLines)
	var mu sync.Mutex
	n := 0
	out := func(bt Batch) { n += len(bt.Lines) }
	for b.Loop() {
		readLines(&chunkReader{s: text, sizes: []int{32 << 10}}, secret.Redactor{}, func(t time.Time, lines []string) {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range lines[max(0, len(lines)-TailLines):] {
				tail.add(s)
			}
			out(Batch{Time: t, Stream: "stdout", Lines: lines})
		})
	}
	if n != 100000*b.N {
		b.Fatalf("%d lines, want %d", n, 100000*b.N)
	}
}

// randomReads returns read sizes for chunkReader: bytes, a few KiB, more
// than MaxLine, in a random mix; the last one (repeated) is at least 4 KiB.
func randomReads(rng *rand.Rand) []int {
	sizes := make([]int, 1+rng.IntN(40))
	for i := range sizes {
		switch rng.IntN(3) {
		case 0:
			sizes[i] = 1 + rng.IntN(16)
		case 1:
			sizes[i] = 1 + rng.IntN(4096)
		default:
			sizes[i] = MaxLine - 100 + rng.IntN(10000)
		}
	}
	sizes[len(sizes)-1] = max(sizes[len(sizes)-1], 4096)
	return sizes
}

// TestReadLinesRedactProperty: random secrets (repetitive, overlapping,
// multi-line, not UTF-8) in random output, read in random pieces and cut
// into lines as the worker does: the lines are those of the output
// redacted whole, so no secret is in them, however the reads fell, where a
// long line was cut, across lines; output without secrets is unchanged.
func TestReadLinesRedactProperty(t *testing.T) {
	iterations := 300
	if testing.Short() {
		iterations = 30
	}
	for i := range iterations {
		rng := rand.New(rand.NewPCG(22, uint64(i)))
		maxText := 3000
		if i%4 == 0 {
			maxText = 3 * MaxLine
		}
		c := secrettest.Random(rng, secrettest.Options{MaxText: maxText, LineCut: MaxLine})
		sizes := randomReads(rng)
		got, _ := readAll(t, c.Text, sizes, secret.NewRedactor(c.Strings()...))
		want := splitLines(nil, secrettest.Reference(c.Secrets, c.Text))
		if !slices.Equal(got, want) {
			t.Fatalf("case %d, reads %v: secrets %.300q\ntext %.300q\ngot  %.300q\nwant %.300q", i, sizes, c.Secrets, c.Text, got, want)
		}
		for _, l := range got {
			if s, ok := secrettest.Leak(c.Secrets, l); ok {
				t.Fatalf("case %d: secret %q in line %.300q", i, s, l)
			}
		}
	}
}

// FuzzReadLines: secrets (separated by "\x00\x00"), output (after a filler
// that brings it near the MaxLine cut, if cut is not 0) and read sizes.
func FuzzReadLines(f *testing.F) {
	f.Add([]byte("hunter2-very\nsecret\x00\x00aaaa"), []byte("pw=hunter2-very\nsecret aaaaaa\nhunter2-very\n\nsecret"), uint16(5), uint64(3))
	f.Add([]byte("0123456789"), []byte("0123456789\n"), uint16(4), uint64(9))
	f.Fuzz(func(t *testing.T, secrets, text []byte, cut uint16, seed uint64) {
		var ss []string
		var strs []secret.String
		for _, s := range bytes.Split(secrets, []byte("\x00\x00")) {
			ss = append(ss, string(s))
			strs = append(strs, secret.New(string(s)))
		}
		out := string(text)
		if cut > 0 {
			out = strings.Repeat(".", MaxLine-int(cut)%MaxLine) + out
		}
		rng := rand.New(rand.NewPCG(seed, seed))
		got, _ := readAll(t, out, randomReads(rng), secret.NewRedactor(strs...))
		if want := splitLines(nil, secrettest.Reference(ss, out)); !slices.Equal(got, want) {
			t.Fatalf("got %.300q, want %.300q", got, want)
		}
	})
}

// BenchmarkReadLinesRedacted is BenchmarkReadLines with the service's
// secrets redacted on the stream, in 100-byte lines of one letter ("yes")
// and in apt-like output.
func BenchmarkReadLinesRedacted(b *testing.B) {
	texts := []struct{ name, text string }{
		{"yes", strings.Repeat(strings.Repeat("x", 99)+"\n", 100000)},
		{"apt", secrettest.AptLog(10_000_000)},
	}
	for _, tx := range texts {
		for _, n := range []int{0, 1, 6} {
			b.Run(fmt.Sprintf("%s/secrets=%d", tx.name, n), func(b *testing.B) {
				red := secret.NewRedactor(secrettest.Typical[:n]...)
				b.SetBytes(int64(len(tx.text)))
				b.ReportAllocs()
				tail := newTail(TailLines)
				var mu sync.Mutex
				for b.Loop() {
					readLines(&chunkReader{s: tx.text, sizes: []int{32 << 10}}, red, func(t time.Time, lines []string) {
						mu.Lock()
						defer mu.Unlock()
						for _, s := range lines[max(0, len(lines)-TailLines):] {
							tail.add(s)
						}
					})
				}
			})
		}
	}
}
