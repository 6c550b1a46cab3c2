package secret_test

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/secret/secrettest"
)

// redactInPieces runs text through a Stream in pieces of random sizes, from
// 1 byte to maxPiece.
func redactInPieces(r secret.Redactor, text string, rng *rand.Rand, maxPiece int) string {
	st := r.Stream()
	var out []byte
	for p := []byte(text); len(p) > 0; {
		n := min(len(p), 1+rng.IntN(maxPiece))
		out = st.Redact(out, p[:n])
		p = p[n:]
	}
	return string(st.Flush(out))
}

// TestRedactProperty: for random secrets and logs, redacting in random
// pieces gives what redacting the whole text the obvious way gives, no
// secret is left, and text without secrets comes out unchanged.
func TestRedactProperty(t *testing.T) {
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	for i := range iterations {
		rng := rand.New(rand.NewPCG(22, uint64(i)))
		c := secrettest.Random(rng, secrettest.Options{MaxText: 4000})
		r := secret.NewRedactor(c.Strings()...)
		want := secrettest.Reference(c.Secrets, c.Text)
		check := func(how, got string) {
			t.Helper()
			if got != want {
				t.Fatalf("case %d, %s: secrets %.300q\ntext %.300q\ngot  %.300q\nwant %.300q", i, how, c.Secrets, c.Text, got, want)
			}
			if s, ok := secrettest.Leak(c.Secrets, got); ok {
				t.Fatalf("case %d, %s: secret %q left in %.300q", i, how, s, got)
			}
		}
		check("whole", r.Redact(c.Text))
		check("in pieces of up to 16 bytes", redactInPieces(r, c.Text, rng, 16))
		check("in pieces of up to 1 KiB", redactInPieces(r, c.Text, rng, 1024))
		if clean := strings.NewReplacer(stripPairs(c.Secrets)...).Replace(c.Text); secrettest.Reference(c.Secrets, clean) == clean {
			if got := r.Redact(clean); got != clean {
				t.Fatalf("case %d: clean text changed: %q → %q", i, clean, got)
			}
		}
	}
}

// stripPairs replaces every secret's first byte with '#': most texts have
// no secret left then (Reference says which).
func stripPairs(secrets []string) []string {
	var pairs []string
	for _, s := range secrets {
		if s != "" {
			pairs = append(pairs, s[:1], "#")
		}
	}
	return pairs
}

// FuzzRedact: secrets (separated by "\x00\x00"), a text, and where the
// stream is cut; checked against the obvious redaction.
func FuzzRedact(f *testing.F) {
	f.Add([]byte("aaaa\x00\x00abcab\x00\x00x\ny"), []byte("aaaaaaa abcabcab x\nyx\ny"), uint64(1))
	f.Add([]byte("line1\nline2"), []byte("a\nline1\nline2\nline1\n\nline2"), uint64(7))
	f.Add([]byte("\xff\xfe\x00\x01"), []byte("\xff\xfe\x00\x01\xff\xfe\x00"), uint64(0))
	f.Fuzz(func(t *testing.T, secrets, text []byte, seed uint64) {
		var ss []string
		var strs []secret.String
		for _, s := range bytes.Split(secrets, []byte("\x00\x00")) {
			ss = append(ss, string(s))
			strs = append(strs, secret.New(string(s)))
		}
		r := secret.NewRedactor(strs...)
		want := secrettest.Reference(ss, string(text))
		if got := r.Redact(string(text)); got != want {
			t.Fatalf("whole: got %q, want %q", got, want)
		}
		rng := rand.New(rand.NewPCG(seed, seed))
		if got := redactInPieces(r, string(text), rng, 1+int(seed%64)); got != want {
			t.Fatalf("in pieces: got %q, want %q", got, want)
		}
	})
}
