package queue

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builds"
)

// TestNewDeliveryTask: a delivery task holds the parsed event, which the
// worker reads back as it was; a push's task id is its dedupe key
// (repository, ref, commit), a re-run's its delivery id.
func TestNewDeliveryTask(t *testing.T) {
	push := builds.Push{Repo: "o/r", Installation: 7, Ref: "refs/heads/main", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40),
		Created: true, Forced: true, DefaultBranch: "main", Changed: []string{".imagegen/a.yaml", "café \"quoted\" <&>"}, Incomplete: true}
	tests := []struct {
		name string
		d    Delivery
		id   string // the task id; "" for the push's key, checked below
	}{
		{"push", Delivery{ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Event: "push", Parsed: push}, ""},
		{"push without files", Delivery{ID: "d1", Event: "push", Parsed: builds.Push{Repo: "o/r", Ref: "refs/heads/x", After: "c0ffee"}}, ""},
		{"check run re-run", Delivery{ID: "d2", Event: "check_run", Parsed: builds.CheckRunRerun{Build: "b-1", Repo: "o/r", SHA: "c0ffee"}}, "delivery:d2"},
		{"check suite re-run", Delivery{ID: "d3", Event: "check_suite", Parsed: builds.CheckSuiteRerun{Repo: "o/r", SHA: "c0ffee"}}, "delivery:d3"},
		{"id that needs escaping", Delivery{ID: "a\"b\\c\x01<&>é", Event: "check_run", Parsed: builds.CheckRunRerun{Build: "b", Repo: "o/r"}}, "delivery:a\"b\\c\x01<&>é"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			task, err := NewDeliveryTask(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			if task.Type() != TypeDelivery {
				t.Errorf("type %q; want %q", task.Type(), TypeDelivery)
			}
			if !json.Valid(task.Payload()) {
				t.Fatalf("payload is not JSON: %s", task.Payload())
			}
			got, raw, err := DecodeDelivery(task.Payload())
			if err != nil || raw != nil {
				t.Fatalf("decode: %v (raw %s)", err, raw)
			}
			want := tc.d
			if p, ok := want.Parsed.(builds.Push); ok {
				p.Delivery = want.ID
				want.Parsed = p
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("decoded %#v; want %#v", got, want)
			}
			if id := DeliveryTaskID(tc.d); tc.id != "" && id != tc.id {
				t.Errorf("task id %q; want %q", id, tc.id)
			}
		})
	}
	// The key of a push: its repository, ref and commit, not its delivery id
	// nor anything else it says.
	id := DeliveryTaskID
	base := id(Delivery{ID: "a", Event: "push", Parsed: push})
	other := push
	other.Before, other.Changed, other.Forced = "", nil, false
	if got := id(Delivery{ID: "b", Event: "push", Parsed: other}); got != base || !strings.HasPrefix(base, "push:") || len(base) != len("push:")+64 {
		t.Errorf("task ids %q and %q; want one push: key", base, got)
	}
	for _, p := range []builds.Push{{Repo: "o/r2", Ref: push.Ref, After: push.After}, {Repo: push.Repo, Ref: "refs/heads/dev", After: push.After}, {Repo: push.Repo, Ref: push.Ref, After: strings.Repeat("3", 40)},
		{Repo: "o/r\x00refs/heads/main", Ref: "", After: push.After}} {
		if got := id(Delivery{ID: "a", Event: "push", Parsed: p}); got == base {
			t.Errorf("push %+v has the key of %+v", p, push)
		}
	}
}

// TestDecodeOldDeliveryTask: a delivery task queued by a version that stored
// the payload as GitHub sent it is still read: its raw body, to be parsed.
func TestDecodeOldDeliveryTask(t *testing.T) {
	body := `{"ref":"refs/heads/main","after":"c0ffee","repository":{"full_name":"o/r"},"commits":[ 1, 2 ]}`
	d, raw, err := DecodeDelivery([]byte(`{"id":"old-1","event":"push","body":` + body + `}`))
	if err != nil || d.ID != "old-1" || d.Event != "push" || d.Parsed != nil || string(raw) != body {
		t.Errorf("decoded %#v, %s, %v", d, raw, err)
	}
	if _, _, err := DecodeDelivery([]byte(`{"id":"x","event":"push"}`)); err == nil {
		t.Error("a task with neither an event nor a body decoded")
	}
}

func TestNewDeliveryTaskRefuses(t *testing.T) {
	tests := []struct {
		name string
		d    Delivery
	}{
		{"no id", Delivery{Event: "push", Parsed: builds.Push{Repo: "o/r"}}},
		{"nothing asked", Delivery{ID: "d", Event: "ping"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if task, err := NewDeliveryTask(tc.d); err == nil {
				t.Errorf("task with payload %s; want an error", task.Payload())
			}
		})
	}
}
