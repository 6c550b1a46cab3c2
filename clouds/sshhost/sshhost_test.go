package sshhost_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/sshhost"
	"github.com/imagegen/imagegen/internal/servicetest"
)

func config(t *testing.T, body string) clouds.Config {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	return clouds.Config{Name: "box", Type: sshhost.Type, Node: doc.Content[0], File: "imagegen.yaml"}
}

func TestConfigure(t *testing.T) {
	s := servicetest.StartSSHD(t)
	key := s.WriteClientKey(t)
	garbage := filepath.Join(t.TempDir(), "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    string
		wantErr []string
	}{
		{"complete", "{type: ssh, host: 127.0.0.1, port: 2222, private_key_file: " + key + ", host_key: '" + s.HostKey + "'}", nil},
		{"default port", "{type: ssh, host: 127.0.0.1, private_key_file: " + key + ", host_key: '" + s.HostKey + "'}", nil},
		{"host key required", "{type: ssh, host: 10.0.0.5, private_key_file: " + key + "}", []string{"host_key is required", "ssh-keyscan -t ed25519 10.0.0.5"}},
		{"bad host key", "{type: ssh, host: h, private_key_file: " + key + ", host_key: 'ssh-ed25519 !!'}", []string{"host_key:"}},
		// openstack's and ec2's host_key is a policy; here it is the key, always pinned.
		{"a policy for a key", "{type: ssh, host: h, private_key_file: " + key + ", host_key: first-use}", []string{`host_key "first-use": a type ssh cloud's host_key is the machine's key (an authorized_keys line such as "ssh-ed25519 AAAA..."), always pinned; require, console and first-use are for openstack and ec2`}},
		{"host required", "{type: ssh, private_key_file: " + key + ", host_key: '" + s.HostKey + "'}", []string{"host is required"}},
		{"key file required", "{type: ssh, host: h, host_key: '" + s.HostKey + "'}", []string{"private_key_file is required"}},
		{"key file missing", "{type: ssh, host: h, private_key_file: /nonexistent/k, host_key: '" + s.HostKey + "'}", []string{"no such file"}},
		{"key file not a key", "{type: ssh, host: h, private_key_file: " + garbage + ", host_key: '" + s.HostKey + "'}", []string{"private_key_file " + garbage}},
		{"bad port", "{type: ssh, host: h, port: 70000, private_key_file: " + key + ", host_key: '" + s.HostKey + "'}", []string{"not a TCP port"}},
		{"unknown key", "{type: ssh, host: h, hots: x, private_key_file: " + key + ", host_key: '" + s.HostKey + "'}", []string{`unknown key "hots"`, "imagegen.yaml:1:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := sshhost.Configure(config(t, tt.body))
			if tt.wantErr == nil {
				if err != nil || op == nil {
					t.Fatalf("Configure: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Configure accepted it")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLaunch(t *testing.T) {
	s := servicetest.StartSSHD(t)
	key := s.WriteClientKey(t)
	op, err := sshhost.Configure(config(t, "{type: ssh, host: 127.0.0.1, port: 2222, user: admin, private_key_file: "+key+", host_key: '"+s.HostKey+"  comment'}"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Features().Images {
		t.Error("type ssh claims to make images")
	}
	inst := clouds.Instance{Build: "b1"}
	if err := c.Launch(context.Background(), clouds.LaunchRequest{Build: "b1", Log: slog.New(slog.DiscardHandler)}, &inst); err != nil {
		t.Fatal(err)
	}
	ep := inst.SSH
	if ep == nil || ep.Addr != "127.0.0.1:2222" || ep.User != "admin" || ep.Signer == nil || ep.HostKeySource != "config" || !slices.Equal(ep.HostKeys, []string{s.HostKey}) ||
		ep.HostKeyPolicy != clouds.HostKeyRequire {
		t.Errorf("endpoint %+v", ep)
	}
	if len(inst.Resources) != 0 {
		t.Errorf("Launch created %v", inst.Resources)
	}
	if err := c.Terminate(context.Background(), &inst); err != nil {
		t.Error(err)
	}
	if lo, err := c.Leftovers(context.Background(), ""); err != nil || len(lo) != 0 {
		t.Errorf("leftovers %v %v", lo, err)
	}
}

// TestPipeline runs a script on the real sshd through builder.Run: the
// script runs, and no image is made.
func TestPipeline(t *testing.T) {
	s := servicetest.StartSSHD(t)
	key := s.WriteClientKey(t)
	host, port, _ := strings.Cut(s.Addr, ":")
	op, err := sshhost.Configure(config(t, "{type: ssh, host: "+host+", port: "+port+", private_key_file: "+key+", host_key: '"+s.HostKey+"'}"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := op.Open(context.Background(), clouds.Credentials{})
	marker := filepath.Join(t.TempDir(), "ran")
	r := builder.Run(context.Background(), builder.Job{
		Build: "b1", CloudName: "box", Cloud: c, Repo: "/src", SSHTimeout: 10 * time.Second,
		Spec: &spec.Spec{Name: "hello", Script: "touch " + marker, Clouds: map[string]spec.CloudSpec{"box": {SSHUser: s.User}}},
	})
	if r.State != builder.StateSucceeded || r.Image != nil || r.ExitCode != 0 {
		t.Fatalf("result %+v", r)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the script did not run: %v", err)
	}
}
