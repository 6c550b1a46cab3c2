package config_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/clouds/sshhost"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/schema"
)

// The config's JSON Schema (schema/config.schema.json, for editors) is kept
// in step with the loader: these tests fail when a key is added to one and
// not the other, or when an example stops matching it.

func loadConfigSchema(t *testing.T) (*jsonschema.Schema, map[string]any) {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(schema.Config, &raw); err != nil {
		t.Fatalf("schema/config.schema.json: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.Config))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("config.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("config.schema.json")
	if err != nil {
		t.Fatalf("compile the config schema: %v", err)
	}
	return sch, raw
}

// yamlToJSON turns a YAML document into the value a JSON Schema validator takes.
func yamlToJSON(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(dir)
}

func TestExamplesMatchConfigSchema(t *testing.T) {
	sch, _ := loadConfigSchema(t)
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), "examples", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("# yaml-language-server: $schema=../schema/config.schema.json\n")) {
			t.Errorf("%s does not point editors at ../schema/config.schema.json", f)
		}
		if err := sch.Validate(yamlToJSON(t, data)); err != nil {
			t.Errorf("%s does not match the schema: %v", f, err)
		}
	}
}

// TestREADMEConfigMatchesSchema: the README's server config (every yaml
// block that starts with "listen:") matches the schema, so the documentation
// shows keys that exist.
func TestREADMEConfigMatchesSchema(t *testing.T) {
	sch, _ := loadConfigSchema(t)
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(listen:.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no yaml block starting with listen:")
	}
	for _, b := range blocks {
		if err := sch.Validate(yamlToJSON(t, b[1])); err != nil {
			t.Errorf("README.md's server config does not match the schema: %v\n%s", err, b[1])
		}
	}
}

func TestConfigSchemaRejects(t *testing.T) {
	sch, _ := loadConfigSchema(t)
	for _, doc := range []string{
		"listne: :8080",
		"github: {webhook_secret: x, app_di: 5}",
		"clouds: {a: {type: openstack, flavour: m1.small}}",
		"clouds: {a: {type: vmware}}",
		"clouds: {a: {type: qemu, dir: /d, accel: hvf}}",
		"build: {timeout: soon}",
		"clouds: {a: {type: ec2, password: hunter2}}",
		"clouds: {a: {type: openstack, cloud: c, host_key: tofu}}",
		"clouds: {a: {type: ec2, region: us-east-1, host_key: 'ssh-ed25519 AAAA'}}",
		"clouds: {a: {type: ssh, host: h, private_key_file: k}}",
		"clouds: {a: {type: simulated, ssh: {host: h, private_key_file: k}}}",
		"read_access: everyone",
		"api_tokens: [{token: x}]",
		"api_tokens: [{token: x, scopes: [write]}]",
		"api_tokens: [{token: x, token_file: /t, scopes: [read]}]",
		"api_tokens: [{token: x, scopes: [read], repos: [fg]}]",
		"allow: {}",
		"allow: {repos: []}",
		"allow: {repos: [fg]}",
		"allow: {branches: [refs/heads/main]}",
		"allow: {repo: [fg/*]}",
		"clouds: {a: {type: simulated, allow: {}}}",
		"clouds: {a: {type: ec2, allow: {repos: [fg/a/b]}}}",
		"clouds: {a: {type: ssh, host: h, host_key: k, allow: {branch: [main]}}}",
		"github: {allow_repos: [fg]}",
		"github: {allow_repos: []}",
	} {
		if err := sch.Validate(yamlToJSON(t, []byte(doc))); err == nil {
			t.Errorf("the schema accepts %q, which imagegen refuses", doc)
		}
	}
}

// yamlKeys lists the yaml keys of a struct type's fields.
func yamlKeys(t reflect.Type) map[string]reflect.Type {
	keys := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys[name] = f.Type
	}
	return keys
}

// deref follows node's "$ref" to a definition of the schema root raw
// ("#/$defs/NAME"), if it has one.
func deref(raw map[string]any, node any) any {
	m, _ := node.(map[string]any)
	ref, ok := m["$ref"].(string)
	if !ok {
		return node
	}
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	if !ok {
		return node
	}
	return raw["$defs"].(map[string]any)[name]
}

