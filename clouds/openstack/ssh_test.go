package openstack_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/osfake"
	"github.com/imagegen/imagegen/internal/testenv"
)

// TestSSHReachesRealSSHD: the fake reports servers at 127.0.0.1 and ssh_port
// points at a real sshd, so the endpoint Launch returns is dialled for real,
// with the build's key and the host key the driver pinned.
func TestSSHReachesRealSSHD(t *testing.T) {
	sshd := testenv.StartSSHD(t)
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
			f := newFake(t, osfake.Options{ServerIP: "127.0.0.1", ConsoleHostKey: sshd.HostKey})
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
			var pinned []ssh.PublicKey
			for _, line := range inst.SSH.HostKeys {
				pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
				if err != nil {
					t.Fatal(err)
				}
				pinned = append(pinned, pk)
			}
			cfg := &ssh.ClientConfig{
				User:            sshd.User,
				Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback: pinCallback(pinned),
				Timeout:         5 * time.Second,
			}
			client, err := ssh.Dial("tcp", inst.SSH.Addr, cfg)
			if tc.wantDial != "" {
				if err == nil {
					client.Close()
					t.Fatalf("dial succeeded with a pinned key the server does not have")
				}
				if !strings.Contains(err.Error(), tc.wantDial) {
					t.Fatalf("dial: %v, want %q", err, tc.wantDial)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial %s: %v\nsshd log:\n%s", inst.SSH.Addr, err, sshd.Log())
			}
			defer client.Close()
			sess, err := client.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			out, err := sess.CombinedOutput("echo built-on-$((6*7))")
			if err != nil || strings.TrimSpace(string(out)) != "built-on-42" {
				t.Fatalf("run: %q, %v", out, err)
			}
		})
	}
}

type hostKeyMismatch struct{}

func (hostKeyMismatch) Error() string { return "host key mismatch" }

func pinCallback(pinned []ssh.PublicKey) ssh.HostKeyCallback {
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		for _, p := range pinned {
			if bytes.Equal(p.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return hostKeyMismatch{}
	}
}
