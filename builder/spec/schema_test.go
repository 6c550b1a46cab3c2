package spec

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/manifest"
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
		{"manifest keys", keysOf(sub(props, "manifest", "properties")), slices.Sorted(slices.Values(manifestKeys))},
		{"drift keys", keysOf(sub(props, "drift", "properties")), slices.Sorted(slices.Values(driftKeys))},
		{"manifest additionalProperties", sub(props, "manifest")["additionalProperties"], false},
		{"drift additionalProperties", sub(props, "drift")["additionalProperties"], false},
		{"manifest files limit", sub(props, "manifest", "properties", "files")["maxItems"], float64(manifest.MaxFilePatterns)},
		{"drift ignore limit", sub(props, "drift", "properties", "ignore")["maxItems"], float64(MaxIgnorePatterns)},
		{"image filter keys", keysOf(sub(s, "$defs", "imageFilter", "properties")), slices.Sorted(slices.Values(imageFilterKeys))},
		{"rebuild keys", keysOf(sub(props, "rebuild", "properties")), slices.Sorted(slices.Values(rebuildKeys))},
		{"visibilities", sub(s, "$defs", "imageFilter", "properties", "visibility")["enum"], Visibilities},
		{"keep limit", sub(props, "keep")["maximum"], float64(MaxKeep)},
		{"on_drift values", sub(props, "drift", "properties", "on_drift")["enum"], []any{OnDriftWarn, OnDriftFail}},
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

// sub walks down nested objects of a decoded schema.
func sub(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

// compileSchema compiles schema/generator.schema.json with a JSON Schema
// 2020-12 validator; the compiler checks the schema against its metaschema.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.Generator))
	if err != nil {
		t.Fatalf("schema/generator.schema.json: %v", err)
	}
	const url = "https://github.com/imagegen/imagegen/schema/generator.schema.json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("schema/generator.schema.json: %v", err)
	}
	return sch
}

// TestSchemaAgreesWithParser checks the specs under testdata/schema against
// both the schema and the parser: valid/ must pass both, invalid/ fail both.
// The repository's example specs must pass both too.
func TestSchemaAgreesWithParser(t *testing.T) {
	sch := compileSchema(t)
	repo := fstest.MapFS{"scripts/setup.sh": {Data: []byte("echo setup\n")}, "scripts/dstat.sh": {Data: []byte("apt-get install -y dstat\n")}}
	for _, set := range []struct {
		name  string
		fsys  fs.FS
		glob  string
		valid bool
	}{
		{"valid", schemaCases, "testdata/schema/valid/*.yaml", true},
		{"invalid", schemaCases, "testdata/schema/invalid/*.yaml", false},
		{"examples", os.DirFS("../../examples"), ".imagegen/*.y*ml", true},
		{"validate-good", os.DirFS("../../cmd/imagegen/testdata/validate/good"), ".imagegen/*.y*ml", true},
	} {
		files, err := fs.Glob(set.fsys, set.glob)
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: %v, %d files", set.name, err, len(files))
		}
		for _, f := range files {
			t.Run(set.name+"/"+path.Base(f), func(t *testing.T) {
				data, err := fs.ReadFile(set.fsys, f)
				if err != nil {
					t.Fatal(err)
				}
				var doc any
				if err := yaml.Unmarshal(data, &doc); err != nil {
					t.Fatal(err)
				}
				schemaErr := sch.Validate(doc)
				_, parseErr := ParseBytes(repo, f, data, Options{})
				if set.valid && (schemaErr != nil || parseErr != nil) {
					t.Errorf("want valid; schema: %v; parser: %v", schemaErr, parseErr)
				}
				if !set.valid && (schemaErr == nil || parseErr == nil) {
					t.Errorf("want invalid; schema: %v; parser: %v", schemaErr, parseErr)
				}
			})
		}
	}
}
