package simulated_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/secret"
)

// simConfig parses one cloud entry the way the config loader hands it over.
func simConfig(t *testing.T, src string) clouds.Config {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	cfg := clouds.Config{Name: "sim", Type: simulated.Type, Node: doc.Content[0], File: "imagegen.yaml"}
	for i := 0; i+1 < len(cfg.Node.Content); i += 2 {
		if cfg.Node.Content[i].Value == "password" {
			cfg.Password = cfg.Node.Content[i+1].Value
		}
	}
	return cfg
}

func writeKey(t *testing.T) (keyFile, hostKey string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	hpub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	return keyFile, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

func TestConfigureErrors(t *testing.T) {
	keyFile, _ := writeKey(t)
	tests := []struct {
		name, src string
		want      []string // substrings of the error
	}{
		{"unknown key", "type: simulated\nlaunch_delay: 1s\nlanuch_delay: 2s\n",
			[]string{"imagegen.yaml:3:1", `unknown key "lanuch_delay"`, "launch_delay, manifest, permanent_fail_rate"}},
		{"unknown ssh key", "type: simulated\nssh:\n  host: 127.0.0.1\n  prot: 22\n",
			[]string{"imagegen.yaml:4:3", `unknown key "prot" in ssh`, "host, port, user, private_key_file, host_key"}},
		{"bad duration", "type: simulated\nlaunch_delay: soon\n", []string{"imagegen.yaml", "soon"}},
		{"negative delay", "type: simulated\nstop_delay: -1s\n", []string{"stop_delay must not be negative"}},
		{"rate above 1", "type: simulated\nfail_rate: 1.5\n", []string{"fail_rate is a fraction between 0 and 1"}},
		{"rates sum above 1", "type: simulated\nfail_rate: 0.6\npermanent_fail_rate: 0.6\n", []string{"exceeds 1"}},
		{"ssh without host", "type: simulated\nssh: {private_key_file: " + keyFile + "}\n", []string{"ssh.host is required"}},
		{"ssh without key", "type: simulated\nssh: {host: 127.0.0.1}\n", []string{"ssh.private_key_file is required"}},
		{"ssh key missing", "type: simulated\nssh: {host: 127.0.0.1, private_key_file: /nonexistent/key}\n", []string{"/nonexistent/key"}},
		{"ssh bad host key", "type: simulated\nssh: {host: 127.0.0.1, private_key_file: " + keyFile + ", host_key: nonsense}\n", []string{"ssh.host_key", "or first-use"}},
		// No silent trust on first use: the key, or first-use said out loud.
		{"ssh without host key", "type: simulated\nssh: {host: 127.0.0.1, private_key_file: " + keyFile + "}\n", []string{
			"imagegen.yaml: ssh.host_key is required: the sshd's host key, an authorized_keys line (get it with: ssh-keyscan -t ed25519 127.0.0.1, and drop the host name in front), " +
				"or first-use to trust the first key it presents (a throwaway container whose key changes; not recommended)"}},
		{"ssh not a mapping", "type: simulated\nssh: 127.0.0.1\n", []string{"imagegen.yaml:2:6", "ssh must be a mapping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := simulated.Configure(simConfig(t, tt.src))
			if err == nil {
				t.Fatal("Configure succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	keyFile, hostKey := writeKey(t)
	src := `type: simulated
launch_delay: 20ms
ssh_delay: 5ms
stop_delay: 1ms
snapshot_delay: 10ms
fail_rate: 0
ssh:
  host: 127.0.0.1
  port: 2222
  user: builder
  private_key_file: ` + keyFile + `
  host_key: "` + hostKey + `"
`
	op, err := simulated.Configure(simConfig(t, src))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c1, err := op.Open(ctx, clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := op.Open(ctx, clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if c1 != c2 || c1 != clouds.Cloud(simulated.CloudOf(op)) {
		t.Fatal("Open returned different clouds; state must persist across builds")
	}

	inst := &clouds.Instance{}
	start := time.Now()
	if err := c1.Launch(ctx, launchReq("b1"), inst); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 25*time.Millisecond {
		t.Errorf("Launch took %v; launch_delay+ssh_delay is 25ms", took)
	}
	ep := inst.SSH
	if ep == nil {
		t.Fatal("inst.SSH is nil with ssh configured")
	}
	if ep.Addr != "127.0.0.1:2222" || ep.User != "builder" || ep.Signer == nil ||
		len(ep.HostKeys) != 1 || ep.HostKeys[0] != hostKey || ep.HostKeySource != "config" || ep.HostKeyPolicy != clouds.HostKeyRequire {
		t.Fatalf("endpoint = %+v", ep)
	}
	if err := c1.Terminate(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// The other Open sees what the first did: it is one cloud.
	if calls := c2.(*simulated.Cloud).Calls(); len(calls) != 4 {
		t.Fatalf("calls seen through the second Open: %q", calls)
	}
}

// TestConfigureFirstUse: ssh.host_key: first-use gives an endpoint without
// keys whose policy lets the pipeline trust the first key (and warn).
func TestConfigureFirstUse(t *testing.T) {
	keyFile, _ := writeKey(t)
	op, err := simulated.Configure(simConfig(t, "type: simulated\nssh: {host: 127.0.0.1, private_key_file: "+keyFile+", host_key: first-use}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := op.Open(context.Background(), clouds.Credentials{})
	inst := &clouds.Instance{}
	if err := c.Launch(context.Background(), launchReq("b1"), inst); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Terminate(context.Background(), inst) }()
	if ep := inst.SSH; ep == nil || len(ep.HostKeys) != 0 || ep.HostKeyPolicy != clouds.HostKeyFirstUse || ep.HostKeySource != clouds.SourceFirstUse {
		t.Fatalf("endpoint = %+v, want no keys under first-use", ep)
	}
}

func TestConfigureNoSSH(t *testing.T) {
	op, err := simulated.Configure(simConfig(t, "type: simulated\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	req := launchReq("b1")
	req.Log = slogTo(&log)
	inst := &clouds.Instance{}
	if err := c.Launch(context.Background(), req, inst); err != nil {
		t.Fatal(err)
	}
	if inst.SSH != nil {
		t.Fatalf("inst.SSH = %+v without ssh configured", inst.SSH)
	}
	if !strings.Contains(log.String(), "the script will not run") {
		t.Fatalf("the log does not say the script is skipped:\n%s", log.String())
	}
	if err := c.Terminate(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
}

func TestPasswordAsk(t *testing.T) {
	op, err := simulated.Configure(simConfig(t, "type: simulated\npassword: ask\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		password string
		wantKind clouds.Kind
	}{
		{"no password", "", clouds.KindAuth},
		{"a password", "hunter22", clouds.KindUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := op.Open(context.Background(), clouds.Credentials{Password: secret.New(tt.password)})
			if k := clouds.KindOf(err); k != tt.wantKind || (tt.wantKind == clouds.KindUnknown) != (err == nil) {
				t.Fatalf("Open: %v (kind %q), want kind %q", err, k, tt.wantKind)
			}
		})
	}
}
