package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var strict = Options{Kind: "spec"}
var lenient = Options{Kind: "config", AllowAliases: true, AllowTags: true}

// laughs is the billion laughs: 26 levels of 9 aliases each, a few hundred
// bytes that expand to 9^25 values.
func laughs() string {
	var b strings.Builder
	b.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 'b'; i <= 'z'; i++ {
		fmt.Fprintf(&b, "%c: &%c [", i, i)
		for j := range 9 {
			if j > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "*%c", i-1)
		}
		b.WriteString("]\n")
	}
	return b.String()
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		src  string
		opts Options
		want []string // "line:col: message fragment"; nil: no errors
	}{
		{"mapping", "a: 1\nb: [x, y]\n", strict, nil},
		{"empty", "", strict, nil},
		{"only comments", "# nothing\n", strict, nil},
		{"too large", strings.Repeat("#", 101), Options{Kind: "spec", MaxBytes: 100}, []string{"0:0: is 101 bytes, over the limit of 100 bytes"}},
		{"too large in MiB", strings.Repeat("#", 1<<20+1), strict, []string{"0:0: is 1048577 bytes, over the limit of 1048576 bytes (1 MiB)"}},
		{"not utf-8", "a: x\nb: caf\xe9\n", strict, []string{"2:7: the file is not valid UTF-8 (byte 0xe9)"}},
		{"control character", "a: x\x01\n", strict, []string{"1:5: control character U+0001 is not allowed"}},
		{"lone CR", "a: x\rb: y\n", strict, []string{"1:5: line break U+000D is not allowed"}},
		{"CRLF", "a: x\r\nb: y\r\n", strict, nil},
		{"line separator", "a: x\u2028\n", strict, []string{"1:5: line break U+2028"}},
		{"syntax error", "a: x\nb:\n  c: {d: e\n  f: g\n", strict, []string{"3:3: invalid YAML: did not find expected ',' or '}' (check the indentation"}},
		{"scanner error", "a: x\n  b: y\n", strict, []string{"2:3: invalid YAML: mapping values are not allowed"}},
		{"two documents", "a: 1\n---\nb: 2\n", strict, []string{"2:1: a spec file holds one YAML document"}},
		{"two documents, lenient too", "a: 1\n---\nb: 2\n", lenient, []string{"2:1: a config file holds one YAML document"}},
		{"duplicate key", "a: 1\nb:\n  c: 1\n  c: 2\n", strict, []string{`4:3: key "c" in b is already set at line 3: keep one`}},
		{"duplicate top key, lenient too", "a: 1\na: 2\n", lenient, []string{`2:1: key "a" is already set at line 1`}},
		{"complex key", "? [a]\n: b\n", strict, []string{"1:3: keys must be plain names, not a list"}},
		{"deep", "a: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", strict, []string{"1:36: nested more than 32 levels deep: no spec needs that many"}},
		{"deep, custom limit", "a: [[[1]]]\n", Options{MaxDepth: 2}, []string{"1:6: nested more than 2 levels deep"}},
		{"past yaml's own cap", "a: " + strings.Repeat("[", 20000) + "\n", strict, []string{"1:1: invalid YAML: exceeded max depth of 10000"}},
		{"anchor and alias", "a: &x 1\nb: *x\n", strict, []string{"1:4: anchors (&x) are not allowed in specs", "2:4: aliases (*x) are not allowed in specs"}},
		{"alias allowed", "a: &x {k: v}\nb: *x\n", lenient, nil},
		{"unknown anchor", "a: *x\n", strict, []string{"1:4: invalid YAML: unknown anchor 'x' referenced (and anchors and aliases are not allowed in specs anyway)"}},
		{"unknown anchor, lenient", "a: *x\n", lenient, []string{"1:4: invalid YAML: unknown anchor 'x' referenced: define the anchor (&x) before its first use"}},
		{"alias inside itself", "x: &x {y: *x}\n", lenient, []string{"1:11: alias *x is used inside the value of its own anchor"}},
		{"alias list inside itself", "a: &a [*a, *a]\n", lenient, []string{"1:8: alias *a is used inside the value of its own anchor", "1:12: alias *a is used inside"}},
		{"billion laughs, lenient", laughs(), lenient, []string{"5:8: aliases expand to more than 10000 values"}},
		{"billion laughs, strict", laughs(), Options{Kind: "spec", MaxErrors: 2}, []string{"1:4: anchors (&a) are not allowed", "2:4: anchors (&b)", "2:8: more than 2 errors"}},
		{"aliases within the limit", "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n", Options{AllowAliases: true, MaxAliasNodes: 12}, nil},
		{"aliases past a small limit", "a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n", Options{AllowAliases: true, MaxAliasNodes: 12}, []string{"2:17: aliases expand to more than 12 values"}},
		{"tag", "a: !sh x\n", strict, []string{"1:4: YAML tags (!sh) are not allowed in specs"}},
		{"explicit string", "a: !!str 42\n", strict, nil},
		{"tag allowed", "a: !!int 42\n", lenient, nil},
		{"error limit", strings.Repeat("x: 1\n", 200), Options{MaxErrors: 3}, []string{
			`2:1: key "x" is already set`, `3:1: key "x"`, `4:1: key "x"`, "5:1: more than 3 errors: fix these first"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			d := Parse("f.yaml", []byte(tt.src), tt.opts)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %s", took)
			}
			if len(d.Errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(d.Errs), len(tt.want), d.Errs)
			}
			for i, w := range tt.want {
				e := d.Errs[i]
				if e.File != "f.yaml" || !strings.HasPrefix(fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg), w) {
					t.Errorf("error %d = %q, want f.yaml:%s...", i, e.Error(), w)
				}
			}
			if (d.Root == nil) != (len(tt.want) > 0 || strings.TrimSpace(strings.TrimPrefix(tt.src, "# nothing")) == "") {
				t.Errorf("Root = %v with %d errors", d.Root, len(d.Errs))
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	es := Errors{{File: "b.yaml", Line: 2, Col: 1, Msg: "two"}, {File: "a.yaml", Msg: "whole file"}, {File: "b.yaml", Line: 1, Col: 5, Msg: "one"}}
	es.Sort()
	if got, want := es.Error(), "a.yaml: whole file\nb.yaml:1:5: one\nb.yaml:2:1: two"; got != want {
		t.Errorf("Errors = %q, want %q", got, want)
	}
}

