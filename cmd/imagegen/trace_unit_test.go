package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestVisible: text a repository, a VM or a cloud controls reaches the
// terminal with its control, invalid and invisible characters shown.
func TestVisible(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"tab\tkept", "tab\tkept"},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"new\nline\r", `new\x0aline\x0d`},
		{"del\x7f c1\u009b", `del\x7f c1\x9b`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{`back\slash`, `back\\slash`},
		{"rtl \u202eevil\u202c zw\u200b", `rtl \u{202E}evil\u{202C} zw\u{200B}`},
		{"ünïcödé ✓", "ünïcödé ✓"},
	} {
		if got := visible(c.in); got != c.want {
			t.Errorf("visible(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := visibleLines("+echo \x1b[31m\n-old\r\n"); got != "+echo \\x1b[31m\n-old\n" {
		t.Errorf("visibleLines = %q", got)
	}
}

// TestTraceUsage: the traceability commands refuse what they cannot do,
// with exit 2 and their usage.
func TestTraceUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"trace"}, "usage: imagegen trace --server URL"},
		{[]string{"trace", "--server", "http://x", "--config", "f", "--cloud", "c", "id"}, "usage: imagegen trace"},
		{[]string{"trace", "--config", "f", "id"}, "usage: imagegen trace"},
		{[]string{"changes", "id"}, "usage: imagegen changes --server URL"},
		{[]string{"verify", "--server", "http://x", "id"}, "usage: imagegen verify --key PUB"},
		{[]string{"verify", "--key", "k", "--server", "http://x", "id"}, "--config FILE and --cloud NAME are required: the image's tags are read from the cloud itself"},
	} {
		var out, errOut bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookup: func(string) (string, bool) { return "", false }}
		if code := run(context.Background(), e, c.args); code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("imagegen %v: exit %d, stderr:\n%s\nwant exit 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
}
