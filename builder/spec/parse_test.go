package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var testOpts = Options{Clouds: map[string]bool{"hotel": true, "ec2": true, "box": false}}

const goodSpec = `name: dstat
script: |
  sudo apt-get update
  sudo apt-get install -y dstat
branches: [main, release]
clouds:
  hotel:
    image: 6e5959e9
    ssh_user: ubuntu
    size: m1.small
  ec2:
    image: ami-0123
    ssh_user: ubuntu
`

func TestParseGood(t *testing.T) {
	repo := fstest.MapFS{
		"scripts/setup.sh": {Data: []byte("echo hi\n")},
	}
	tests := []struct {
		name string
		file string
		src  string
		opts Options
		want Spec
	}{
		{
			name: "full", file: ".imagegen/x.yaml", src: goodSpec, opts: testOpts,
			want: Spec{Name: "dstat", Script: "sudo apt-get update\nsudo apt-get install -y dstat\n", Branches: []string{"main", "release"},
				Clouds: map[string]CloudSpec{"hotel": {Image: "6e5959e9", SSHUser: "ubuntu", Size: "m1.small"}, "ec2": {Image: "ami-0123", SSHUser: "ubuntu"}}},
		},
		{
			name: "name from file, script_file cleaned", file: ".imagegen/base-image.yml", opts: testOpts,
			src:  "script_file: ./scripts//setup.sh\nclouds: {hotel: {image: i, ssh_user: u}}\n",
			want: Spec{Name: "base-image", Script: "echo hi\n", ScriptFile: "scripts/setup.sh", Clouds: map[string]CloudSpec{"hotel": {Image: "i", SSHUser: "u"}}},
		},
		{
			name: "ssh cloud needs no image", file: ".imagegen/b.yaml", opts: testOpts,
			src:  "script: x\nclouds: {box: {ssh_user: root}}\n",
			want: Spec{Name: "b", Script: "x", Clouds: map[string]CloudSpec{"box": {SSHUser: "root"}}},
		},
		{
			name: "no config: any cloud name, image not required", file: "c.yaml", opts: Options{},
			src:  "script: x\nclouds: {anywhere: {ssh_user: root}}\n",
			want: Spec{Name: "c", Script: "x", Clouds: map[string]CloudSpec{"anywhere": {SSHUser: "root"}}},
		},
		{
			name: "manifest and drift", file: "m.yaml", opts: testOpts,
			src: "script: x\nclouds: {hotel: {image: i, ssh_user: u}}\n" +
				"manifest: {files: [/etc/ssh/sshd_config, '/usr/local/bin/*'], required: true}\n" +
				"drift:\n  ignore: [\"linux-image-*\", cloud-init, \"@kernel\"]\n  on_drift: fail\n",
			want: Spec{Name: "m", Script: "x", Clouds: map[string]CloudSpec{"hotel": {Image: "i", SSHUser: "u"}},
				Manifest: Manifest{Files: []string{"/etc/ssh/sshd_config", "/usr/local/bin/*"}, Required: true},
				Drift:    Drift{Ignore: []string{"linux-image-*", "cloud-init", "@kernel"}, OnDrift: OnDriftFail}},
		},
		{
			name: "numbers and explicit !!str are text", file: "d.yaml", opts: testOpts,
			src:  "name: !!str 42\nscript: x\nclouds: {hotel: {image: 12345, ssh_user: u, size: 2}}\n",
			want: Spec{Name: "42", Script: "x", Clouds: map[string]CloudSpec{"hotel": {Image: "12345", SSHUser: "u", Size: "2"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseBytes(repo, tt.file, []byte(tt.src), tt.opts)
			if err != nil {
				t.Fatalf("ParseBytes: %v", err)
			}
			if s.Digest == "" || s.Digest != ComputeDigest(s) {
				t.Errorf("Digest = %q, want ComputeDigest = %q", s.Digest, ComputeDigest(s))
			}
			tt.want.File = tt.file
			tt.want.Digest = s.Digest
			tt.want.namePos = s.namePos
			if !reflect.DeepEqual(*s, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *s, tt.want)
			}
		})
	}
}

type wantErr struct {
	file      string // "" means the spec itself
	line, col int
	msg       string // a fragment the message must contain
}

func TestParseErrors(t *testing.T) {
	repo := fstest.MapFS{
		"scripts/ok.sh":     {Data: []byte("echo ok\n")},
		"scripts/latin1.sh": {Data: []byte("echo ok\n# caf\xe9\n")},
		"scripts/empty.sh":  {Data: []byte("\n  \n")},
		"scripts/big.sh":    {Data: []byte(strings.Repeat("#", MaxFileSize+1))},
		"scripts/dir/a":     {Data: []byte("x")},
	}
	const tail = "clouds: {hotel: {image: i, ssh_user: u}}\n"
	tests := []struct {
		name string
		file string // default .imagegen/t.yaml
		src  string
		want []wantErr
	}{
		{"invalid yaml", "", "script: x\nclouds:\n  hotel: {image: i\n  ec2: x\n", []wantErr{{"", 3, 3, "invalid YAML: did not find expected ',' or '}'"}}},
		{"bad indentation", "", "script: x\n  clouds: y\n", []wantErr{{"", 2, 3, "invalid YAML: mapping values are not allowed"}}},
		{"tab indentation", "", "script: x\nclouds:\n\thotel: {}\n", []wantErr{{"", 3, 2, "invalid YAML: found character that cannot start any token"}}},
		{"empty file", "", "", []wantErr{{"", 1, 1, "the spec is empty"}}},
		{"only comments", "", "# nothing\n", []wantErr{{"", 1, 1, "the spec is empty"}}},
		{"not a mapping", "", "- a\n- b\n", []wantErr{{"", 1, 1, "a spec is a mapping (name:, script:, clouds:, ...), not a list"}}},
		{"two documents", "", "script: x\n" + tail + "---\nscript: y\n", []wantErr{{"", 3, 1, "one YAML document"}}},
		{"unknown top key with hint", "", "scrpit: x\nscript: y\n" + tail, []wantErr{{"", 1, 1, `unknown key "scrpit": did you mean "script"? (known: branches, channel, clouds, drift, keep, keep_failed, manifest, name, rebuild, script, script_file, test, test_file, test_timeout)`}}},
		{"unknown cloud key", "", "script: x\nclouds:\n  hotel:\n    image: i\n    ssh_user: u\n    flavor: big\n", []wantErr{{"", 6, 5, `unknown key "flavor" in clouds.hotel (known: image, size, ssh_user)`}}},
		{"duplicate key", "", "script: x\nscript: y\n" + tail, []wantErr{{"", 2, 1, `key "script" is already set at line 1`}}},
		{"no script", "", "name: a\n" + tail, []wantErr{{"", 1, 1, "no script: set script (the commands, inline) or script_file"}}},
		{"empty script", "", "script: \"  \"\n" + tail, []wantErr{{"", 1, 9, "script is empty"}}},
		{"null script", "", "script:\n" + tail, []wantErr{{"", 1, 8, "script has no value"}}},
		{"both script and script_file", "", "script_file: scripts/ok.sh\n" + tail + "script: x\n", []wantErr{{"", 3, 1, "set either script (inline) or script_file"}}},
		{"script_file up", "", "script_file: ../x.sh\n" + tail, []wantErr{{"", 1, 14, `script_file "../x.sh" leads out of the repository`}}},
		{"script_file up after clean", "", "script_file: scripts/../../x.sh\n" + tail, []wantErr{{"", 1, 14, "leads out of the repository"}}},
		{"script_file absolute", "", "script_file: /etc/passwd\n" + tail, []wantErr{{"", 1, 14, `script_file "/etc/passwd" is an absolute path`}}},
		{"script_file missing", "", "script_file: scripts/nope.sh\n" + tail, []wantErr{{"", 1, 14, `script_file "scripts/nope.sh" does not exist in the repository`}}},
		{"script_file directory", "", "script_file: scripts/dir\n" + tail, []wantErr{{"", 1, 14, "is a directory"}}},
		{"script_file empty", "", "script_file: scripts/empty.sh\n" + tail, []wantErr{{"", 1, 14, "is empty"}}},
		{"script_file too large", "", "script_file: scripts/big.sh\n" + tail, []wantErr{{"", 1, 14, `script_file "scripts/big.sh" is 1048577 bytes, over the limit of 1048576 bytes (1 MiB)`}}},
		{"script_file not utf-8", "", "script_file: scripts/latin1.sh\n" + tail, []wantErr{{"scripts/latin1.sh", 2, 6, "not valid UTF-8 (byte 0xe9)"}}},
		{"unknown cloud", "", "script: x\nclouds:\n  sierra: {image: i, ssh_user: u}\n", []wantErr{{"", 3, 3, `unknown cloud "sierra": the server config defines box, ec2, hotel`}}},
		{"missing image and user", "", "script: x\nclouds:\n  hotel: {size: s}\n", []wantErr{
			{"", 3, 3, "clouds.hotel: image is missing"},
			{"", 3, 3, "clouds.hotel: ssh_user is missing"},
		}},
		{"ssh cloud still needs user", "", "script: x\nclouds:\n  box: {}\n", []wantErr{{"", 3, 3, "clouds.box: ssh_user is missing"}}},
		{"empty cloud", "", "script: x\nclouds:\n  hotel:\n", []wantErr{{"", 3, 3, "clouds.hotel is empty"}}},
		{"empty image", "", "script: x\nclouds:\n  hotel: {image: '', ssh_user: u}\n", []wantErr{{"", 3, 18, "clouds.hotel.image is empty"}}},
		{"bad ssh_user", "", "script: x\nclouds:\n  hotel: {image: i, ssh_user: 'a b'}\n", []wantErr{{"", 3, 31, `ssh_user "a b" is not a user name`}}},
		{"no clouds", "", "script: x\n", []wantErr{{"", 1, 1, "no clouds: add clouds:"}}},
		{"null clouds", "", "script: x\nclouds:\n", []wantErr{{"", 2, 1, "no clouds"}}},
		{"empty clouds", "", "script: x\nclouds: {}\n", []wantErr{{"", 2, 9, "clouds is empty"}}},
		{"clouds is a list", "", "script: x\nclouds: [a]\n", []wantErr{{"", 2, 9, "clouds must be a mapping of cloud name to settings, not a list"}}},
		{"cloud is a string", "", "script: x\nclouds: {hotel: big}\n", []wantErr{{"", 2, 17, `clouds.hotel must be a mapping with image and ssh_user, not the value "big"`}}},
		{"branches is a string", "", "script: x\nbranches: main\n" + tail, []wantErr{{"", 2, 11, `branches must be a list, not the value "main": write branches: [main]`}}},
		{"branches empty", "", "script: x\nbranches: []\n" + tail, []wantErr{{"", 2, 11, "branches is empty"}}},
		{"bad branch", "", "script: x\nbranches: [main, 'a b', [x]]\n" + tail, []wantErr{
			{"", 2, 18, `branch "a b" is not a valid branch name`},
			{"", 2, 25, "a branch must be a string, not a list"},
		}},
		{"boolean user", "", "script: x\nclouds: {hotel: {image: i, ssh_user: true}}\n", []wantErr{{"", 2, 38, "clouds.hotel.ssh_user is the boolean true: write text"}}},
		{"script is a mapping", "", "script: {a: b}\n" + tail, []wantErr{{"", 1, 9, "script must be a string, not a mapping"}}},
		{"bad name", "", "name: Dstat Tool\nscript: x\n" + tail, []wantErr{{"", 1, 7, `name "Dstat Tool" is not a valid generator name: use lower-case letters, digits, '.', '_' and '-'`}}},
		{"empty name", "", "name: ''\nscript: x\n" + tail, []wantErr{{"", 1, 7, "name is empty"}}},
		{"name too long", "", "name: " + strings.Repeat("a", 65) + "\nscript: x\n" + tail, []wantErr{{"", 1, 7, "is 65 characters long: keep it to 64"}}},
		{"bad name from file", ".imagegen/My Spec.yaml", "script: x\n" + tail, []wantErr{{".imagegen/My Spec.yaml", 1, 1, `the generator name defaults to the file name, and "My Spec" is not a valid generator name`}}},
		{"not utf-8", "", "script: x\nname: caf\xe9\n" + tail, []wantErr{{"", 2, 10, "not valid UTF-8 (byte 0xe9)"}}},
		{"control character", "", "script: x\x01\n" + tail, []wantErr{{"", 1, 10, "control character U+0001"}}},
		{"anchor and alias", "", "script: x\nclouds:\n  hotel: &c {image: i, ssh_user: u}\n  ec2: *c\n", []wantErr{
			{"", 3, 10, "anchors (&c) are not allowed"},
			{"", 4, 8, "aliases (*c) are not allowed"},
		}},
		{"merge key", "", "script: x\nclouds:\n  hotel: {image: i, ssh_user: u}\n  ec2:\n    <<: *x\n", []wantErr{{"", 5, 9, "invalid YAML: unknown anchor 'x' referenced (and anchors and aliases are not allowed"}}},
		{"custom tag", "", "script: !sh x\n" + tail, []wantErr{{"", 1, 9, "YAML tags (!sh) are not allowed"}}},
		{"complex key", "", "? [a]\n: b\nscript: x\n" + tail, []wantErr{{"", 1, 3, "keys must be plain names, not a list"}}},
		{"manifest is a list", "", "script: x\nmanifest: [a]\n" + tail, []wantErr{{"", 2, 11, "manifest must be a mapping, not a list: write manifest: {files: [/etc/ssh/sshd_config], required: false}"}}},
		{"manifest without a value", "", "script: x\nmanifest:\n" + tail, []wantErr{{"", 2, 10, "manifest has no value"}}},
		{"manifest unknown key", "", "script: x\nmanifest: {file: [/etc/x]}\n" + tail, []wantErr{{"", 2, 12, `unknown key "file" in manifest: did you mean "files"?`}}},
		{"manifest files", "", "script: x\nmanifest:\n  files: [etc/passwd, '/a b', /ok, 5, '/$(reboot)']\n" + tail, []wantErr{
			{"", 3, 11, `manifest.files: manifest file "etc/passwd": not an absolute path`},
			{"", 3, 23, `manifest.files: manifest file "/a b": character ' ' is not allowed`},
			{"", 3, 36, `manifest file "5": not an absolute path`},
			{"", 3, 39, `manifest file "/$(reboot)": character '$' is not allowed`},
		}},
		{"manifest files not a list", "", "script: x\nmanifest: {files: /etc/x}\n" + tail, []wantErr{{"", 2, 19, "manifest.files must be a list, not the value \"/etc/x\""}}},
		{"manifest required not a boolean", "", "script: x\nmanifest: {required: 'yes'}\n" + tail, []wantErr{{"", 2, 22, `manifest.required must be true or false, not the value "yes"`}}},
		{"too many manifest files", "", "script: x\nmanifest: {files: [" + strings.Repeat("/a,", 101) + "]}\n" + tail, []wantErr{{"", 2, 19, "manifest.files has 101 entries: at most 100"}}},
		{"drift", "", "script: x\ndrift:\n  ignore: ['[a-', '']\n  on_drift: error\n" + tail, []wantErr{
			{"", 3, 12, `drift.ignore: drift ignore pattern "[a-": syntax error in pattern`},
			{"", 3, 19, `drift.ignore: drift ignore pattern "": empty or longer than 256 bytes`},
			{"", 4, 13, `drift.on_drift "error" is not warn or fail`},
		}},
		{"drift is a string", "", "script: x\ndrift: warn\n" + tail, []wantErr{{"", 2, 8, `drift must be a mapping, not the value "warn"`}}},
		{"several problems at once", "", "nme: x\nscript: x\nclouds: {sierra: {image: i, ssh_user: u}, hotel: {image: i}}\n", []wantErr{
			{"", 1, 1, `unknown key "nme": did you mean "name"?`},
			{"", 3, 10, `unknown cloud "sierra"`},
			{"", 3, 43, "clouds.hotel: ssh_user is missing"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = ".imagegen/t.yaml"
			}
			_, err := ParseBytes(repo, file, []byte(tt.src), testOpts)
			checkErrors(t, err, file, tt.want)
		})
	}
}

func checkErrors(t *testing.T, err error, file string, want []wantErr) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error = %v (%T), want spec.Errors", err, err)
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), es)
	}
	for i, w := range want {
		e := es[i]
		wf := w.file
		if wf == "" {
			wf = file
		}
		if e.File != wf || e.Line != w.line || e.Col != w.col || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d = %q\nwant %s:%d:%d: ...%s...", i, e.Error(), wf, w.line, w.col, w.msg)
		}
	}
}

