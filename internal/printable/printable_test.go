package printable

import (
	"testing"
	"unicode/utf8"
)

// TestText: text a repository, a VM or a cloud controls reaches the
// terminal with its control, invalid and invisible characters shown.
func TestText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"tab\tkept", "tab\tkept"},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"new\nline\r", `new\x0aline\x0d`},
		{"del\x7f c1\u009b", `del\x7f c1\x9b`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{`back\slash`, `back\\slash`},
		{"rtl \u202eevil\u202c zw\u200b", `rtl \u{202E}evil\u{202C} zw\u{200B}`},
		{"tag \U000E0041 char", `tag \u{E0041} char`},
		{"ünïcödé ✓", "ünïcödé ✓"},
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCell(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"a\tb", 0, `a\x09b`},
		{"abcdef", 3, "abc…"},
		{"abc", 3, "abc"},
		{"ü\x1bxyz", 2, `ü\x1b…`},
	} {
		if got := Cell(c.in, c.max); got != c.want {
			t.Errorf("Cell(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}

func TestLines(t *testing.T) {
	if got := Lines("+echo \x1b[31m\n-old\r\n"); got != "+echo \\x1b[31m\n-old\n" {
		t.Errorf("Lines = %q", got)
	}
}

// FuzzText: whatever comes in, what goes out is UTF-8 with no control or
// hidden character but the tab.
func FuzzText(f *testing.F) {
	f.Add("\x1b[31mred\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		v := Text(s)
		if !utf8.ValidString(v) {
			t.Fatalf("Text(%q) = %q is not UTF-8", s, v)
		}
		for _, r := range v {
			if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || Hidden(r) {
				t.Fatalf("Text(%q) = %q holds %U", s, v, r)
			}
		}
	})
}
