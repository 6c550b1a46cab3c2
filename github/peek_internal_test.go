package github

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"github.com/imagegen/imagegen/github/githubtest"
)

// FuzzPeekPush: on any push payload, the fast path (readPush) makes what
// encoding/json makes of it (decodePush, on go-github's types) unless it
// leaves the payload to encoding/json; and what go-github takes,
// PeekDelivery takes and makes what ParseDelivery makes. Seeded with every
// octokit push and the unusual keys of TestPeekPushUnusualKeys.
func FuzzPeekPush(f *testing.F) {
	for _, raw := range githubtest.Examples(f)["push"] {
		f.Add(raw)
	}
	for _, s := range []string{
		`{"ref":"refs/heads/main","REF":"x"}`,
		`{"commits":[{"added":["a"]}],"commits":[{"removed":["b"]},{}]}`,
		`{"repository":{"full_name":"o/r"},"repository":{"default_branch":"d"}}`,
		`{"installation":{"id":-0},"commits":[null,{"modified":["m",null]}]}`,
		`{"after":"\u0032","commits":[{"added":["caf\u00e9"]}],"forced":true}`,
		`{"r\u0065f":"x","commit\u017f":[]}`,
		`{"commits":"x"}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, perr := PeekDelivery("push", payload)
		want, gerr := ParseDelivery("push", payload)
		if gerr == nil && (perr != nil || !reflect.DeepEqual(got.Event, want)) {
			t.Fatalf("PeekDelivery made %#v, %v; ParseDelivery %#v", got.Event, perr, want)
		}
		if validJSON(payload) != nil || !bytes.HasPrefix(bytes.TrimLeft(payload, " \t\r\n"), []byte("{")) {
			return
		}
		fast, ferr := readPush(unsafe.String(unsafe.SliceData(payload), len(payload)))
		if errors.Is(ferr, errUnusual) {
			return
		}
		slow, serr := decodePush(payload)
		if (ferr != nil) != (serr != nil) || (ferr == nil && !reflect.DeepEqual(fast, slow)) {
			t.Fatalf("readPush made %#v, %v; encoding/json %#v, %v", fast, ferr, slow, serr)
		}
	})
}
