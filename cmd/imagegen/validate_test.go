package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
)

func TestValidate(t *testing.T) {
	const broken = "testdata/validate/broken"
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string // a fragment
	}{
		{
			name:     "broken specs",
			args:     []string{"validate", broken},
			wantCode: 1,
			wantStdout: `testdata/validate/broken/.imagegen/a.yaml:1:1: no script: set script (the commands, inline) or script_file (a path in the repository)
testdata/validate/broken/.imagegen/a.yaml:1:7: name "Web Server" is not a valid generator name: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (it becomes part of image names and GitHub status contexts)
testdata/validate/broken/.imagegen/a.yaml:2:1: unknown key "scrpit": did you mean "script"? (known: branches, channel, clouds, drift, keep, keep_failed, manifest, name, rebuild, script, script_file, test, test_file, test_timeout)
testdata/validate/broken/.imagegen/a.yaml:8:5: unknown key "flavour" in clouds.hotel (known: image, size, ssh_user)
testdata/validate/broken/.imagegen/b.yaml:2:14: script_file "../outside.sh" leads out of the repository: imagegen reads only files inside it; give a path relative to the repository root
testdata/validate/broken/.imagegen/b.yaml:3:11: branches must be a list, not the value "main": write branches: [main] (or a list with one branch per line)
testdata/validate/broken/.imagegen/b.yaml:4:9: clouds must be a mapping of cloud name to settings, not a list: write clouds: {NAME: {image: IMAGE, ssh_user: USER}}
testdata/validate/broken/.imagegen/d.yaml:1:1: generator name "d" is also used by .imagegen/c.yaml:1:7: names must be unique in a repository; rename one (set name:)
testdata/validate/broken/.imagegen/e.yml:3:3: invalid YAML: did not find expected ',' or '}' (check the indentation, and quote values that contain ': ' or start with a special character)
testdata/validate/broken/.imagegen/f.yaml:4:3: clouds.sierra: ssh_user is missing: set the user the base image accepts SSH logins for (e.g. ubuntu, ec2-user, debian)
testdata/validate/broken/scripts/latin1.sh:2:6: the script is not valid UTF-8 (byte 0xe9): save it as UTF-8
`,
			wantStderr: "11 errors in 6 files\n",
		},
		{
			name:     "one file of the broken repository, script_file resolved from the repository root",
			args:     []string{"validate", broken + "/.imagegen/f.yaml"},
			wantCode: 1,
			wantStdout: `testdata/validate/broken/.imagegen/f.yaml:4:3: clouds.sierra: ssh_user is missing: set the user the base image accepts SSH logins for (e.g. ubuntu, ec2-user, debian)
testdata/validate/broken/scripts/latin1.sh:2:6: the script is not valid UTF-8 (byte 0xe9): save it as UTF-8
`,
			wantStderr: "2 errors in 2 files\n",
		},
		{
			name:       "good repository",
			args:       []string{"validate", "testdata/validate/good"},
			wantStdout: "ok: 2 generators\n",
		},
		{
			name:       "files and directories, each spec once",
			args:       []string{"validate", "testdata/validate/good/.imagegen/base.yml", "testdata/validate/good/.imagegen", broken + "/.imagegen/d.yaml"},
			wantStdout: "ok: 3 generators\n",
		},
		{
			name:       "missing path",
			args:       []string{"validate", "testdata/validate/good", "testdata/validate/nope"},
			wantCode:   1,
			wantStdout: "testdata/validate/nope: no such file or directory\n",
			wantStderr: "1 error in 1 file\n",
		},
		{
			name:       "directory without specs",
			args:       []string{"validate", broken + "/scripts"},
			wantCode:   1,
			wantStdout: "testdata/validate/broken/scripts: no generator specs (*.yaml, *.yml) here\n",
			wantStderr: "1 error in 1 file\n",
		},
		{
			name:     "cloud names checked against --config",
			args:     []string{"validate", "--config", "testdata/validate/noclouds.yaml", "testdata/validate/good/.imagegen/base.yml"},
			wantCode: 1,
			wantStdout: `testdata/validate/good/.imagegen/base.yml:5:3: unknown cloud "hotel": the server config defines no clouds
`,
			wantStderr: "1 error in 1 file\n",
		},
		{
			name:       "unreadable --config",
			args:       []string{"validate", "--config", "testdata/validate/none.yaml", "testdata/validate/good"},
			wantCode:   1,
			wantStderr: "imagegen validate: --config: read config: open testdata/validate/none.yaml: no such file or directory\n",
		},
		{
			name:       "bad flag",
			args:       []string{"validate", "--nope"},
			wantCode:   2,
			wantStderr: "usage: imagegen validate [--config FILE] [PATH...]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, lookup: func(string) (string, bool) { return "", false }}
			code := run(context.Background(), e, tt.args)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if got := stdout.String(); got != tt.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

// TestValidateDefaultPath runs validate with no PATH from inside a repository,
// where it finds .imagegen/ above the current directory.
func TestValidateDefaultPath(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		".git/HEAD":           "ref: refs/heads/main\n",
		".imagegen/web.yaml":  "script_file: scripts/web.sh\nclouds: {hotel: {image: img, ssh_user: ubuntu}}\n",
		".imagegen/bad.yaml":  "script: x\nclouds: {hotel: {image: img}}\n",
		"scripts/web.sh":      "echo web\n",
		"deep/er/placeholder": "",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		cwd, want string
	}{
		{".", ".imagegen/bad.yaml:2:10: clouds.hotel: ssh_user is missing"},
		{"deep/er", "../../.imagegen/bad.yaml:2:10: clouds.hotel: ssh_user is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.cwd, func(t *testing.T) {
			t.Chdir(filepath.Join(dir, tt.cwd))
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), &env{stdout: &stdout, stderr: &stderr}, []string{"validate"})
			if code != 1 || !strings.HasPrefix(stdout.String(), tt.want) || strings.Count(stdout.String(), "\n") != 1 {
				t.Errorf("exit %d, stdout %q; want 1 and one line starting %q", code, stdout.String(), tt.want)
			}
		})
	}

	t.Run("no specs anywhere", func(t *testing.T) {
		t.Chdir(filepath.Join(dir, ".git"))
		if err := os.WriteFile(filepath.Join(dir, ".git", ".git"), nil, 0o644); err != nil {
			t.Fatal(err) // stops the upward search here, as a nested repository would
		}
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), &env{stdout: &stdout, stderr: &stderr}, []string{"validate"})
		if code != 1 || !strings.Contains(stderr.String(), "no .imagegen/ directory here or above") {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	})
}

