package queue

import (
	"strings"
	"testing"

	"github.com/imagegen/imagegen/internal/secret"
)

func TestSealer(t *testing.T) {
	hexKey := strings.Repeat("0f", 32)
	a, err := NewSealer(secret.New(hexKey))
	if err != nil {
		t.Fatal(err)
	}
	b64, _ := NewSealer(secret.New("Dw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8=")) // the same 32 bytes
	other, _ := NewSealer(secret.String{})
	sealed, err := a.Seal(secret.New("pw-1234"), "b1/c1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "pw-1234") {
		t.Fatal("sealed text holds the password")
	}
	tests := []struct {
		name   string
		s      *Sealer
		ctx    string
		wantOK bool
	}{
		{"same key and context", a, "b1/c1", true},
		{"same key in base64", b64, "b1/c1", true},
		{"another build", a, "b2/c1", false},
		{"another key", other, "b1/c1", false},
	}
	for _, tc := range tests {
		pw, err := tc.s.Open(sealed, tc.ctx)
		if ok := err == nil && pw.Reveal() == "pw-1234"; ok != tc.wantOK {
			t.Errorf("%s: %q %v; want ok=%v", tc.name, pw.Reveal(), err, tc.wantOK)
		}
	}
	for _, bad := range []string{"short", strings.Repeat("z", 64)} {
		if _, err := NewSealer(secret.New(bad)); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}
