package openstack_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestSSHReachesRealSSHD: the fake reports servers at 127.0.0.1 and ssh_port
// points at a real sshd, so the endpoint Launch returns is dialled for real,
// with the build's key and the host key the driver pinned.
func TestSSHReachesRealSSHD(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	tests := []struct {
		name       string
		inject     bool // the build injects its own host key, which this sshd does not have
		wantSource string
		wantDial   string // "" dials; else the dial error says this
	}{
		{"console host key pinned", false, "console", ""},
		{"injected key the server lacks is refused", true, "injected", "host key mismatch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, openstacktest.Options{ServerIP: "127.0.0.1", ConsoleHostKey: sshd.HostKey})
			c := open(t, f, openstack.Config{SSHPort: port, Network: "private"})
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			id := "ssh-" + strings.ReplaceAll(tc.name, " ", "-")
			req := launchReq(t, id)
			req.AuthorizedKey = string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
			if !tc.inject {
				req.HostKey = clouds.HostKey{}
			}
			// cloud-init would install the key pair for the user; here sshd's user gets it.
			sshd.Authorize(t, req.AuthorizedKey)
			inst := &clouds.Instance{Build: id}
			defer func() {
				terminate(t, c, inst)
				assertClean(t, f, "", id)
			}()
			if err := c.Launch(context.Background(), req, inst); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if inst.SSH.Addr != sshd.Addr || inst.SSH.HostKeySource != tc.wantSource {
				t.Fatalf("endpoint %+v, want %s with keys from %s", inst.SSH, sshd.Addr, tc.wantSource)
			}
			cloudtest.CheckSSH(t, *inst.SSH, sshd.User, signer, tc.wantDial, sshd.Log)
		})
	}
}
