package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestStringNeverPrints(t *testing.T) {
	const pw = "hunter2-very-secret"
	s := New(pw)
	type holder struct {
		Password String
		Ptr      *String
	}
	h := holder{Password: s, Ptr: &s}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "pw", s, "holder", h)
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", s),
		"%s":   fmt.Sprintf("%s", s),
		"%+v":  fmt.Sprintf("%+v", h),
		"%#v":  fmt.Sprintf("%#v", h),
		"json": string(js),
		"slog": logged.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, pw) {
			t.Errorf("%s printed the secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s does not say %s: %s", name, Redacted, out)
		}
	}
	if s.Reveal() != pw {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
	if New("").String() != "" || !New("").IsZero() {
		t.Fatal("the empty secret should print empty and be zero")
	}
}

func TestUnmarshalText(t *testing.T) {
	var v struct{ Token String }
	if err := json.Unmarshal([]byte(`{"Token":"abc123456"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.Token.Reveal() != "abc123456" {
		t.Fatalf("got %q", v.Token.Reveal())
	}
}

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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewRedactor(tt.secrets...).Redact(tt.in); got != tt.want {
				t.Fatalf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
