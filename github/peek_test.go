package github_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	gogithub "github.com/google/go-github/v60/github"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
)

// pushFields are the push fields PeekDelivery reads, with the types
// go-github's PushEvent gives them, for encoding/json.
type pushFields struct {
	Ref        *string `json:"ref"`
	After      *string `json:"after"`
	Deleted    *bool   `json:"deleted"`
	Repository *struct {
		FullName *string `json:"full_name"`
	} `json:"repository"`
}

// peekOfPush is what PeekDelivery must read of a push, as go-github decodes it.
func peekOfPush(ev *gogithub.PushEvent) github.Peek {
	return github.Peek{Ref: ev.GetRef(), After: ev.GetAfter(), Repo: ev.GetRepo().GetFullName(), Deleted: ev.GetDeleted()}
}

// TestPeekDeliveryMatchesParse holds PeekDelivery, the webhook's fast path,
// to what it promises, on every payload of @octokit/webhooks-examples: each
// is taken (encoding/json takes each); a push's four fields are what
// go-github's PushEvent decodes (and encoding/json, into their types); a
// check_run's or check_suite's action is what encoding/json reads, and its
// error ParseDelivery's.
func TestPeekDeliveryMatchesParse(t *testing.T) {
	all := githubtest.Examples(t)
	events := make([]string, 0, len(all))
	for e := range all {
		events = append(events, e)
	}
	slices.Sort(events)
	n := 0
	for _, event := range events {
		for i, raw := range all[event] {
			t.Run(fmt.Sprintf("%s/%d", event, i), func(t *testing.T) {
				n++
				if !json.Valid(raw) {
					t.Fatalf("the example is not JSON")
				}
				got, err := github.PeekDelivery(event, raw)
				if err != nil {
					t.Fatalf("PeekDelivery: %v; encoding/json takes the payload", err)
				}
				switch event {
				case "push":
					ev, err := gogithub.ParseWebHook(event, raw)
					if err != nil {
						t.Fatalf("go-github cannot parse the example: %v", err)
					}
					if want := peekOfPush(ev.(*gogithub.PushEvent)); got != want {
						t.Errorf("PeekDelivery read %+v; go-github decodes %+v", got, want)
					}
					if _, err := github.ParseDelivery(event, raw); err != nil {
						t.Errorf("ParseDelivery: %v", err)
					}
				case "check_run", "check_suite":
					var m struct{ Action string }
					if err := json.Unmarshal(raw, &m); err != nil {
						t.Fatal(err)
					}
					if got != (github.Peek{Action: m.Action}) {
						t.Errorf("PeekDelivery read %+v; encoding/json reads action %q", got, m.Action)
					}
					if _, err := github.ParseDelivery(event, raw); err != nil {
						t.Errorf("ParseDelivery: %v; PeekDelivery took the payload", err)
					}
				default:
					if got != (github.Peek{}) {
						t.Errorf("PeekDelivery read %+v of a %s: it reads nothing of it", got, event)
					}
				}
			})
		}
	}
	if n < 300 {
		t.Errorf("checked %d examples; @octokit/webhooks-examples has over 300", n)
	}
}

// TestPeekPushTypes: in every push example, each field PeekDelivery reads
// is given every JSON type in turn: PeekDelivery refuses exactly what
// go-github (and encoding/json, into PushEvent's types) refuses, and reads
// what they decode.
func TestPeekPushTypes(t *testing.T) {
	values := []string{`null`, `true`, `false`, `0`, `1.5`, `"x"`, `""`, `{}`, `[]`, `{"full_name":"o/r"}`, `{"full_name":7}`, `["refs/heads/main"]`, `[{"full_name":"o/r"}]`, `{"full_name":null}`}
	for i, raw := range githubtest.Examples(t)["push"] {
		for _, field := range []string{"ref", "after", "deleted", "repository"} {
			for _, v := range values {
				var m map[string]json.RawMessage
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				m[field] = json.RawMessage(v)
				payload, err := json.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("example %d, %s: %s", i, field, v)
				got, perr := github.PeekDelivery("push", payload)
				var f pushFields
				jerr := json.Unmarshal(payload, &f)
				ev, gerr := gogithub.ParseWebHook("push", payload)
				if (perr != nil) != (gerr != nil) || (perr != nil) != (jerr != nil) {
					t.Errorf("%s: PeekDelivery error %v; go-github's %v, encoding/json's %v", name, perr, gerr, jerr)
					continue
				}
				if perr != nil {
					continue
				}
				if want := peekOfPush(ev.(*gogithub.PushEvent)); got != want {
					t.Errorf("%s: PeekDelivery read %+v; go-github decodes %+v", name, got, want)
				}
			}
		}
	}
}

