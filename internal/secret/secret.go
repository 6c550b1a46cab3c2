// Package secret holds values that must never be printed: passwords, tokens, keys.
// A String formats, logs and marshals as "[redacted]"; only Reveal gives the value.
package secret

import (
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
)

// Redacted is what a secret prints as.
const Redacted = "[redacted]"

// String is a secret value. Its zero value is the empty secret.
type String struct{ v string }

// New wraps s.
func New(s string) String { return String{v: s} }

// Reveal returns the secret itself. Call it only where the value is handed to
// the thing that needs it (an HTTP header, a cloud client, a cipher).
func (s String) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.v == "" }

// String never returns the value.
func (s String) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from printing the value.
func (s String) GoString() string { return `secret.String("` + s.String() + `")` }

// LogValue keeps slog from printing the value.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON keeps encoding/json from writing the value.
func (s String) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText keeps text encoders (and YAML) from writing the value.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Redactor replaces every occurrence of known secrets in text. The zero value
// redacts nothing. Secrets shorter than MinLen are ignored: redacting "a" would
// make every log unreadable and protects nothing.
type Redactor struct {
	r *strings.Replacer
}

// MinLen is the shortest secret a Redactor replaces.
const MinLen = 4

// NewRedactor returns a Redactor for the given secrets.
func NewRedactor(secrets ...String) Redactor {
	var vals []string
	seen := map[string]bool{}
	for _, s := range secrets {
		v := s.Reveal()
		if len(v) < MinLen || seen[v] {
			continue
		}
		seen[v] = true
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return Redactor{}
	}
	// Longest first, so a secret that contains another is replaced whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	pairs := make([]string, 0, 2*len(vals))
	for _, v := range vals {
		pairs = append(pairs, v, Redacted)
	}
	return Redactor{r: strings.NewReplacer(pairs...)}
}

// Redact returns text with every secret replaced by [redacted].
func (r Redactor) Redact(text string) string {
	if r.r == nil {
		return text
	}
	return r.r.Replace(text)
}

// UnmarshalText lets config decoders (YAML, JSON) fill a String.
func (s *String) UnmarshalText(b []byte) error {
	s.v = string(b)
	return nil
}