// TestValidateWithConfigClouds checks the chain from a server config to the
// spec checks: unknown clouds are named, and type ssh clouds need no image.
func TestValidateWithConfigClouds(t *testing.T) {
	reg := clouds.NewRegistry()
	for _, typ := range []string{"openstack", "ssh"} {
		reg.Register(typ, func(cfg clouds.Config) (clouds.Opener, error) {
			var v struct {
				Cloud string `yaml:"cloud"`
				Host  string `yaml:"host"`
			}
			return nil, clouds.DecodeStrict(cfg, &v)
		})
	}
	cfg, err := config.Parse([]byte("clouds:\n  hotel: {type: openstack, cloud: hotel}\n  box: {type: ssh, host: 10.0.0.5}\n"), "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	opts := specOptions(cfg.Clouds)
	if want := map[string]bool{"hotel": true, "box": false}; len(opts.Clouds) != 2 || opts.Clouds["hotel"] != want["hotel"] || opts.Clouds["box"] != want["box"] {
		t.Fatalf("specOptions = %v, want %v", opts.Clouds, want)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".imagegen"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "script: x\nclouds:\n  box: {ssh_user: root}\n  hotel: {ssh_user: ubuntu}\n  sierra: {image: i, ssh_user: u}\n"
	if err := os.WriteFile(filepath.Join(dir, ".imagegen", "g.yaml"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	errs, n := validatePaths([]string{dir}, opts)
	want := []string{
		filepath.Join(dir, ".imagegen", "g.yaml") + ":4:3: clouds.hotel: image is missing: set the base image (its id or name on that cloud)",
		filepath.Join(dir, ".imagegen", "g.yaml") + `:5:3: unknown cloud "sierra": the server config defines box, hotel`,
	}
	if n != 0 || len(errs) != len(want) {
		t.Fatalf("validatePaths = %d specs, errors:\n%v", n, errs)
	}
	for i, w := range want {
		if errs[i].Error() != w {
			t.Errorf("error %d = %q, want %q", i, errs[i].Error(), w)
		}
	}
}
