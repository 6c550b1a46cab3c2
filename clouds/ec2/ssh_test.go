package ec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestSSHReachesRealSSHD: the fake reports the instance at 127.0.0.1 and
// ssh_port points at a real sshd, so the endpoint Launch returns is dialled
// for real with the build's key and the host key the driver pinned.
func TestSSHReachesRealSSHD(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	no := false
	tests := []struct {
		name       string
		inject     bool // the build injects its own host key, which this sshd does not have
		publicIP   string
		cfg        ec2.Config
		wantSource string
		wantDial   string // "" dials; else the dial error says this
	}{
		{"console host key pinned, public address", false, "127.0.0.1", ec2.Config{}, "console", ""},
		// The public address is unreachable (TEST-NET-1): the driver must pick the private one.
		{"private address preferred", false, "192.0.2.1", ec2.Config{UsePrivateIP: true, SubnetID: ec2test.Subnet}, "console", ""},
		{"no public address", false, "", ec2.Config{AssociatePublicIP: &no, SubnetID: ec2test.Subnet}, "console", ""},
		{"injected key the server lacks is refused", true, "127.0.0.1", ec2.Config{}, "injected", "host key mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, ec2test.Options{PublicIP: tc.publicIP, PrivateIP: "127.0.0.1", ConsoleHostKey: sshd.HostKey, BootDelay: 30 * time.Millisecond})
			cfg := tc.cfg
			cfg.SSHPort = port
			c := open(t, f, cfg)
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			id := "ssh-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			req, _ := launchReq(t, id)
			req.AuthorizedKey = string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
			if !tc.inject {
				req.HostKey = clouds.HostKey{}
			}
			// cloud-init would install the key pair for the user; here sshd's user gets it.
			sshd.Authorize(t, req.AuthorizedKey)
			inst := &clouds.Instance{Build: id}
			defer func() {
				terminate(t, c, inst)
				assertClean(t, f, id)
			}()
			start := time.Now()
			if err := c.Launch(context.Background(), req, inst); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			t.Logf("Launch took %v", time.Since(start))
			if inst.SSH.Addr != sshd.Addr || inst.SSH.HostKeySource != tc.wantSource {
				t.Fatalf("endpoint %+v, want %s with keys from %s", inst.SSH, sshd.Addr, tc.wantSource)
			}
			checkUserData(t, f.UserData(inst.ID), req)
			tags := f.InstanceTags(inst.ID)
			for k, want := range map[string]string{clouds.TagBuild: id, clouds.TagGenerator: "dstat", clouds.TagImageName: "dstat-" + id, "Name": "imagegen-" + id} {
				if tags[k] != want {
					t.Errorf("instance tag %s = %q, want %q", k, tags[k], want)
				}
			}
			for _, v := range f.Volumes() {
				if v.Build != id {
					t.Errorf("volume %s tagged with build %q, want %q", v.ID, v.Build, id)
				}
			}
			cloudtest.CheckSSH(t, *inst.SSH, sshd.User, signer, tc.wantDial, sshd.Log)
		})
	}
}

// checkUserData: the user data is cloud-config that installs the build's key
// and, when the build made one, its host key, and nothing else of the host.
func checkUserData(t *testing.T, ud string, req clouds.LaunchRequest) {
	t.Helper()
	if !strings.HasPrefix(ud, "#cloud-config\n") {
		t.Fatalf("user data is not cloud-config: %q", ud)
	}
	var cc struct {
		AuthorizedKeys []string          `yaml:"ssh_authorized_keys"`
		Keys           map[string]string `yaml:"ssh_keys"`
	}
	if err := yaml.Unmarshal([]byte(ud), &cc); err != nil {
		t.Fatalf("user data: %v", err)
	}
	if len(cc.AuthorizedKeys) != 1 || cc.AuthorizedKeys[0] != strings.TrimSpace(req.AuthorizedKey) {
		t.Errorf("ssh_authorized_keys %q, want the build's key", cc.AuthorizedKeys)
	}
	if req.HostKey.Public == "" {
		if len(cc.Keys) != 0 {
			t.Errorf("ssh_keys %v without a host key to inject", cc.Keys)
		}
		return
	}
	if cc.Keys["ed25519_public"] != req.HostKey.Public || cc.Keys["ed25519_private"] != req.HostKey.PrivatePEM.Reveal() {
		t.Errorf("ssh_keys do not carry the build's host key: %v", cc.Keys)
	}
}