func TestParseFileLimits(t *testing.T) {
	big := []byte("script: x\n" + strings.Repeat("#", MaxFileSize))
	repo := fstest.MapFS{".imagegen/big.yaml": {Data: big}, ".imagegen/ok.yaml": {Data: []byte(goodSpec)}}
	_, err := Parse(repo, ".imagegen/big.yaml", testOpts)
	if err == nil || !strings.Contains(err.Error(), ".imagegen/big.yaml: is 1048586 bytes, over the limit of 1048576 bytes (1 MiB)") {
		t.Errorf("Parse(big) = %v, want the size limit", err)
	}
	_, err = ParseBytes(nil, "x.yaml", big, testOpts)
	if err == nil || !strings.Contains(err.Error(), "x.yaml: is 1048586 bytes, over the limit") {
		t.Errorf("ParseBytes(big) = %v, want the size limit", err)
	}
	if _, err := Parse(repo, ".imagegen/ok.yaml", testOpts); err != nil {
		t.Errorf("Parse(ok) = %v", err)
	}
	_, err = Parse(repo, ".imagegen/none.yaml", testOpts)
	if err == nil || !strings.Contains(err.Error(), ".imagegen/none.yaml: does not exist") {
		t.Errorf("Parse(missing) = %v", err)
	}
	_, err = ParseBytes(nil, "x.yaml", []byte("script_file: a.sh\nclouds: {hotel: {image: i, ssh_user: u}}\n"), testOpts)
	if err == nil || !strings.Contains(err.Error(), "x.yaml:1:14: script_file \"a.sh\" cannot be read: no repository") {
		t.Errorf("ParseBytes(no repo) = %v", err)
	}
}

