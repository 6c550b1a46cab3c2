// This file starts a real OpenSSH server on 127.0.0.1 with generated keys,
// torn down when the test ends. (The package doc comment is in redis.go.)

package servicetest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is the OpenSSH server the harness runs.
const SSHDPath = "/usr/sbin/sshd"

// SSHD is a running OpenSSH server that lets User in with ClientSigner.
type SSHD struct {
	Addr         string // 127.0.0.1:port
	User         string // the current user: sshd runs as it and lets only it in
	HostKey      string // authorized_keys line of the server's host key
	HostPublic   ssh.PublicKey
	HostSigner   ssh.Signer // the host key's private half, for tests that inject it
	ClientSigner ssh.Signer // authorized for User
	Dir          string     // the server's files (config, keys, log)
	Home         string     // HOME in sessions: an empty directory, not the user's

	mu             sync.Mutex
	authorizedKeys string // path of the authorized_keys file
	log            *syncBuffer
}

// StartSSHD starts /usr/sbin/sshd on a free port of 127.0.0.1 as the current
// user, waits until it answers, and stops it when the test ends. Under -short
// the test is skipped; otherwise a missing sshd fails it (Need).
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	Need(t, "OpenSSH's sshd (Debian package openssh-server)", SSHDPath)
	u, err := user.Current()
	if err != nil {
		t.Fatalf("servicetest: current user: %v", err)
	}
	dir := t.TempDir()
	s := &SSHD{User: u.Username, Dir: dir, Home: filepath.Join(dir, "home"), authorizedKeys: filepath.Join(dir, "authorized_keys"), log: &syncBuffer{}}

	if err := os.Mkdir(filepath.Join(dir, "home"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeStubs(filepath.Join(dir, "bin"), filepath.Join(dir, "poweroff.log")); err != nil {
		t.Fatalf("servicetest: %v", err)
	}
	hostPEM, hostSigner, err := newEd25519()
	if err != nil {
		t.Fatalf("servicetest: host key: %v", err)
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(hostKeyFile, hostPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.HostSigner = hostSigner
	s.HostPublic = hostSigner.PublicKey()
	s.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostPublic)))

	_, clientSigner, err := newEd25519()
	if err != nil {
		t.Fatalf("servicetest: client key: %v", err)
	}
	s.ClientSigner = clientSigner
	if err := os.WriteFile(s.authorizedKeys, ssh.MarshalAuthorizedKey(clientSigner.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}

	// sshd refuses to start as root without its privilege separation
	// directory, which containers and CI machines often lack.
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("servicetest: privilege separation directory: %v", err)
		}
	}

	// Retry on a port taken between choosing it and sshd binding it.
	var lastErr error
	for try := 0; try < 5; try++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("servicetest: free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
		conf := filepath.Join(dir, "sshd_config")
		if err := os.WriteFile(conf, []byte(s.config(port, hostKeyFile)), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(t, conf); lastErr == nil {
			return s
		}
	}
	t.Fatalf("servicetest: sshd did not start: %v", lastErr)
	return nil
}

func (s *SSHD) config(port int, hostKeyFile string) string {
	lines := []string{
		"ListenAddress 127.0.0.1:" + fmt.Sprint(port),
		"HostKey " + hostKeyFile,
		"PidFile " + filepath.Join(s.Dir, "sshd.pid"),
		"AuthorizedKeysFile " + s.authorizedKeys,
		"PermitRootLogin yes",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"AllowUsers " + s.User,
		"LogLevel VERBOSE",
		"MaxStartups 100:30:200",
		"MaxSessions 50",
		"PrintMotd no",
		"Subsystem sftp /usr/lib/openssh/sftp-server",
		// The user's environment on a CI machine must not change what tests
		// see: bash run by sshd sources ~/.bashrc, and a developer's (pyenv
		// init and the like) can cost seconds per session.
		"PermitUserEnvironment no",
		"SetEnv HOME=" + filepath.Join(s.Dir, "home") + " PATH=" + filepath.Join(s.Dir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	return strings.Join(lines, "\n") + "\n"
}

func (s *SSHD) start(t testing.TB, conf string) error {
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", conf)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		_ = exitOf(exited) // killed: its exit status says nothing
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("sshd exited: %w; its log:\n%s", err, s.log.String())
		default:
		}
		if err := s.probe(); err == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("sshd log:\n%s", s.log.String())
				}
			})
			return nil
		} else if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("sshd on %s did not answer within 10s: %w; its log:\n%s", s.Addr, err, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe checks that the server speaks SSH: reading its version banner is
// enough and does not need a login.
func (s *SSHD) probe() error {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != "SSH-" {
		return fmt.Errorf("unexpected banner %q", buf)
	}
	return nil
}

// Authorize lets the holder of pub (an ssh.PublicKey or an authorized_keys
// line) log in as User too.
func (s *SSHD) Authorize(t testing.TB, pub any) {
	t.Helper()
	var line []byte
	switch k := pub.(type) {
	case ssh.PublicKey:
		line = ssh.MarshalAuthorizedKey(k)
	case string:
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			t.Fatalf("servicetest: Authorize: %v", err)
		}
		line = []byte(strings.TrimSpace(k) + "\n")
	default:
		t.Fatalf("servicetest: Authorize: want ssh.PublicKey or string, got %T", pub)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.authorizedKeys, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(line); err != nil {
		t.Fatal(err)
	}
}

// ClientConfig returns a client config that logs in as User with ClientSigner
// and pins the server's host key.
func (s *SSHD) ClientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)},
		HostKeyCallback: ssh.FixedHostKey(s.HostPublic),
		Timeout:         5 * time.Second,
	}
}

// WriteClientKey writes ClientSigner's private key to a file in Dir (for
// configs that name a private_key_file) and returns its path.
func (s *SSHD) WriteClientKey(t testing.TB) string {
	t.Helper()
	pemBytes, signer, err := newEd25519()
	if err != nil {
		t.Fatal(err)
	}
	s.Authorize(t, signer.PublicKey())
	path := filepath.Join(s.Dir, fmt.Sprintf("client_%d.key", time.Now().UnixNano()))
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// stubs shadow, on the sessions' PATH, the commands a build script or the
// pipeline may run that would harm the machine running the tests: the test
// server is this machine, not a throwaway VM. sudo runs its command as the
// current user, so scripts written for a VM ("sudo apt-get ...") run unchanged.
var stubs = map[string]string{
	"sudo": `#!/bin/sh
# servicetest stub: run the command as the current user.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-D|-h|-p|-r|-t|-T|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
exec "$@"
`,
	"poweroff": stopStub, "reboot": stopStub, "shutdown": stopStub, "halt": stopStub,
}

const stopStub = `#!/bin/sh
# servicetest stub: record the request instead of stopping the machine.
echo "$(basename "$0") $*" >> "$IMAGEGEN_TESTENV_POWEROFF_LOG"
`

func writeStubs(dir, logFile string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for name, body := range stubs {
		body = strings.ReplaceAll(body, "$IMAGEGEN_TESTENV_POWEROFF_LOG", logFile)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// StopRequests returns the poweroff, reboot, shutdown and halt commands
// sessions ran (the stubs record them instead of stopping the machine).
func (s *SSHD) StopRequests() []string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "poweroff.log"))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Log returns what sshd has logged so far.
func (s *SSHD) Log() string { return s.log.String() }

func newEd25519() ([]byte, ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(block), signer, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("not a TCP address")
	}
	return addr.Port, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the log small: a test that loops on logins must not grow it forever.
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
