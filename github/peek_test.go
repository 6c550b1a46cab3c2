package github_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
)

// TestPeekDeliveryMatchesParse holds PeekDelivery, the webhook's fast path,
// to what it promises, on every payload of @octokit/webhooks-examples: each
// is taken (encoding/json takes each), and its Event, what the webhook
// stores for the worker, is what ParseDelivery (go-github for a push) makes
// of it; a check_run's or check_suite's action is what encoding/json reads.
func TestPeekDeliveryMatchesParse(t *testing.T) {
	all := githubtest.Examples(t)
	events := make([]string, 0, len(all))
	for e := range all {
		events = append(events, e)
	}
	slices.Sort(events)
	n, pushes := 0, 0
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
				want, perr := github.ParseDelivery(event, raw)
				switch event {
				case "push", "check_run", "check_suite":
					if perr != nil {
						t.Fatalf("ParseDelivery: %v; PeekDelivery took the payload", perr)
					}
				default:
					if perr != nil {
						return // an event go-github does not know: nothing to compare
					}
				}
				if !reflect.DeepEqual(got.Event, want) {
					t.Errorf("PeekDelivery made %#v; ParseDelivery %#v", got.Event, want)
				}
				if event == "push" {
					pushes++
					if _, ok := got.Event.(builds.Push); !ok {
						t.Errorf("PeekDelivery made %#v of a push; want a builds.Push", got.Event)
					}
				}
				var m struct{ Action string }
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				if event != "check_run" && event != "check_suite" {
					m.Action = ""
				}
				if got.Action != m.Action {
					t.Errorf("PeekDelivery read action %q; encoding/json reads %q", got.Action, m.Action)
				}
			})
		}
	}
	if n < 300 || pushes < 3 {
		t.Errorf("checked %d examples (%d pushes); @octokit/webhooks-examples has over 300", n, pushes)
	}
}

// pushValues are the values TestPeekPushTypes gives each field read: every
// JSON type, and the shapes of each field's elements.
var pushValues = []string{`null`, `true`, `false`, `0`, `-0`, `7`, `1.5`, `1e3`, `-12`, `9223372036854775807`, `9223372036854775808`,
	`"x"`, `""`, `"refs/heads/ma\u0069n"`, `"caf\u00e9/\ud83d\ude00"`, `"\ud800"`, "\"caf\u00e9\"", `"a\"b"`,
	`{}`, `[]`, `{"full_name":"o/r"}`, `{"full_name":7}`, `{"full_name":null,"default_branch":"dev"}`, `{"default_branch":[]}`,
	`{"id":5}`, `{"id":"5"}`, `{"id":5.0}`, `{"id":null}`,
	`["refs/heads/main"]`, `[{"full_name":"o/r"}]`, `[null]`, `[1]`, `[[]]`, `["a","b","a"]`, `[null,"a"]`, `[7]`, `[{}]`,
	`[{"added":["a"],"removed":["b"],"modified":["a","c"]}]`, `[null,{"added":["x"]}]`, `[{"added":"x"}]`, `[{"added":[1]}]`, `[{"added":[null]}]`,
	`[{"modified":["m"],"added":["a"]}]`, `[{"added":{}}]`, `[{"removed":null}]`}

// TestPeekPushTypes: in every push example, each field the webhook reads,
// at every level, is given every value of pushValues in turn: PeekDelivery
// refuses exactly what go-github refuses, and otherwise makes what
// ParseDelivery makes. (The example's other fields stay as they are, so an
// error of go-github's is the field's.)
func TestPeekPushTypes(t *testing.T) {
	paths := [][]string{{"ref"}, {"before"}, {"after"}, {"created"}, {"deleted"}, {"forced"}, {"repository"}, {"installation"}, {"commits"},
		{"repository", "full_name"}, {"repository", "default_branch"}, {"installation", "id"},
		{"commits", "0"}, {"commits", "0", "added"}, {"commits", "0", "removed"}, {"commits", "0", "modified"}}
	checked, refused := 0, 0
	for i, raw := range githubtest.Examples(t)["push"] {
		for _, path := range paths {
			for _, v := range pushValues {
				if strings.Contains(v, `"id"`) && path[0] != "installation" {
					// repository.id and a commit's id are fields go-github
					// reads and imagegen does not: their types are not checked.
					continue
				}
				payload, ok := setPath(t, raw, path, v)
				if !ok {
					continue
				}
				checked++
				name := fmt.Sprintf("example %d, %s: %s", i, strings.Join(path, "."), v)
				if comparePeekParse(t, name, payload) {
					refused++
				}
			}
		}
	}
	t.Logf("%d payloads checked, %d refused by both", checked, refused)
	if checked < 1000 || refused < 100 || refused > checked-100 {
		t.Errorf("%d payloads checked, %d refused: the matrix does not test both sides", checked, refused)
	}
}

