package strictyaml

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Field is one key of a mapping and its value.
type Field struct {
	Key, Value *yaml.Node
}

// Pairs returns the key/value pairs of mapping m, in document order.
func Pairs(m *yaml.Node) []Field {
	out := make([]Field, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		out = append(out, Field{m.Content[i], m.Content[i+1]})
	}
	return out
}

// Fields returns the pairs of mapping m whose keys are in known, in document
// order, and reports every other key as unknown. where names the mapping in
// messages ("" at the top, "clouds.hotel" below).
func (d *Doc) Fields(m *yaml.Node, where string, known []string) []Field {
	var out []Field
	for _, f := range Pairs(m) {
		if slices.Contains(known, f.Key.Value) {
			out = append(out, f)
			continue
		}
		if !d.Full() {
			d.Errorf(f.Key, "%s", UnknownKey(f.Key.Value, strings.TrimPrefix(in(where), " "), slices.Sorted(slices.Values(known))))
		}
	}
	return out
}

// UnknownKey says that key is none of known (listed in the order given),
// naming the known key it is likely a typo of:
//
//	unknown key "scrpit": did you mean "script"? (known: clouds, script)
//
// context, when not empty, follows the key ("in clouds.hotel", "for type ec2").
func UnknownKey(key, context string, known []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "unknown key %q", key)
	if context != "" {
		b.WriteString(" " + context)
	}
	if near := closest(key, known); near != "" {
		fmt.Fprintf(&b, ": did you mean %q?", near)
	}
	fmt.Fprintf(&b, " (known: %s)", strings.Join(known, ", "))
	return b.String()
}

// closest returns the candidate nearest to s by edit distance, when near
// enough (at most 2 edits) to be a typo of it; "" otherwise.
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // no typo is that long; keep the cost bounded
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// String reads a scalar that must hold text, reporting at v what it holds
// instead. Numbers are text (an image id may be all digits); a plain
// true/false or an empty value is not. key names the value in messages.
func (d *Doc) String(v *yaml.Node, key string) (string, bool) {
	switch {
	case v.Kind != yaml.ScalarNode:
		d.Errorf(v, "%s must be a string, not %s", key, Describe(v))
		return "", false
	case v.ShortTag() == "!!null" && v.Style == 0:
		d.Errorf(v, "%s has no value: give it one or remove the key", key)
		return "", false
	case v.ShortTag() == "!!bool" && v.Style == 0:
		d.Errorf(v, "%s is the boolean %s: write text (quote it if you mean the word)", key, v.Value)
		return "", false
	}
	return v.Value, true
}

// IsNull reports whether n is an empty value (key: with nothing after it, or ~).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Describe names what n is, for messages: "a mapping", "a list", "empty",
// the value "x" (cut at 40 characters).
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("the value %q", truncate(n.Value, 40))
	default:
		return "an alias"
	}
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}

// KeyCheck says how CheckKeys names things at the top of the checked node.
type KeyCheck struct {
	// Context follows an unknown key at the top level ("for type ec2");
	// below it, keys are placed by their path ("in ssh").
	Context string
	// Extra are keys accepted at the top level besides the struct's, listed
	// first in messages (keys the caller reads itself).
	Extra []string
}

// CheckKeys reports every key of n that v (a struct, or a pointer to one)
// does not declare, at every level: structs, pointers, lists and maps of them.
// Keys are what yaml.v3 decodes: the yaml tag's name, the lower-cased field
// name when untagged, inline structs' keys; not "-" or unexported fields.
// yaml.Node fields are left to their owner. Aliases are followed, each once.
func CheckKeys(file string, n *yaml.Node, v any, kc KeyCheck) Errors {
	c := keyChecker{file: file, kc: kc, seen: map[*yaml.Node]bool{}}
	c.check(n, reflect.TypeOf(v), "", 0)
	return c.errs
}

// Decode checks n's keys against v (CheckKeys) and decodes n into v, the way
// yaml.v3 does. A key error is Errors; a decoding error yaml.v3's, after the file name.
func Decode(file string, n *yaml.Node, v any, kc KeyCheck) error {
	if errs := CheckKeys(file, n, v, kc); len(errs) > 0 {
		return errs
	}
	if err := n.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

type keyChecker struct {
	file string
	kc   KeyCheck
	seen map[*yaml.Node]bool // alias targets already checked
	errs Errors
}

var nodeType = reflect.TypeOf(yaml.Node{})

func (c *keyChecker) check(n *yaml.Node, t reflect.Type, where string, depth int) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t == nodeType || depth > 2*DefaultMaxDepth || len(c.errs) > DefaultMaxErrors {
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || c.seen[n.Alias] {
			return
		}
		c.seen[n.Alias] = true
		n = n.Alias
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := structKeys(t)
		for _, f := range Pairs(n) {
			ft, ok := fields[f.Key.Value]
			switch {
			case ok:
				c.check(f.Value, ft, join(where, f.Key.Value), depth+1)
			case where == "" && slices.Contains(c.kc.Extra, f.Key.Value):
			default:
				c.unknown(f.Key, where, fields)
			}
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for _, e := range n.Content {
			c.check(e, t.Elem(), where, depth+1)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for _, f := range Pairs(n) {
			c.check(f.Value, t.Elem(), join(where, f.Key.Value), depth+1)
		}
	}
}

func (c *keyChecker) unknown(k *yaml.Node, where string, fields map[string]reflect.Type) {
	known := slices.Sorted(func(yield func(string) bool) {
		for name := range fields {
			if !yield(name) {
				return
			}
		}
	})
	context := strings.TrimPrefix(in(where), " ")
	if where == "" {
		known = append(slices.Clone(c.kc.Extra), known...)
		context = c.kc.Context
	}
	c.errs = append(c.errs, Error{File: c.file, Line: k.Line, Col: k.Column, Msg: UnknownKey(k.Value, context, known)})
}

// structKeys maps the keys yaml.v3 decodes into struct type t to their types.
func structKeys(t reflect.Type) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if slices.Contains(strings.Split(opts, ","), "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, kt := range structKeys(ft) {
					keys[k] = kt
				}
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys[name] = f.Type
	}
	return keys
}