// TestHostileInput checks that inputs built to exhaust time or memory are
// answered quickly with an error.
func TestHostileInput(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	for i := 'b'; i <= 'z'; i++ {
		laughs.WriteString(string(i) + ": &" + string(i) + " [")
		for j := 0; j < 9; j++ {
			if j > 0 {
				laughs.WriteString(",")
			}
			laughs.WriteString("*" + string(i-1))
		}
		laughs.WriteString("]\n")
	}
	tests := []struct {
		name string
		src  string
		line int
		col  int
		msg  string
	}{
		{"billion laughs", laughs.String(), 1, 4, "anchors (&a) are not allowed"},
		{"deep flow nesting", "script: " + strings.Repeat("[", 9000) + strings.Repeat("]", 9000) + "\n", 1, 41, "nested more than 32 levels deep"},
		{"nesting past yaml's cap", "script: " + strings.Repeat("[", 20000) + "\n", 1, 1, "invalid YAML: exceeded max depth of 10000"},
		{"deep block nesting", strings.Repeat("- ", 5000) + "x\n", 1, 67, "nested more than 32 levels deep"},
		{"many unknown keys", manyKeys("k%d: 1\n", MaxFileSize-100), 1, 1, `unknown key "k0"`},
		{"many duplicate keys", strings.Repeat("x: 1\n", MaxFileSize/5), 2, 1, `key "x" is already set at line 1`},
		{"many errors in flow style", "script: x\nclouds: {" + manyKeys("c%d: 1, ", MaxFileSize-100) + "}\n", 2, 10, `unknown cloud "c0"`},
		{"1 MiB script", "script: |\n" + strings.Repeat("  echo aaaaaaaaaaaaaaaaaaaaaaaa\n", (MaxFileSize-100)/32) + "clouds: {hotel: {image: i, ssh_user: u}}\n", 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			s, err := ParseBytes(nil, "h.yaml", []byte(tt.src), testOpts)
			if d := time.Since(start); d > 10*time.Second { // about 1s on a loaded 2-core machine
				t.Errorf("took %s", d)
			}
			if tt.msg == "" {
				if err != nil || len(s.Script) < MaxFileSize/2 {
					t.Fatalf("got %v, want a spec with a large script", err)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error = %v, want spec.Errors", err)
			}
			if es[0].Line != tt.line || es[0].Col != tt.col || !strings.Contains(es[0].Msg, tt.msg) {
				t.Errorf("first error = %q, want h.yaml:%d:%d: ...%s...", es[0].Error(), tt.line, tt.col, tt.msg)
			}
			if len(es) > maxErrors+1 {
				t.Errorf("%d errors: the parser should stop reporting long before", len(es))
			}
		})
	}
}

