package spec

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"testing/fstest"
	"time"
)

// FuzzParse checks that no input makes ParseBytes panic, and that every error
// it reports in the spec points inside the input.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		goodSpec,
		"",
		"script: x\nclouds: {hotel: {image: i, ssh_user: u}}\n",
		"script_file: s.sh\nclouds: {hotel: {image: i, ssh_user: u}}\n",
		"script_file: ../s.sh\nclouds: {box: {ssh_user: u}}\n",
		"a: &a [x, x]\nb: *a\n",
		"script: [\n",
		"clouds: [a]\nbranches: main\n",
		"? [a]\n: b\n",
		"---\nscript: x\n---\nscript: y\n",
		"name: caf\xe9\n",
		"script: !sh x\n",
		"clouds:\n  hotel:\n    <<: *x\n",
		"\t- x\n",
	} {
		f.Add([]byte(seed))
	}
	repo := fstest.MapFS{"s.sh": {Data: []byte("echo\n")}}
	f.Fuzz(func(t *testing.T, data []byte) {
		watchdog := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("ParseBytes hangs on %q", data)) })
		s, err := ParseBytes(repo, "f.yaml", data, testOpts)
		watchdog.Stop()
		if err == nil {
			if s == nil || s.Digest == "" || len(s.Clouds) == 0 || s.Script == "" {
				t.Fatalf("no error, but spec %+v is incomplete", s)
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %v (%T) is not spec.Errors", err, err)
		}
		lines := bytes.Split(data, []byte("\n"))
		for _, e := range es {
			if e.File != "f.yaml" {
				continue // an error in the script file
			}
			if len(data) > MaxFileSize && e.Line == 0 {
				continue
			}
			if e.Line < 1 || e.Line > len(lines) || e.Col < 1 || e.Col > len([]rune(string(lines[e.Line-1])))+1 {
				t.Fatalf("error %q points outside the input (%d lines)", e.Error(), len(lines))
			}
		}
	})
}
