package ec2_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
)

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // substring; "" means valid
		check   func(t *testing.T, c ec2.Config)
	}{
		{
			name: "AWS region, defaults",
			yaml: `{type: ec2, region: us-east-1}`,
			check: func(t *testing.T, c ec2.Config) {
				if c.InstanceType != ec2.DefaultInstanceType || c.SSHPort != 22 || !*c.StopInstance ||
					c.ImageTimeout != 60*time.Minute || c.PollInterval != time.Second || c.CheckIPURL != ec2.DefaultCheckIPURL ||
					!*c.InjectHostKey || c.HostKey != clouds.HostKeyConsole {
					t.Errorf("defaults not filled in: %+v", c)
				}
			},
		},
		{
			name: "every key",
			yaml: `{type: ec2, region: eu-west-1, profile: lab, subnet_id: subnet-1, security_group_ids: [sg-1, sg-2],
				instance_type: m5.large, associate_public_ip: false, iam_instance_profile: builder, volume_size: 30,
				volume_type: gp3, ssh_port: 2222, stop_instance: false, image_timeout: 90m, poll_interval: 1s,
				max_attempts: 4, use_private_ip: true, inject_host_key: false, host_key: first-use}`,
			check: func(t *testing.T, c ec2.Config) {
				if c.InstanceType != "m5.large" || *c.AssociatePublicIP || c.VolumeSize != 30 || c.SSHPort != 2222 ||
					*c.StopInstance || c.ImageTimeout != 90*time.Minute || len(c.SecurityGroupIDs) != 2 || c.MaxAttempts != 4 ||
					*c.InjectHostKey || c.HostKey != clouds.HostKeyFirstUse {
					t.Errorf("keys not read: %+v", c)
				}
			},
		},
		{name: "EC2-compatible cloud", yaml: `{type: ec2, region: nimbus, endpoint: "https://nimbus.example.org:8444"}`},
		{name: "password ask", yaml: `{type: ec2, region: nimbus, endpoint: "https://nimbus.example.org:8444", password: ask, access_key_id: AKID}`},
		{name: "no region", yaml: `{type: ec2}`, wantErr: `"region" is required`},
		{name: "made-up region without endpoint", yaml: `{type: ec2, region: nimbus}`, wantErr: "set endpoint"},
		{name: "endpoint not a URL", yaml: `{type: ec2, region: nimbus, endpoint: "nimbus:8444"}`, wantErr: "http(s) URL"},
		{name: "unknown key", yaml: "{type: ec2, region: us-east-1,\n flavor: m1.small}", wantErr: `imagegen.yaml:2:2: cloud "c": unknown key "flavor"`},
		{name: "bad volume type", yaml: `{type: ec2, region: us-east-1, volume_type: ssd}`, wantErr: "volume_type"},
		{name: "negative volume", yaml: `{type: ec2, region: us-east-1, volume_size: -1}`, wantErr: "volume_size"},
		{name: "bad port", yaml: `{type: ec2, region: us-east-1, ssh_port: 70000}`, wantErr: "ssh_port"},
		{name: "bad cidr", yaml: `{type: ec2, region: us-east-1, ssh_cidrs: [10.0.0.0]}`, wantErr: "ssh_cidrs"},
		{name: "cidrs with groups", yaml: `{type: ec2, region: us-east-1, ssh_cidrs: [10.0.0.0/8], security_group_ids: [sg-1]}`, wantErr: "exclude each other"},
		{name: "bad duration", yaml: `{type: ec2, region: us-east-1, boot_timeout: soon}`, wantErr: "line 1: cannot unmarshal !!str `soon`"},
		{name: "negative duration", yaml: `{type: ec2, region: us-east-1, delete_timeout: -1s}`, wantErr: "delete_timeout"},
		{name: "host_key require", yaml: `{type: ec2, region: us-east-1, host_key: require}`,
			check: func(t *testing.T, c ec2.Config) {
				if c.HostKey != clouds.HostKeyRequire {
					t.Errorf("host_key %q", c.HostKey)
				}
			}},
		{name: "host_key unknown", yaml: `{type: ec2, region: us-east-1, host_key: tofu}`, wantErr: `host_key "tofu": want require, console or first-use`},
		{name: "host_key a key line", yaml: `{type: ec2, region: us-east-1, host_key: "ssh-ed25519 AAAA"}`,
			wantErr: `host_key "ssh-ed25519 AAAA": want require, console or first-use (here host_key is a policy; a key line is type ssh's host_key)`},
		{name: "host_key require without injection", yaml: `{type: ec2, region: us-east-1, host_key: require, inject_host_key: false}`,
			wantErr: "host_key: require needs inject_host_key: true: only an injected key is known before imagegen first connects (host_key: console reads it from the console)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			op, err := configureYAML(t, "c", tc.yaml)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Configure: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			if tc.check != nil {
				tc.check(t, op.(*ec2.Opener).Config())
			}
		})
	}
}
