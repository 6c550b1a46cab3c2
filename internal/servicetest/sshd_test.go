package servicetest

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestStartSSHD(t *testing.T) {
	s := StartSSHD(t)
	extra := s.WriteClientKey(t)
	if extra == "" {
		t.Fatal("no key file")
	}

	tests := []struct {
		name    string
		config  func() *ssh.ClientConfig
		wantErr string
	}{
		{"client key and pinned host key", s.ClientConfig, ""},
		{"unauthorized key refused", func() *ssh.ClientConfig {
			_, other, err := newEd25519()
			if err != nil {
				t.Fatal(err)
			}
			c := s.ClientConfig()
			c.Auth = []ssh.AuthMethod{ssh.PublicKeys(other)}
			return c
		}, "unable to authenticate"},
		{"other host key refused", func() *ssh.ClientConfig {
			_, other, err := newEd25519()
			if err != nil {
				t.Fatal(err)
			}
			c := s.ClientConfig()
			c.HostKeyCallback = ssh.FixedHostKey(other.PublicKey())
			return c
		}, "host key mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ssh.Dial("tcp", s.Addr, tt.config())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("dial: got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v\nsshd log:\n%s", err, s.Log())
			}
			defer c.Close()
			sess, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			var out bytes.Buffer
			sess.Stdout = &out
			if err := sess.Run("id -un; echo $HOME"); err != nil {
				t.Fatalf("run: %v", err)
			}
			if got, want := out.String(), s.User+"\n"+s.Home+"\n"; got != want {
				t.Fatalf("output %q, want %q", got, want)
			}
		})
	}
}

func TestAuthorizeAnotherKey(t *testing.T) {
	s := StartSSHD(t)
	_, other, err := newEd25519()
	if err != nil {
		t.Fatal(err)
	}
	c := s.ClientConfig()
	c.Auth = []ssh.AuthMethod{ssh.PublicKeys(other)}
	if _, err := ssh.Dial("tcp", s.Addr, c); err == nil {
		t.Fatal("a key not yet authorized got in")
	}
	s.Authorize(t, string(ssh.MarshalAuthorizedKey(other.PublicKey())))
	cl, err := ssh.Dial("tcp", s.Addr, c)
	if err != nil {
		t.Fatalf("after Authorize: %v", err)
	}
	cl.Close()
}

// TestStubs checks that sessions cannot stop the machine the tests run on,
// and that scripts written for a VM (sudo ...) run.
func TestStubs(t *testing.T) {
	s := StartSSHD(t)
	c, err := ssh.Dial("tcp", s.Addr, s.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		cmd  string
		want string
	}{
		{"sudo -n id -un", s.User + "\n"},
		{"sudo -u nobody echo as-root-anyway", "as-root-anyway\n"},
		{"sudo -n poweroff || poweroff; reboot now; echo alive", "alive\n"},
	}
	for _, tt := range tests {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		out, err := sess.CombinedOutput(tt.cmd)
		sess.Close()
		if err != nil || string(out) != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.cmd, out, err, tt.want)
		}
	}
	if got, want := s.StopRequests(), []string{"poweroff", "reboot now"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("StopRequests() = %q, want %q", got, want)
	}
}