// manyKeys repeats format with a counter up to about size bytes.
func manyKeys(format string, size int) string {
	var b strings.Builder
	for i := 0; b.Len() < size-20; i++ {
		fmt.Fprintf(&b, format, i)
	}
	return b.String()
}

func TestParseDir(t *testing.T) {
	spec := func(name string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("name: " + name + "\nscript: x\nclouds: {hotel: {image: i, ssh_user: u}}\n")}
	}
	repo := fstest.MapFS{
		".imagegen/b.yaml":         spec("b"),
		".imagegen/a.yml":          spec("a"),
		".imagegen/c.yaml":         spec("b"),
		".imagegen/notes.md":       {Data: []byte("not a spec")},
		".imagegen/sub/d.yaml":     spec("d"),
		".imagegen/broken.yaml":    {Data: []byte("script: [\n")},
		".imagegen/defaulted.yaml": {Data: []byte("script: x\nclouds: {hotel: {image: i, ssh_user: u}}\n")},
		".imagegen/e.yaml":         spec("defaulted"),
	}
	specs, err := ParseDir(repo, testOpts)
	var names []string
	for _, s := range specs {
		names = append(names, s.File+"="+s.Name)
	}
	if want := []string{".imagegen/a.yml=a", ".imagegen/b.yaml=b", ".imagegen/defaulted.yaml=defaulted"}; !reflect.DeepEqual(names, want) {
		t.Errorf("specs = %v, want %v", names, want)
	}
	checkErrors(t, err, "", []wantErr{
		{".imagegen/broken.yaml", 2, 1, "invalid YAML"},
		{".imagegen/c.yaml", 1, 7, `generator name "b" is also used by .imagegen/b.yaml:1:7: names must be unique`},
		{".imagegen/e.yaml", 1, 7, `generator name "defaulted" is also used by .imagegen/defaulted.yaml:1:1`},
	})

	specs, err = ParseDir(fstest.MapFS{"README": {Data: []byte("x")}}, testOpts)
	if specs != nil || err != nil {
		t.Errorf("ParseDir(no .imagegen) = %v, %v; want nil, nil", specs, err)
	}
}

