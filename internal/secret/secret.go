// Package secret holds values that must never be printed: passwords, tokens, keys.
// A String formats, logs and marshals as "[redacted]"; only Reveal gives the value.
package secret

import (
	"encoding/json"
	"log/slog"
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

// UnmarshalText lets config decoders (YAML, JSON) fill a String.
func (s *String) UnmarshalText(b []byte) error {
	s.v = string(b)
	return nil
}
