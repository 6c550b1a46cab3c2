package queue

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestNewDeliveryTask: the payload is the JSON value json.Marshal makes of
// the Delivery, with the body kept byte for byte as it came (no second
// validation and compaction), and encoding/json, which the worker decodes it
// with, reads back the same id, event and body.
func TestNewDeliveryTask(t *testing.T) {
	tests := []struct {
		name string
		d    Delivery
	}{
		{"compact push", Delivery{ID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", Event: "push", Body: []byte(`{"ref":"refs/heads/main","after":"c0ffee","repository":{"full_name":"o/r"}}`)}},
		{"whitespace kept", Delivery{ID: "d1", Event: "push", Body: []byte("{\n  \"ref\": \"refs/heads/main\",\n  \"commits\": [ 1, 2 ]\n}")}},
		{"escapes and unicode in the body", Delivery{ID: "d2", Event: "check_run", Body: []byte(`{"message":"caf\u00e9 \"quoted\" <b>&</b> ☃","n":-1.5e3}`)}},
		{"id that needs escaping", Delivery{ID: "a\"b\\c\x01<&>é", Event: "push", Body: []byte(`{}`)}},
		{"id with invalid UTF-8", Delivery{ID: "bad\xffid", Event: "push", Body: []byte(`null`)}},
		{"event with a newline", Delivery{ID: "d3", Event: "pu\nsh", Body: []byte(`[]`)}},
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
			p := task.Payload()
			if !json.Valid(p) {
				t.Fatalf("payload is not JSON: %s", p)
			}
			if !bytes.Contains(p, tc.d.Body) {
				t.Errorf("payload %s does not hold the body as it came", p)
			}
			// The same JSON as json.Marshal makes (which also escapes <>& in
			// the body: both are the same value).
			want, err := json.Marshal(tc.d)
			if err != nil {
				t.Fatal(err)
			}
			var gotV, wantV any
			if err := json.Unmarshal(p, &gotV); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(want, &wantV); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotV, wantV) {
				t.Errorf("payload %s; json.Marshal gives %s", p, want)
			}
			var got Delivery
			if err := json.Unmarshal(p, &got); err != nil {
				t.Fatal(err)
			}
			var wantD Delivery
			if err := json.Unmarshal(want, &wantD); err != nil {
				t.Fatal(err)
			}
			if got.ID != wantD.ID || got.Event != wantD.Event {
				t.Errorf("decoded %q/%q; want %q/%q", got.ID, got.Event, wantD.ID, wantD.Event)
			}
			if !bytes.Equal(got.Body, tc.d.Body) {
				t.Errorf("decoded body %s; want %s", got.Body, tc.d.Body)
			}
		})
	}
}

func TestNewDeliveryTaskRefuses(t *testing.T) {
	tests := []struct {
		name string
		d    Delivery
	}{
		{"no id", Delivery{Event: "push", Body: []byte(`{}`)}},
		{"no body", Delivery{ID: "d", Event: "push"}},
		{"blank body", Delivery{ID: "d", Event: "push", Body: []byte(" \n")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if task, err := NewDeliveryTask(tc.d); err == nil {
				t.Errorf("task with payload %s; want an error", task.Payload())
			}
		})
	}
}
