package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
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

// TestPrintStoryRemoved: the story of an image retention deleted says so,
// and a kept image's says nothing of it.
func TestPrintStoryRemoved(t *testing.T) {
	st := &builds.ImageStory{ImageRecord: builds.ImageRecord{Cloud: "sim", ImageID: "img-1", Build: "b1"}, BuildRecord: true}
	var kept bytes.Buffer
	printStory(&kept, st)
	if strings.Contains(kept.String(), "removed") {
		t.Errorf("a kept image's story says removed:\n%s", kept.String())
	}
	st.Removed = &builds.Removal{At: time.Date(2026, 12, 7, 18, 30, 0, 0, time.UTC), By: "retention (keep: 2) when build b3 published\x1b[2J"}
	var gone bytes.Buffer
	printStory(&gone, st)
	if want := "deleted from the cloud " + timeText(st.Removed.At) + " by retention (keep: 2) when build b3 published\\x1b[2J"; !strings.Contains(gone.String(), want) {
		t.Errorf("story of a removed image:\n%s\nwant a line with %q", gone.String(), want)
	}
}