func propNames(t *testing.T, node any, where string) []string {
	t.Helper()
	m, _ := node.(map[string]any)
	props, ok := m["properties"].(map[string]any)
	if !ok {
		t.Fatalf("schema %s has no properties", where)
	}
	var names []string
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestConfigSchemaKeys: the schema's keys are the Config struct's, at the top
// level and in each section.
func TestConfigSchemaKeys(t *testing.T) {
	_, raw := loadConfigSchema(t)
	top := yamlKeys(reflect.TypeFor[config.Config]())
	if got, want := propNames(t, raw, "top level"), sortedKeys(top); !slices.Equal(got, want) {
		t.Errorf("schema top-level keys %v; the loader reads %v", got, want)
	}
	props := raw["properties"].(map[string]any)
	for key, typ := range top {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[config.Config]().PkgPath() {
			continue
		}
		if got, want := propNames(t, deref(raw, props[key]), key), sortedKeys(yamlKeys(typ)); !slices.Equal(got, want) {
			t.Errorf("schema keys of %s: %v; the loader reads %v", key, got, want)
		}
	}
}

// TestAPITokenSchemaKeys: the mapping form of api_tokens has the loader's keys.
func TestAPITokenSchemaKeys(t *testing.T) {
	_, raw := loadConfigSchema(t)
	items := raw["properties"].(map[string]any)["api_tokens"].(map[string]any)["items"].(map[string]any)
	var obj any
	for _, alt := range items["anyOf"].([]any) {
		if alt.(map[string]any)["type"] == "object" {
			obj = alt
		}
	}
	if got, want := propNames(t, obj, "api_tokens[]"), sortedKeys(yamlKeys(reflect.TypeFor[config.APIToken]())); !slices.Equal(got, want) {
		t.Errorf("schema keys of an api_tokens mapping: %v; the loader reads %v", got, want)
	}
}

// TestCommonCloudKeysInSchema: every cloud type's schema has the keys the
// loader reads for every cloud (type, password, allow), allow being the
// same definition as the top-level one, whose keys are config.Allow's.
func TestCommonCloudKeysInSchema(t *testing.T) {
	_, raw := loadConfigSchema(t)
	defs := raw["$defs"].(map[string]any)
	if got, want := propNames(t, defs["allow"], "$defs/allow"), sortedKeys(yamlKeys(reflect.TypeFor[config.Allow]())); !slices.Equal(got, want) {
		t.Errorf("schema keys of allow: %v; the loader reads %v", got, want)
	}
	if ref := raw["properties"].(map[string]any)["allow"].(map[string]any)["$ref"]; ref != "#/$defs/allow" {
		t.Errorf("the top-level allow is %v, want #/$defs/allow", ref)
	}
	for name, def := range defs {
		if !strings.HasPrefix(name, "cloud_") {
			continue
		}
		props := def.(map[string]any)["properties"].(map[string]any)
		for _, k := range []string{"type", "password", "allow"} {
			if props[k] == nil {
				t.Errorf("$defs/%s has no %s, a key of every cloud", name, k)
			}
		}
		if a, _ := props["allow"].(map[string]any); a != nil && a["$ref"] != "#/$defs/allow" {
			t.Errorf("$defs/%s.allow is %v, want #/$defs/allow", name, a["$ref"])
		}
	}
}

// knownKeys asks a driver which keys it knows: its refusal of an unknown key
// lists them.
var knownRE = regexp.MustCompile(`\(known: ([^)]*)\)`)

// TestCloudSchemaKeys: for each cloud type, the schema's keys are the ones its
// driver accepts.
func TestCloudSchemaKeys(t *testing.T) {
	_, raw := loadConfigSchema(t)
	defs := raw["$defs"].(map[string]any)
	reg := clouds.NewRegistry()
	reg.Register(openstack.Type, openstack.Configure)
	reg.Register(ec2.Type, ec2.Configure)
	reg.Register(qemu.Type, qemu.Configure)
	reg.Register(sshhost.Type, sshhost.Configure)
	reg.Register(simulated.Type, simulated.Configure)
	for _, typ := range reg.Types() {
		t.Run(typ, func(t *testing.T) {
			def, ok := defs["cloud_"+typ]
			if !ok {
				t.Fatalf("the schema has no $defs/cloud_%s", typ)
			}
			var n yaml.Node
			if err := yaml.Unmarshal([]byte("{type: "+typ+", zz_no_such_key: 1}"), &n); err != nil {
				t.Fatal(err)
			}
			_, err := reg.Configure(clouds.Config{Name: "c", Type: typ, Node: n.Content[0], File: "imagegen.yaml"})
			if err == nil {
				t.Fatal("the driver accepts an unknown key")
			}
			m := knownRE.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("the driver's refusal lists no known keys: %v", err)
			}
			known := strings.Split(m[1], ", ")
			sort.Strings(known)
			if got := propNames(t, def, "cloud_"+typ); !slices.Equal(got, known) {
				t.Errorf("schema keys %v; the driver knows %v", got, known)
			}
		})
	}
}