// comparePeekParse checks PeekDelivery against ParseDelivery on a push
// payload and reports whether both refused it.
func comparePeekParse(t *testing.T, name string, payload []byte) bool {
	t.Helper()
	got, perr := github.PeekDelivery("push", payload)
	want, gerr := github.ParseDelivery("push", payload)
	if (perr != nil) != (gerr != nil) {
		t.Errorf("%s: PeekDelivery error %v; ParseDelivery's %v", name, perr, gerr)
		return false
	}
	if perr == nil && !reflect.DeepEqual(got.Event, want) {
		t.Errorf("%s: PeekDelivery made %#v; ParseDelivery %#v", name, got.Event, want)
	}
	return perr != nil
}

// setPath sets the value at path in a JSON object (a number in the path
// indexes an array; an object on the way is made if absent); false when the
// path goes through something else.
func setPath(t *testing.T, raw []byte, path []string, v string) ([]byte, bool) {
	t.Helper()
	var root any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&root); err != nil {
		t.Fatal(err)
	}
	var value any
	dec = json.NewDecoder(strings.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&value); err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	cur := root
	for i, k := range path {
		last := i == len(path)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				c[k] = value
				break
			}
			if c[k] == nil {
				c[k] = map[string]any{}
			}
			cur = c[k]
		case []any:
			n, err := strconv.Atoi(k)
			if err != nil || n >= len(c) {
				return nil, false
			}
			if last {
				c[n] = value
				break
			}
			cur = c[n]
		default:
			return nil, false
		}
	}
	b, err := json.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	// json.Marshal escapes <, > and & and sorts keys; both parsers take that.
	return b, true
}

// TestPeekPushUnusualKeys: payloads whose keys encoding/json matches
// otherwise than byte for byte — in another case, escaped, given twice (the
// last wins; objects merge; commits decode into the commits before them) —
// and strings it decodes (escapes, invalid UTF-8): PeekDelivery makes what
// ParseDelivery makes of each.
func TestPeekPushUnusualKeys(t *testing.T) {
	raw := githubtest.Push(t, githubtest.PushOptions{Repo: "o/r", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40),
		Commits: []githubtest.PushCommit{{Added: []string{"a"}}, {Modified: []string{"b"}}}})
	body := bytes.TrimSpace(raw)
	body = body[1 : len(body)-1] // the members, without the braces
	first := func(extra string) []byte { return []byte("{" + extra + "," + string(body) + "}") }
	last := func(extra string) []byte { return []byte("{" + string(body) + "," + extra + "}") }
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"ref in upper case, after", last(`"REF":"refs/heads/other"`)},
		{"ref in upper case, before", first(`"Ref":"refs/heads/other"`)},
		{"ref given twice", last(`"ref":"refs/heads/twice"`)},
		{"ref null at the end", last(`"ref":null`)},
		{"ref escaped key", last(`"r\u0065f":"refs/heads/escaped"`)},
		{"ref with the Kelvin sign", last(`"\u212aey":"x","ref":"refs/heads/k"`)},
		{"commits with a long s", last(`"commit\u017f":[{"added":["long-s"]}]`)},
		{"commits in another case", last(`"Commits":[{"Added":["c1"]}]`)},
		{"commits twice: decoded into the first", last(`"commits":[{"removed":["r"]}]`)},
		{"commits twice, longer", last(`"commits":[{"removed":["r"]},{"added":["x"]},{"added":["y"]}]`)},
		{"commits twice, shorter then longer", last(`"commits":[],"commits":[{"added":["p"]},{"added":["q"]}]`)},
		{"commits null then again", last(`"commits":null,"commits":[{"added":["n"]}]`)},
		{"repository twice: merged", last(`"repository":{"default_branch":"dev"}`)},
		{"repository null at the end", last(`"repository":null`)},
		{"full_name in another case", last(`"repository":{"FULL_NAME":"x/y","full_name":"o/r"}`)},
		{"installation twice", last(`"installation":{"id":42}`)},
		{"installation id given twice", last(`"installation":{"id":1,"id":2}`)},
		{"added twice in a commit", last(`"commits":[{"added":["a"],"added":["b"]}]`)},
		{"wrong type in a repeated ref", last(`"ref":7`)},
		{"wrong type after an unusual key", last(`"REF":"x","commits":"no"`)},
		{"wrong type before an unusual key", first(`"commits":"no","REF":"x"`)},
		{"escapes in values", last(`"after":"\u0032\u0032","commits":[{"added":["caf\u00e9","tab\there","\ud800"]}]`)},
		{"non-ASCII file", last(`"commits":[{"added":["café.md","日本/語.yaml"]}]`)},
		{"invalid UTF-8 in a file", last("\"commits\":[{\"added\":[\"a\xffb\xfe\"]}]")},
		{"invalid UTF-8 in a key", last("\"r\xffef\":\"x\"")},
		{"null commit", last(`"commits":[null,{"added":["z"]}]`)},
		{"twenty commits", last(`"commits":[` + strings.Repeat(`{"added":["f"]},`, 19) + `{"added":["g"]}]`)},
		{"forced push", last(`"forced":true,"created":false`)},
		{"created forced push", last(`"forced":true,"created":true`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			comparePeekParse(t, tc.name, tc.payload)
		})
	}
	// The whole payload null: go-github returns no event and no error.
	if got, err := github.PeekDelivery("push", []byte(" null ")); err != nil || got.Event != nil {
		t.Errorf("null: %+v, %v; want no event and no error, as ParseDelivery", got, err)
	}
	if ev, err := github.ParseDelivery("push", []byte(" null ")); err != nil || ev != nil {
		t.Errorf("ParseDelivery(null) = %+v, %v", ev, err)
	}
}

