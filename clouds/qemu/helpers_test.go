package qemu

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// needQEMU skips under -short and fails when QEMU is not installed.
func needQEMU(t testing.TB) {
	t.Helper()
	servicetest.NeedQEMU(t)
}

// testImage returns the tiny base image's disk (servicetest.QEMUImage).
func testImage(t testing.TB) string {
	t.Helper()
	return servicetest.QEMUImage(t)
}

// keys is a build's SSH material, made as the pipeline makes it.
type keys struct {
	signer     ssh.Signer
	authorized string
	hostKey    clouds.HostKey
	hostPub    ssh.PublicKey
}

func newKeys(t testing.TB) keys {
	t.Helper()
	_, cpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(cpriv)
	if err != nil {
		t.Fatal(err)
	}
	hpub, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(hpriv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	return keys{
		signer:     signer,
		authorized: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))),
		hostKey: clouds.HostKey{
			PrivatePEM: secret.New(string(pem.EncodeToMemory(blk))),
			Public:     strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))),
		},
		hostPub: sp,
	}
}

// newTestCloud configures a qemu cloud on dir from YAML text.
func newTestCloud(t testing.TB, text string) *Cloud {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	op, err := Configure(clouds.Config{Name: "local", Type: Type, Node: doc.Content[0], File: "test.yaml"})
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return op.(*Cloud)
}

// testLog is a build log that goes to the test's output.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dialGuest logs in with the build's key, pinning the injected host key.
func dialGuest(t testing.TB, ep *clouds.Endpoint, user string, k keys) *ssh.Client {
	t.Helper()
	if len(ep.HostKeys) != 1 || ep.HostKeys[0] != k.hostKey.Public || ep.HostKeySource != "injected" {
		t.Fatalf("endpoint host keys %q from %q; want the injected %q", ep.HostKeys, ep.HostKeySource, k.hostKey.Public)
	}
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(k.signer)},
		HostKeyCallback: ssh.FixedHostKey(k.hostPub),
		Timeout:         10 * time.Second,
	}
	c, err := ssh.Dial("tcp", ep.Addr, cfg)
	if err != nil {
		t.Fatalf("ssh to %s with the pinned host key: %v", ep.Addr, err)
	}
	return c
}

func run(t testing.TB, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

// poweroff asks the guest to power off, as the pipeline does; the session
// may end abruptly as the guest goes down.
func poweroff(t testing.TB, c *ssh.Client) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Start("poweroff")
	done := make(chan struct{})
	go func() { _ = s.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	c.Close()
}