// TestErrorAtClamps checks that positions stay inside the input, in characters.
func TestErrorAtClamps(t *testing.T) {
	d := Parse("f.yaml", []byte("a: é\nb: x"), strict)
	d.ErrorAt(1, 99, "past the line")
	d.ErrorAt(7, 3, "past the end")
	d.ErrorAt(0, 0, "before the start")
	want := []string{"f.yaml:1:5: past the line", "f.yaml:2:5: past the end", "f.yaml:1:1: before the start"}
	for i, w := range want {
		if d.Errs[i].Error() != w {
			t.Errorf("error %d = %q, want %q", i, d.Errs[i].Error(), w)
		}
	}
}

func TestFields(t *testing.T) {
	d := Parse("f.yaml", []byte("name: x\nscrpit: y\nclouds: {a: 1}\nzzz: 1\n"), strict)
	got := d.Fields(d.Root, "", []string{"script", "name", "clouds"})
	var keys []string
	for _, f := range got {
		keys = append(keys, f.Key.Value+"="+f.Value.Value)
	}
	if strings.Join(keys, ",") != "name=x,clouds=" {
		t.Errorf("fields %v", keys)
	}
	want := Errors{
		{File: "f.yaml", Line: 2, Col: 1, Msg: `unknown key "scrpit": did you mean "script"? (known: clouds, name, script)`},
		{File: "f.yaml", Line: 4, Col: 1, Msg: `unknown key "zzz" (known: clouds, name, script)`},
	}
	if !reflect.DeepEqual(d.Errs, want) {
		t.Errorf("errors:\n%v\nwant:\n%v", d.Errs, want)
	}
	d.Errs = nil
	d.Fields(got[1].Value, "clouds", []string{"b"})
	if len(d.Errs) != 1 || d.Errs[0].Msg != `unknown key "a" in clouds: did you mean "b"? (known: b)` {
		t.Errorf("nested: %v", d.Errs)
	}
}