// TestPeekDeliveryRefuses: what is not one JSON value, or not a push
// object, is refused, however deep it nests.
func TestPeekDeliveryRefuses(t *testing.T) {
	for _, tc := range []struct{ event, payload string }{
		{"push", ``},
		{"push", `{"ref":"refs/heads/main"`},
		{"push", `{"ref":"refs/heads/main"} {}`},
		{"push", `[]`},
		{"push", `"push"`},
		{"push", "{\"ref\":\"refs/heads/ma\x01in\"}"},
		{"ping", `{`},
		{"push", strings.Repeat("[", 20000)},
		{"check_run", `{"check_run":{}}`},
		{"check_run", `{"action":"rerequested","check_run":{"id":"1"}}`},
		{"check_suite", `{"action":7}`},
	} {
		p := tc.payload
		if len(p) > 40 {
			p = p[:40] + "…"
		}
		if got, err := github.PeekDelivery(tc.event, []byte(tc.payload)); err == nil {
			t.Errorf("%s %q: read %+v; want an error", tc.event, p, got)
		}
	}
}

// TestParseDelivery: what each delivery asks of the core.
func TestParseDelivery(t *testing.T) {
	example := githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "rerequested" })
	// A run imagegen made carries its build in its external id.
	var m map[string]any
	if err := json.Unmarshal(example, &m); err != nil {
		t.Fatal(err)
	}
	m["check_run"].(map[string]any)["external_id"] = "b-1"
	runRepo := m["repository"].(map[string]any)["full_name"].(string)
	runSHA := m["check_run"].(map[string]any)["head_sha"].(string)
	rerun, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	suite := githubtest.Example(t, "check_suite", func(m map[string]any) bool { return m["action"] == "rerequested" })
	var cs struct {
		CheckSuite struct {
			HeadSHA string `json:"head_sha"`
		} `json:"check_suite"`
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(suite, &cs); err != nil {
		t.Fatal(err)
	}
	push := githubtest.Push(t, githubtest.PushOptions{Repo: "o/r", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40),
		Commits: []githubtest.PushCommit{{Added: []string{"a"}, Modified: []string{"b"}}, {Removed: []string{"a", "c"}}}})
	tests := []struct {
		name    string
		event   string
		payload []byte
		want    builds.Event
	}{
		{"check run re-run", "check_run", rerun, builds.CheckRunRerun{Build: "b-1", Repo: runRepo, SHA: runSHA}},
		{"check run re-run of a run not imagegen's", "check_run", example, nil},
		{"check run created", "check_run", githubtest.Example(t, "check_run", func(m map[string]any) bool { return m["action"] == "created" }), nil},
		{"check suite re-run", "check_suite", suite, builds.CheckSuiteRerun{Repo: cs.Repository.FullName, SHA: cs.CheckSuite.HeadSHA}},
		{"ping", "ping", githubtest.Example(t, "ping", nil), nil},
	}
	for _, tc := range tests {
		got, err := github.ParseDelivery(tc.event, tc.payload)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	ev, err := github.ParseDelivery("push", push)
	p, ok := ev.(builds.Push)
	if err != nil || !ok {
		t.Fatalf("push: %+v, %v", ev, err)
	}
	if p.Repo != "o/r" || p.After != strings.Repeat("2", 40) || !slices.Equal(p.Changed, []string{"a", "b", "c"}) || p.Incomplete {
		t.Errorf("push: %+v", p)
	}
	if _, err := github.ParseDelivery("check_run", []byte(`{"check_run":{}}`)); err == nil {
		t.Error("a check_run without action parsed")
	}
}

// BenchmarkPeekDelivery: the webhook's fast path on a push of the size
// GitHub sends for one commit (about 7.5 kB).
func BenchmarkPeekDelivery(b *testing.B) {
	push := githubtest.Push(b, githubtest.PushOptions{Repo: "bench/webhook", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40)})
	b.SetBytes(int64(len(push)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := github.PeekDelivery("push", push); err != nil {
			b.Fatal(err)
		}
	}
}