// TestOpenRepoSymlinks checks that a local repository cannot point a spec at
// the host's files through symlinks.
func TestOpenRepoSymlinks(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.sh"), []byte("cat /etc/shadow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mustWrite := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite("scripts/real.sh", "echo real\n")
	for link, target := range map[string]string{
		"scripts/out.sh":    filepath.Join(outside, "secret.sh"),
		"scripts/rel-out":   "../../" + filepath.Base(outside) + "/secret.sh",
		"scripts/inside.sh": "real.sh",
		"outdir":            outside,
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	const tail = "\nclouds: {hotel: {image: i, ssh_user: u}}\n"
	tests := []struct {
		file string
		want string // "" for success
	}{
		{"scripts/inside.sh", ""},
		{"scripts/real.sh", ""},
		{"scripts/out.sh", `x.yaml:1:14: script_file "scripts/out.sh" is a symlink leading out of the repository`},
		{"scripts/rel-out", `x.yaml:1:14: script_file "scripts/rel-out" is a symlink leading out of the repository`},
		{"outdir/secret.sh", `x.yaml:1:14: script_file "outdir/secret.sh" leads out of the repository through a symlink`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s, err := ParseBytes(repo, "x.yaml", []byte("script_file: "+tt.file+tail), testOpts)
			if tt.want == "" {
				if err != nil || s.Script != "echo real\n" {
					t.Fatalf("got %v, %v", s, err)
				}
				return
			}
			if err == nil || err.Error() != tt.want+": imagegen reads only files inside it" {
				t.Errorf("error = %v\nwant   %s: imagegen reads only files inside it", err, tt.want)
			}
		})
	}
	// A spec file that is itself a symlink out is refused too.
	if err := os.MkdirAll(filepath.Join(dir, ".imagegen"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.sh"), filepath.Join(dir, ".imagegen", "evil.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err = ParseDir(repo, testOpts)
	if err == nil || err.Error() != ".imagegen/evil.yaml: is a symlink leading out of the repository: imagegen reads only files inside it" {
		t.Errorf("ParseDir = %v", err)
	}
}