func TestClosest(t *testing.T) {
	known := []string{"script", "script_file", "ssh_user", "size"}
	for key, want := range map[string]string{"scrpit": "script", "script_fle": "script_file", "sshuser": "ssh_user", "flavor": "", strings.Repeat("s", 100): ""} {
		if got := closest(key, known); got != want {
			t.Errorf("closest(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestString(t *testing.T) {
	d := Parse("f.yaml", []byte("a: text\nb: 42\nc: true\nd: 'true'\ne:\nf: [x]\ng: ''\n"), strict)
	var got []string
	for _, f := range Pairs(d.Root) {
		s, ok := d.String(f.Value, f.Key.Value)
		got = append(got, fmt.Sprintf("%s=%q/%v", f.Key.Value, s, ok))
	}
	if want := `a="text"/true b="42"/true c=""/false d="true"/true e=""/false f=""/false g=""/true`; strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	want := []string{
		"f.yaml:3:4: c is the boolean true: write text (quote it if you mean the word)",
		"f.yaml:5:3: e has no value: give it one or remove the key",
		"f.yaml:6:4: f must be a string, not a list",
	}
	if len(d.Errs) != len(want) {
		t.Fatalf("errors %v", d.Errs)
	}
	for i, w := range want {
		if d.Errs[i].Error() != w {
			t.Errorf("error %d = %q, want %q", i, d.Errs[i].Error(), w)
		}
	}
}

type inner struct {
	Region string `yaml:"region"`
}

type sshSettings struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

type settings struct {
	inner    `yaml:",inline"`
	Endpoint string                 `yaml:"endpoint,omitempty"`
	Timeout  time.Duration          `yaml:"timeout"`
	Flavor   string                 // untagged: key "flavor"
	Skipped  string                 `yaml:"-"`
	SSH      *sshSettings           `yaml:"ssh"`
	Hosts    []sshSettings          `yaml:"hosts"`
	ByName   map[string]sshSettings `yaml:"by_name"`
	Raw      yaml.Node              `yaml:"raw"`
	private  string                 //nolint:unused // an unexported field is not a key: the test checks it is skipped
}

func TestCheckKeys(t *testing.T) {
	tests := []struct {
		name string
		src  string
		kc   KeyCheck
		want []string
	}{
		{"known at every level", "region: r\nendpoint: e\ntimeout: 1s\nflavor: f\nssh: {host: h, port: 22}\nhosts: [{host: a}]\nby_name: {x: {port: 1}}\nraw: {anything: goes}\n", KeyCheck{}, nil},
		{"top level", "regoin: r\nskipped: x\nprivate: y\n", KeyCheck{}, []string{
			`1:1: unknown key "regoin": did you mean "region"? (known: by_name, endpoint, flavor, hosts, raw, region, ssh, timeout)`,
			`2:1: unknown key "skipped"`, `3:1: unknown key "private"`}},
		{"context and extra keys", "type: x\npassword: ask\nendpiont: e\n", KeyCheck{Context: "for type ec2", Extra: []string{"type", "password"}}, []string{
			`3:1: unknown key "endpiont" for type ec2: did you mean "endpoint"? (known: type, password, by_name, endpoint, flavor, hosts, raw, region, ssh, timeout)`}},
		{"extra keys only at the top", "ssh: {type: x}\n", KeyCheck{Extra: []string{"type"}}, []string{`1:7: unknown key "type" in ssh (known: host, port)`}},
		{"nested struct, list, map", "ssh: {hots: h}\nhosts: [{host: a}, {prot: 1}]\nby_name: {x: {hots: b}}\n", KeyCheck{Context: "for type sim"}, []string{
			`1:7: unknown key "hots" in ssh: did you mean "host"? (known: host, port)`,
			`2:21: unknown key "prot" in hosts: did you mean "port"?`,
			`3:15: unknown key "hots" in by_name.x: did you mean "host"?`}},
		{"through an alias", "a: &a {hots: h}\nssh: *a\n", KeyCheck{Extra: []string{"a"}}, []string{`1:8: unknown key "hots" in ssh`}},
		{"self-referencing alias ends", "ssh: &a {host: *a}\n", KeyCheck{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tt.src), &doc); err != nil {
				t.Fatal(err)
			}
			errs := CheckKeys("f.yaml", doc.Content[0], &settings{}, tt.kc)
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(tt.want), errs)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(errs[i].Error(), "f.yaml:"+w) {
					t.Errorf("error %d = %q\nwant f.yaml:%s...", i, errs[i].Error(), w)
				}
			}
		})
	}
}

