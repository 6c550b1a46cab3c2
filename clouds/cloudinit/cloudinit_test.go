package cloudinit

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
)

func pubLine(t *testing.T, pub any) string {
	t.Helper()
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

func TestParseConsoleHostKeys(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ed, ec := pubLine(t, edPub), pubLine(t, &ecKey.PublicKey)
	tests := []struct {
		name    string
		console string
		want    []string
	}{
		{"plain", "boot\n" + KeysBegin + "\n" + ed + " root@vm\n" + KeysEnd + "\n", []string{ed}},
		{"prefixed lines, two keys", "[   10.1] cloud-init[812]: " + KeysBegin + "\n[   10.1] cloud-init[812]: " + ec + " root@vm\n[   10.2] cloud-init[812]: " + ed + " root@vm\n" + KeysEnd, []string{ec, ed}},
		{"block not finished", KeysBegin + "\n" + ed + "\n", nil},
		{"no block", "login:", nil},
		{"garbage in block", KeysBegin + "\nssh-ed25519 notbase64!!\n" + KeysEnd, nil},
		{"last block wins (reboot)", KeysBegin + "\n" + ec + "\n" + KeysEnd + "\n" + KeysBegin + "\n" + ed + "\n" + KeysEnd, []string{ed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ConsoleHostKeys(tc.console)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUserData(t *testing.T) {
	hostPub, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(hostPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	host := clouds.HostKey{PrivatePEM: secret.New(string(pemEncode(block))), Public: pubLine(t, hostPub)}
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	user := pubLine(t, userPub)

	tests := []struct {
		name    string
		req     clouds.LaunchRequest
		wantErr string
		check   func(t *testing.T, cc map[string]any)
	}{
		{name: "key and host key", req: clouds.LaunchRequest{AuthorizedKey: user, HostKey: host}, check: func(t *testing.T, cc map[string]any) {
			keys := cc["ssh_keys"].(map[string]any)
			if keys["ed25519_public"] != host.Public || !strings.Contains(keys["ed25519_private"].(string), "OPENSSH PRIVATE KEY") {
				t.Errorf("ssh_keys = %v", keys)
			}
			if ak := cc["ssh_authorized_keys"].([]any); len(ak) != 1 || ak[0] != user {
				t.Errorf("ssh_authorized_keys = %v", ak)
			}
			if cc["ssh_deletekeys"] != true || len(cc["ssh_genkeytypes"].([]any)) != 0 {
				t.Errorf("only the injected host key must remain: %v", cc)
			}
		}},
		{name: "no host key", req: clouds.LaunchRequest{AuthorizedKey: user}, check: func(t *testing.T, cc map[string]any) {
			if _, ok := cc["ssh_keys"]; ok {
				t.Errorf("ssh_keys without a host key: %v", cc)
			}
		}},
		{name: "public half only", req: clouds.LaunchRequest{HostKey: clouds.HostKey{Public: host.Public}}, wantErr: "no private half"},
		{name: "bad public key", req: clouds.LaunchRequest{HostKey: clouds.HostKey{Public: "ssh-ed25519 nope"}}, wantErr: "host key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := UserData(tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(b), "#cloud-config\n") {
				t.Fatalf("user data does not start with #cloud-config: %q", b)
			}
			var cc map[string]any
			if err := yaml.Unmarshal(b, &cc); err != nil {
				t.Fatal(err)
			}
			tc.check(t, cc)
		})
	}
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
