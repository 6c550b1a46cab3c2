package ec2_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/secret"
)

// isolateAWSEnv keeps the machine's own AWS settings out of a test and
// returns a directory for shared config files.
func isolateAWSEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	// Never ask a metadata service from a test.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return dir
}

// configureYAML runs Configure on one clouds entry, as the config loader does.
func configureYAML(t *testing.T, name, src string) (clouds.Opener, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	node := doc.Content[0]
	cfg := clouds.Config{Name: name, Node: node, File: "imagegen.yaml"}
	for i := 0; i+1 < len(node.Content); i += 2 {
		switch node.Content[i].Value {
		case "type":
			cfg.Type = node.Content[i+1].Value
		case "password":
			cfg.Password = node.Content[i+1].Value
		}
	}
	return ec2.Configure(cfg)
}

// runBuild launches, snapshots and cleans up with default (production) options.
func runBuild(t *testing.T, c clouds.Cloud, f *ec2test.Fake, id string) string {
	t.Helper()
	req, logs := launchReq(t, id)
	img, err := pipeline(t, c, req)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	deleteImage(t, c, img)
	assertClean(t, f, id)
	return logs.String()
}

// TestCredentialSources: each way of giving credentials reaches the cloud as
// the SigV4 key id and region the fake sees, and the secret never reaches a log.
func TestCredentialSources(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string // %s is the fake's URL
		env      map[string]string
		files    map[string]string // shared config files
		password string            // the build's password, for password: ask
		wantKey  string
		wantReg  string
		wantErr  string // from Open
	}{
		{
			name:    "environment",
			yaml:    `{type: ec2, region: us-west-2, endpoint: "%s", ssh_cidrs: [127.0.0.1/32], poll_interval: 50ms}`,
			env:     map[string]string{"AWS_ACCESS_KEY_ID": "AKIDFROMENV", "AWS_SECRET_ACCESS_KEY": "env-secret-key-value"},
			wantKey: "AKIDFROMENV", wantReg: "us-west-2",
		},
		{
			name: "shared config profile",
			yaml: `{type: ec2, region: eu-central-1, profile: lab, endpoint: "%s", ssh_cidrs: [127.0.0.1/32], poll_interval: 50ms}`,
			files: map[string]string{
				"credentials": "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret\n\n[lab]\naws_access_key_id = AKIDLABPROFILE\naws_secret_access_key = lab-secret-key-value\n",
				"config":      "[profile lab]\nregion = ap-south-1\n",
			},
			wantKey: "AKIDLABPROFILE", wantReg: "eu-central-1",
		},
		{
			name:     "EC2-compatible cloud with a made-up region, password: ask",
			yaml:     `{type: ec2, region: nimbus, endpoint: "%s", password: ask, access_key_id: NIMBUSKEY, ssh_cidrs: [127.0.0.1/32], poll_interval: 50ms}`,
			password: testSecret,
			wantKey:  "NIMBUSKEY", wantReg: "nimbus",
		},
		{
			name:     "password: ask, key id from the environment",
			yaml:     `{type: ec2, region: nimbus, endpoint: "%s", password: ask, ssh_cidrs: [127.0.0.1/32], poll_interval: 50ms}`,
			env:      map[string]string{"AWS_ACCESS_KEY_ID": "AKIDKEYONLY", "AWS_SECRET_ACCESS_KEY": "not-the-one-used"},
			password: testSecret,
			wantKey:  "AKIDKEYONLY", wantReg: "nimbus",
		},
		{
			name:    "password: ask without the password",
			yaml:    `{type: ec2, region: nimbus, endpoint: "%s", password: ask, access_key_id: NIMBUSKEY}`,
			wantErr: "brought no secret access key",
		},
		{
			name:     "password: ask with no key id anywhere",
			yaml:     `{type: ec2, region: nimbus, endpoint: "%s", password: ask}`,
			password: testSecret,
			wantErr:  "no access key id",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolateAWSEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			for name, body := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f := newFake(t, ec2test.Options{})
			op, err := configureYAML(t, "cloud", fmt.Sprintf(tc.yaml, f.URL))
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			c, err := op.Open(context.Background(), clouds.Credentials{Password: secret.New(tc.password)})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || clouds.KindOf(err) != clouds.KindAuth {
					t.Fatalf("Open: %v, want an auth error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			id := "cred-" + strings.ReplaceAll(tc.name, " ", "-")
			id = strings.NewReplacer(":", "", ",", "").Replace(id)
			logs := runBuild(t, c, f, id)
			reqs := f.Requests()
			if len(reqs) == 0 {
				t.Fatal("no requests reached the fake")
			}
			for _, r := range reqs {
				if r.AccessKey != tc.wantKey || r.Region != tc.wantReg {
					t.Fatalf("%s signed as %s in %s, want %s in %s", r.Action, r.AccessKey, r.Region, tc.wantKey, tc.wantReg)
				}
			}
			if tc.password != "" && strings.Contains(logs, tc.password) {
				t.Error("the build's secret key reached the build log")
			}
			if s := fmt.Sprintf("%v %+v %#v", op, op, c); tc.password != "" && strings.Contains(s, tc.password) {
				t.Error("the secret key prints with the cloud")
			}
		})
	}
}

// TestWorkerAddress: without ssh_cidrs the temporary group admits only the
// address checkip reports, asked once per cloud.
func TestWorkerAddress(t *testing.T) {
	tests := []struct {
		name     string
		answer   string
		status   int
		wantRule string
		wantErr  string
	}{
		{"IPv4", "198.51.100.7\n", http.StatusOK, "tcp:2222-2222:198.51.100.7/32", ""},
		{"IPv6", "2001:db8::7", http.StatusOK, "tcp:2222-2222:2001:db8::7/128", ""},
		{"checkip down", "oops", http.StatusInternalServerError, "", "ssh_cidrs"},
		{"not an address", "<html>captive portal</html>", http.StatusOK, "", "ssh_cidrs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int32
			checkip := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				asked.Add(1)
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.answer)
			}))
			defer checkip.Close()
			f := newFake(t, ec2test.Options{})
			c := open(t, f, ec2.Config{CheckIPURL: checkip.URL, SSHPort: 2222})
			for i := range 2 {
				id := fmt.Sprintf("checkip-%s-%d", strings.ReplaceAll(tc.name, " ", "-"), i)
				req, _ := launchReq(t, id)
				inst := &clouds.Instance{Build: id}
				err := c.Launch(context.Background(), req, inst)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("Launch: %v, want an error naming %q", err, tc.wantErr)
					}
				} else {
					if err != nil {
						t.Fatalf("Launch: %v", err)
					}
					var groups []string
					for _, r := range inst.Resources {
						if r.Kind == clouds.KindSecurityGroup {
							groups = append(groups, f.Groups()[r.ID]...)
						}
					}
					if len(groups) != 1 || groups[0] != tc.wantRule {
						t.Errorf("ingress rules %q, want [%s]", groups, tc.wantRule)
					}
				}
				terminate(t, c, inst)
				assertClean(t, f, id)
			}
			if tc.wantErr == "" && asked.Load() != 1 {
				t.Errorf("checkip asked %d times for two launches, want once", asked.Load())
			}
		})
	}
}
