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
		"%s":   fmt.Sprintf("%s", s), //nolint:staticcheck // the point: fmt's %s must not reveal it
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