func TestDecode(t *testing.T) {
	d := Parse("f.yaml", []byte("region: r\ntimeout: 3s\nssh: {host: h}\n"), lenient)
	var s settings
	if err := Decode(d.File, d.Root, &s, KeyCheck{}); err != nil {
		t.Fatal(err)
	}
	if s.Region != "r" || s.Timeout != 3*time.Second || s.SSH == nil || s.SSH.Host != "h" {
		t.Errorf("decoded %+v", s)
	}
	d = Parse("f.yaml", []byte("timeout: soon\n"), lenient)
	err := Decode(d.File, d.Root, &s, KeyCheck{})
	if err == nil || err.Error() != "f.yaml: yaml: unmarshal errors:\n  line 1: cannot unmarshal !!str `soon` into time.Duration" {
		t.Errorf("bad value: %v", err)
	}
	d = Parse("f.yaml", []byte("timout: 1s\n"), lenient)
	err = Decode(d.File, d.Root, &s, KeyCheck{})
	if errs := (Errors)(nil); !errors.As(err, &errs) || !strings.HasPrefix(err.Error(), `f.yaml:1:1: unknown key "timout": did you mean "timeout"?`) {
		t.Errorf("unknown key: %v", err)
	}
}

// FuzzParse checks that no input makes Parse panic or hang, that every error
// points inside the input, and that the tree it accepts has no duplicate keys.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"a: 1\n", "a: &a [*a]\n", laughs(), "? [a]\n: b\n", "a: 1\na: 2\n", "a: [\n", "- - - x\n", "a: !t x\n---\nb: 1\n", "x: caf\xe9\n"} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, lenientMode bool) {
		opts := strict
		if lenientMode {
			opts = lenient
		}
		watchdog := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("Parse hangs on %q", data)) })
		d := Parse("f.yaml", data, opts)
		watchdog.Stop()
		lines := strings.Split(string(data), "\n")
		for _, e := range d.Errs {
			if e.Line == 0 && len(data) > DefaultMaxBytes {
				continue
			}
			if e.Line < 1 || e.Line > len(lines) || e.Col < 1 || e.Col > len([]rune(lines[e.Line-1]))+1 {
				t.Fatalf("error %q points outside the input", e.Error())
			}
		}
		if len(d.Errs) > DefaultMaxErrors+1 {
			t.Fatalf("%d errors", len(d.Errs))
		}
		if d.Root != nil {
			var walk func(n *yaml.Node)
			walk = func(n *yaml.Node) {
				if n.Kind == yaml.MappingNode {
					seen := map[string]bool{}
					for i := 0; i+1 < len(n.Content); i += 2 {
						if seen[n.Content[i].Value] {
							t.Fatalf("duplicate key %q accepted", n.Content[i].Value)
						}
						seen[n.Content[i].Value] = true
					}
				}
				for _, c := range n.Content {
					walk(c)
				}
			}
			walk(d.Root)
		}
	})
}
