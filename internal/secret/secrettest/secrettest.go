// Package secrettest makes random secrets and logs that embed them, for
// property tests of redaction, and redacts them the slow, obvious way.
package secrettest

import (
	"math/rand/v2"
	"strings"

	"github.com/imagegen/imagegen/internal/secret"
)

// Case is a set of secrets and a text that embeds them.
type Case struct {
	Secrets []string
	Text    string
}

// Strings returns the secrets as secret.Strings.
func (c Case) Strings() []secret.String {
	out := make([]secret.String, len(c.Secrets))
	for i, s := range c.Secrets {
		out[i] = secret.New(s)
	}
	return out
}

// alphabets: small ones make secrets overlap and repeat in the text; none of
// the first ones shares a byte with [redacted], so a redacted text can be
// searched for them (Leak). The last is every byte.
var alphabets = []string{"xy", "xyz\n", "xy\n\r\xff\x00", "0123456789xyz\n\xfe", allBytes()}

func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// Options bound a Case.
type Options struct {
	MaxText int // bytes, about
	// LineCut, if set, is where a reader cuts long lines (sshexec.MaxLine):
	// some secrets are placed across such a cut.
	LineCut int
}

// Random makes a Case: secrets that repeat a byte or a few ("aaaa..."),
// that are prefixes, suffixes or overlaps of each other, that contain
// newlines, that are not UTF-8, that are too short to be redacted; and a
// text of random bytes, secrets, their fragments, secrets with a newline
// inside them (no longer the secret) and long lines.
func Random(r *rand.Rand, o Options) Case {
	alpha := alphabets[r.IntN(len(alphabets))]
	rnd := func(n int, a string) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = a[r.IntN(len(a))]
		}
		return string(b)
	}
	var c Case
	for want := 1 + r.IntN(6); len(c.Secrets) < want; {
		var s string
		var other string
		if len(c.Secrets) > 0 {
			other = c.Secrets[r.IntN(len(c.Secrets))]
		}
		switch k := r.IntN(10); {
		case k == 0: // repetitive
			n := 4 + r.IntN(300)
			if r.IntN(20) == 0 {
				n = 1000 + r.IntN(secret.MaxLen+1000) // past MaxLen too: still redacted
			}
			s = strings.Repeat(rnd(1+r.IntN(3), alpha), n)[:n]
		case k == 1 && other != "": // a prefix of another
			s = other[:r.IntN(len(other)+1)]
		case k == 2 && other != "": // a suffix of another
			s = other[r.IntN(len(other)+1):]
		case k == 3 && other != "": // overlapping another: its end, then more
			s = other[r.IntN(len(other)+1):] + rnd(r.IntN(8), alpha)
		case k == 4: // multi-line
			s = rnd(1+r.IntN(10), alpha) + "\n" + rnd(1+r.IntN(10), alpha)
		case k == 5: // too short to redact
			s = rnd(r.IntN(secret.MinLen), alpha)
		default:
			s = rnd(secret.MinLen+r.IntN(40), alpha)
		}
		c.Secrets = append(c.Secrets, s)
	}

	var b strings.Builder
	lineLen := 0 // bytes since the last newline
	write := func(s string) {
		b.WriteString(s)
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			lineLen = len(s) - i - 1
		} else {
			lineLen += len(s)
		}
	}
	size := r.IntN(o.MaxText + 1)
	for b.Len() < size {
		s := c.Secrets[r.IntN(len(c.Secrets))]
		switch k := r.IntN(12); {
		case k < 4:
			write(s)
		case k == 4 && len(s) > 1: // broken by a newline: no longer the secret
			i := 1 + r.IntN(len(s)-1)
			write(s[:i] + "\n" + s[i:])
		case k == 5: // a fragment
			i, j := r.IntN(len(s)+1), r.IntN(len(s)+1)
			write(s[min(i, j):max(i, j)])
		case k == 6:
			write("\n")
		case k == 7 && o.LineCut > 0 && len(s) > 1: // across the line cut
			cut := o.LineCut - lineLen%o.LineCut
			write(strings.Repeat(".", max(0, cut-1-r.IntN(len(s)-1))))
			write(s)
		default:
			n := r.IntN(100)
			if r.IntN(30) == 0 {
				n = r.IntN(2 * max(o.LineCut, 1000))
			}
			write(rnd(n, alpha))
		}
	}
	c.Text = b.String()
	return c
}

// Reference redacts text the obvious way: every byte of every occurrence
// of a secret (at least secret.MinLen long) is covered, and each stretch of
// covered bytes becomes one [redacted].
func Reference(secrets []string, text string) string {
	covered := make([]bool, len(text))
	for _, s := range secrets {
		if len(s) < secret.MinLen {
			continue
		}
		done := 0 // covered[:done] is set for s already
		for i := 0; i+len(s) <= len(text); i++ {
			if text[i] == s[0] && strings.HasPrefix(text[i:], s) {
				for j := max(i, done); j < i+len(s); j++ {
					covered[j] = true
				}
				done = i + len(s)
			}
		}
	}
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		switch {
		case !covered[i]:
			b.WriteByte(text[i])
		case i == 0 || !covered[i-1]:
			b.WriteString(secret.Redacted)
		}
	}
	return b.String()
}

// Leak returns a secret found in out, if any: a redacted text holds none
// of the secrets that are long enough to redact and share no byte with
// [redacted] (one that does may be made anew by the marker next to text).
func Leak(secrets []string, out string) (string, bool) {
	for _, s := range secrets {
		if len(s) >= secret.MinLen && !strings.ContainsAny(s, secret.Redacted) && strings.Contains(out, s) {
			return s, true
		}
	}
	return "", false
}

// Typical is six secrets like a service's: a cloud password, a GitHub
// token, a webhook secret, an API token, a Redis password, a key.
var Typical = []secret.String{
	secret.New("Pa55-w0rd-cloud"),
	secret.New("ghs_16C7e42F292c6912E7710c838347Ae178B4a"),
	secret.New("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"),
	secret.New("tok_Z2l2ZW1lYWxsdGhlc2VjcmV0cw"),
	secret.New("redis-S3cr3t-pw-xyz"),
	secret.New("k3y/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/="),
}

// AptLog is about n bytes of apt-like output: words, numbers, paths,
// lines of 5 to 20 words; the same for the same n.
func AptLog(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB] Setting up libc6:amd64 (2.36-9+deb12u4) ... " +
		"Unpacking gcc-12 Selecting previously unselected package Preparing to unpack .../00-linux-libc-dev_6.1.76-1_amd64.deb " +
		"Processing triggers for man-db (2.11.2-2) done. Reading package lists... Building dependency tree... Reading state information... " +
		"0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded")
	var b strings.Builder
	for b.Len() < n {
		for i := range 5 + r.IntN(15) {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		b.WriteByte('\n')
	}
	return b.String()
}