// TestPeekPushBounds: a push listing more files than builds.MaxChangedFiles,
// or more bytes of names than builds.MaxChangedBytes, is stored without its
// files and Incomplete, by both paths, however the payload is written.
func TestPeekPushBounds(t *testing.T) {
	files := func(n, size int) []string {
		var out []string
		for i := range n {
			f := fmt.Sprintf("dir/%d-", i)
			out = append(out, f+strings.Repeat("x", max(0, size-len(f))))
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		commits    []githubtest.PushCommit
		incomplete bool
		changed    int
	}{
		{"at the file bound", []githubtest.PushCommit{{Added: files(builds.MaxChangedFiles, 8)}}, false, builds.MaxChangedFiles},
		{"over the file bound", []githubtest.PushCommit{{Added: files(builds.MaxChangedFiles, 8)}, {Modified: []string{"one-more"}}}, true, 0},
		{"over the file bound, repeated names", []githubtest.PushCommit{{Added: files(builds.MaxChangedFiles, 8)}, {Modified: files(builds.MaxChangedFiles, 8)}}, false, builds.MaxChangedFiles},
		{"at the byte bound", []githubtest.PushCommit{{Added: files(builds.MaxChangedBytes/1024, 1024)}}, false, builds.MaxChangedBytes / 1024},
		{"over the byte bound", []githubtest.PushCommit{{Added: files(builds.MaxChangedBytes/1024, 1024)}, {Removed: []string{"z"}}}, true, 0},
		{"one huge name", []githubtest.PushCommit{{Added: []string{strings.Repeat("h", builds.MaxChangedBytes+1)}}}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := githubtest.Push(t, githubtest.PushOptions{Repo: "o/r", Before: strings.Repeat("1", 40), After: strings.Repeat("2", 40), Commits: tc.commits})
			for _, payload := range [][]byte{raw, append([]byte(`{"REF":null,`), bytes.TrimSpace(raw)[1:]...)} {
				got, err := github.PeekDelivery("push", payload)
				if err != nil {
					t.Fatal(err)
				}
				p := got.Event.(builds.Push)
				if p.Incomplete != tc.incomplete || len(p.Changed) != tc.changed {
					t.Errorf("Incomplete %v, %d files; want %v, %d", p.Incomplete, len(p.Changed), tc.incomplete, tc.changed)
				}
				comparePeekParse(t, tc.name, payload)
			}
		})
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
		{"push", `{"commits":"x"}`},
		{"push", `{"commits":{}}`},
		{"push", `{"commits":[{"added":"a"}]}`},
		{"push", `{"installation":{"id":1.5}}`},
		{"push", `{"repository":{"default_branch":1}}`},
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
