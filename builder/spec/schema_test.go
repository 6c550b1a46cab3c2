package spec

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/schema"
)

//go:embed testdata/schema
var schemaCases embed.FS

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(schema.Generator, &s); err != nil {
		t.Fatalf("schema/generator.schema.json: %v", err)
	}
	return s
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestSchemaKeys keeps the schema's keys and rules in step with the parser's.
func TestSchemaKeys(t *testing.T) {
	s := loadSchema(t)
	props := s["properties"].(map[string]any)
	cloud := s["$defs"].(map[string]any)["cloud"].(map[string]any)
	checks := []struct {
		what      string
		got, want any
	}{
		{"draft", s["$schema"], "https://json-schema.org/draft/2020-12/schema"},
		{"top-level keys", keysOf(props), slices.Sorted(slices.Values(topKeys))},
		{"cloud keys", keysOf(cloud["properties"].(map[string]any)), slices.Sorted(slices.Values(cloudKeys))},
		{"top-level additionalProperties", s["additionalProperties"], false},
		{"cloud additionalProperties", cloud["additionalProperties"], false},
		{"clouds entries", props["clouds"].(map[string]any)["additionalProperties"], map[string]any{"$ref": "#/$defs/cloud"}},
		{"name pattern", props["name"].(map[string]any)["pattern"], NamePattern},
		{"name length", props["name"].(map[string]any)["maxLength"], float64(MaxNameLen)},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("schema %s = %v, parser has %v", c.what, c.got, c.want)
		}
	}
	// Every key the schema lists is one the parser accepts, and the reverse:
	// a spec using each key alone is never refused as an unknown key.
	for _, k := range keysOf(props) {
		_, err := ParseBytes(nil, "k.yaml", []byte(k+": x\n"), Options{})
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("schema key %q: parser says %v", k, err)
		}
	}
	for _, k := range keysOf(cloud["properties"].(map[string]any)) {
		_, err := ParseBytes(nil, "k.yaml", []byte("clouds: {c: {"+k+": x}}\n"), Options{})
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("schema cloud key %q: parser says %v", k, err)
		}
	}
}

// TestSchemaAgreesWithParser checks the specs under testdata/schema against
// both the schema and the parser: valid/ must pass both, invalid/ fail both.
func TestSchemaAgreesWithParser(t *testing.T) {
	s := loadSchema(t)
	repo := fstest.MapFS{"scripts/setup.sh": {Data: []byte("echo setup\n")}}
	for _, dir := range []string{"valid", "invalid"} {
		files, err := fs.Glob(schemaCases, "testdata/schema/"+dir+"/*.yaml")
		if err != nil || len(files) < 3 {
			t.Fatalf("%s: %v, %d files", dir, err, len(files))
		}
		for _, f := range files {
			t.Run(dir+"/"+path.Base(f), func(t *testing.T) {
				data, err := fs.ReadFile(schemaCases, f)
				if err != nil {
					t.Fatal(err)
				}
				var doc any
				if err := yaml.Unmarshal(data, &doc); err != nil {
					t.Fatal(err)
				}
				schemaErr := validateSchema(s, s, doc, "")
				_, parseErr := ParseBytes(repo, f, data, Options{})
				if dir == "valid" && (schemaErr != nil || parseErr != nil) {
					t.Errorf("want valid; schema: %v; parser: %v", schemaErr, parseErr)
				}
				if dir == "invalid" && (schemaErr == nil || parseErr == nil) {
					t.Errorf("want invalid; schema: %v; parser: %v", schemaErr, parseErr)
				}
			})
		}
	}
}

// validateSchema checks v against the subset of JSON Schema 2020-12 the
// generator schema uses. It refuses keywords it does not know, so the schema
// cannot grow past what this test checks.
func validateSchema(root, s map[string]any, v any, at string) error {
	for kw := range s {
		switch kw {
		case "$schema", "$id", "$defs", "title", "description",
			"type", "properties", "additionalProperties", "required", "minProperties",
			"items", "minItems", "pattern", "minLength", "maxLength", "not", "oneOf", "$ref":
		default:
			return fmt.Errorf("%s: keyword %q is not supported by this test's validator", at, kw)
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		target := root
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			target = target[part].(map[string]any)
		}
		if err := validateSchema(root, target, v, at); err != nil {
			return err
		}
	}
	if t, ok := s["type"]; ok {
		types := []any{t}
		if ts, ok := t.([]any); ok {
			types = ts
		}
		if !slices.ContainsFunc(types, func(t any) bool { return hasType(v, t.(string)) }) {
			return fmt.Errorf("%s: %v is not of type %v", at, v, t)
		}
	}
	switch v := v.(type) {
	case string:
		n := len([]rune(v))
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			return fmt.Errorf("%s: %q does not match %s", at, v, p)
		}
		if m, ok := s["minLength"].(float64); ok && n < int(m) {
			return fmt.Errorf("%s: shorter than %v", at, m)
		}
		if m, ok := s["maxLength"].(float64); ok && n > int(m) {
			return fmt.Errorf("%s: longer than %v", at, m)
		}
	case []any:
		if m, ok := s["minItems"].(float64); ok && len(v) < int(m) {
			return fmt.Errorf("%s: fewer than %v items", at, m)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range v {
				if err := validateSchema(root, items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	case map[string]any:
		if m, ok := s["minProperties"].(float64); ok && len(v) < int(m) {
			return fmt.Errorf("%s: fewer than %v properties", at, m)
		}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := v[r.(string)]; !ok {
					return fmt.Errorf("%s: %v is required", at, r)
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, e := range v {
			if ps, ok := props[k].(map[string]any); ok {
				if err := validateSchema(root, ps, e, at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s: property %q is not allowed", at, k)
				}
			case map[string]any:
				if err := validateSchema(root, ap, e, at+"."+k); err != nil {
					return err
				}
			}
		}
	}
	if not, ok := s["not"].(map[string]any); ok {
		if validateSchema(root, not, v, at) == nil {
			return fmt.Errorf("%s: matches a schema it must not", at)
		}
	}
	if one, ok := s["oneOf"].([]any); ok {
		n := 0
		for _, o := range one {
			if validateSchema(root, o.(map[string]any), v, at) == nil {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: matches %d of the oneOf schemas, want exactly 1", at, n)
		}
	}
	return nil
}

func hasType(v any, t string) bool {
	switch v.(type) {
	case string:
		return t == "string"
	case int, int64, uint64:
		return t == "number" || t == "integer"
	case float64:
		return t == "number"
	case bool:
		return t == "boolean"
	case nil:
		return t == "null"
	case []any:
		return t == "array"
	case map[string]any:
		return t == "object"
	}
	return false
}
