package secret_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/secret/secrettest"
)

// BenchmarkStream: redacting a log as it streams, 32 KiB at a time.
func BenchmarkStream(b *testing.B) {
	texts := []struct{ name, text string }{
		{"yes", strings.Repeat(strings.Repeat("x", 99)+"\n", 100_000)},
		{"apt", secrettest.AptLog(10_000_000)},
	}
	for _, tx := range texts {
		for _, n := range []int{1, 6} {
			b.Run(fmt.Sprintf("%s/secrets=%d", tx.name, n), func(b *testing.B) {
				r := secret.NewRedactor(secrettest.Typical[:n]...)
				in := []byte(tx.text)
				buf := make([]byte, 0, 64<<10)
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				for b.Loop() {
					st := r.Stream()
					for p := in; len(p) > 0; {
						k := min(len(p), 32<<10)
						buf = st.Redact(buf[:0], p[:k])
						p = p[k:]
					}
					buf = st.Flush(buf[:0])
				}
			})
		}
	}
}

// BenchmarkLongRepetitiveSecret: building a Redactor for a password of one
// letter and redacting a log with it, where the old Redactor took 7.7 CPU
// seconds (100 kB) and minutes (900 kB).
func BenchmarkLongRepetitiveSecret(b *testing.B) {
	for _, n := range []int{100_000, 900_000} {
		b.Run(fmt.Sprintf("%dkB", n/1000), func(b *testing.B) {
			pw := strings.Repeat("a", n)
			log := "pw=" + pw + "\n" + pw[:n/2] + "\n" + strings.Repeat("hello world\n", 1000)
			b.SetBytes(int64(len(log)))
			b.ReportAllocs()
			for b.Loop() {
				if out := secret.NewRedactor(secret.New(pw)).Redact(log); strings.Contains(out, pw) {
					b.Fatal("not redacted")
				}
			}
		})
	}
}
