// Package cloudinit writes the cloud-init user data that installs a build's SSH keys, and reads the host keys on a console.
// It knows no cloud API and no driver: drivers hand it a clouds.LaunchRequest or console text and use what it returns.
package cloudinit

import (
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
)

// UserData is the cloud-init user data for a build: the build's key for the
// default user (besides the key pair, for images that read only user data) and,
// when the build generated one, the SSH host key, so imagegen can pin it.
func UserData(req clouds.LaunchRequest) ([]byte, error) {
	cc := map[string]any{}
	if k := strings.TrimSpace(req.AuthorizedKey); k != "" {
		cc["ssh_authorized_keys"] = []string{k}
	}
	if pub := strings.TrimSpace(req.HostKey.Public); pub != "" {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
		if err != nil {
			return nil, fmt.Errorf("host key: %w", err)
		}
		var typ string
		switch pk.Type() {
		case ssh.KeyAlgoED25519:
			typ = "ed25519"
		case ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
			typ = "ecdsa"
		case ssh.KeyAlgoRSA:
			typ = "rsa"
		default:
			return nil, fmt.Errorf("host key type %s: cloud-init cannot install it", pk.Type())
		}
		if req.HostKey.PrivatePEM.IsZero() {
			return nil, fmt.Errorf("host key %s has no private half", typ)
		}
		cc["ssh_keys"] = map[string]string{
			typ + "_private": req.HostKey.PrivatePEM.Reveal(),
			typ + "_public":  pub,
		}
		// Only the injected key, so the server presents the one imagegen pins.
		cc["ssh_genkeytypes"] = []string{}
		cc["ssh_deletekeys"] = true
	}
	b, err := yaml.Marshal(cc)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

// Markers cloud-init prints around the host keys on the console.
const (
	KeysBegin = "-----BEGIN SSH HOST KEY KEYS-----"
	KeysEnd   = "-----END SSH HOST KEY KEYS-----"
)

// ConsoleHostKeys finds the host keys cloud-init printed on the console,
// as authorized_keys lines. Console lines may carry prefixes (timestamps,
// "cloud-init[123]:"), so each key is looked for inside its line.
func ConsoleHostKeys(console string) []string {
	start := strings.LastIndex(console, KeysBegin)
	if start < 0 {
		return nil
	}
	rest := console[start+len(KeysBegin):]
	end := strings.Index(rest, KeysEnd)
	if end < 0 {
		return nil // the block is still being printed
	}
	var keys []string
	for _, line := range strings.Split(rest[:end], "\n") {
		for _, prefix := range []string{"ssh-", "ecdsa-"} {
			i := strings.Index(line, prefix)
			if i < 0 {
				continue
			}
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line[i:]))
			if err != nil {
				continue
			}
			keys = append(keys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))))
			break
		}
	}
	return keys
}
