// Package printable makes text that a repository, a VM or a cloud controls
// safe to show on a terminal, in a table or on a page: control characters
// (ESC and its sequences among them) and invalid UTF-8 are written as \xNN,
// the invisible characters that reorder or hide text (bidirectional
// controls, zero-width and other format characters) as \u{XXXX}, and a
// backslash as \\ so that the escapes are unambiguous. It does no HTML or
// Markdown escaping: that is for the caller's template to do after.
package printable

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text escapes s for a terminal line; tabs are kept.
func Text(s string) string { return escape(s, 0, true) }

// Cell escapes s for one table cell: tabs escaped too, and s cut at max
// characters (0: not cut), "…" marking the cut.
func Cell(s string, max int) string { return escape(s, max, false) }

// Lines is Text for multi-line text: each line escaped, the newlines kept
// (a line's trailing \r dropped).
func Lines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = Text(strings.TrimSuffix(l, "\r"))
	}
	return strings.Join(lines, "\n")
}

func escape(s string, max int, keepTab bool) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(s); {
		if max > 0 && n >= max {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t' && keepTab:
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		case Hidden(r):
			fmt.Fprintf(&b, `\u{%04X}`, r)
		default:
			b.WriteRune(r)
		}
		i += size
		n++
	}
	return b.String()
}

// Hidden reports whether r changes how the text around it reads without
// showing itself.
func Hidden(r rune) bool {
	switch {
	case r == 0x061C, r == 0x180E, r == 0xFEFF, r == 0x2028, r == 0x2029, r == 0x00AD:
		return true
	case r >= 0x200B && r <= 0x200F, r >= 0x202A && r <= 0x202E, r >= 0x2060 && r <= 0x2069:
		return true
	}
	return unicode.Is(unicode.Cf, r) // other format characters, tag characters among them
}
