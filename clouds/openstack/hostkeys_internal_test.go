package openstack

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"golang.org/x/crypto/ssh"
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
		{"plain", "boot\n" + keysBegin + "\n" + ed + " root@vm\n" + keysEnd + "\n", []string{ed}},
		{"prefixed lines, two keys", "[   10.1] cloud-init[812]: " + keysBegin + "\n[   10.1] cloud-init[812]: " + ec + " root@vm\n[   10.2] cloud-init[812]: " + ed + " root@vm\n" + keysEnd, []string{ec, ed}},
		{"block not finished", keysBegin + "\n" + ed + "\n", nil},
		{"no block", "login:", nil},
		{"garbage in block", keysBegin + "\nssh-ed25519 notbase64!!\n" + keysEnd, nil},
		{"last block wins (reboot)", keysBegin + "\n" + ec + "\n" + keysEnd + "\n" + keysBegin + "\n" + ed + "\n" + keysEnd, []string{ed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseConsoleHostKeys(tc.console)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestServerAddress(t *testing.T) {
	addr := func(a, typ string) map[string]any {
		return map[string]any{"addr": a, "OS-EXT-IPS:type": typ, "version": 4}
	}
	tests := []struct {
		name    string
		addrs   map[string]any
		network string
		want    string
	}{
		{"one fixed", map[string]any{"private": []any{addr("10.0.0.5", "fixed")}}, "", "10.0.0.5"},
		{"floating first", map[string]any{"private": []any{addr("10.0.0.5", "fixed"), addr("203.0.113.9", "floating")}}, "", "203.0.113.9"},
		{"configured network", map[string]any{"a": []any{addr("10.0.0.5", "fixed")}, "b": []any{addr("10.1.0.5", "fixed")}}, "b", "10.1.0.5"},
		{"IPv4 before IPv6", map[string]any{"private": []any{addr("2001:db8::5", "fixed"), addr("10.0.0.5", "fixed")}}, "", "10.0.0.5"},
		{"only IPv6", map[string]any{"private": []any{addr("2001:db8::5", "fixed")}}, "", "2001:db8::5"},
		{"none", map[string]any{}, "", ""},
		{"garbage", map[string]any{"private": "nope"}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := serverAddress(&servers.Server{Addresses: tc.addrs}, tc.network); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
