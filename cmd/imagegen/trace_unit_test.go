package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

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
