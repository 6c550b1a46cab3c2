package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "app.pem")
	pem := "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onL\n-----END RSA PRIVATE KEY-----\n"
	if err := os.WriteFile(keyFile, []byte(pem), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := `redis: "redis://user:r3dis-pw@127.0.0.1:6379/0"
github: {app_id: 5, private_key_file: ` + keyFile + `, webhook_secret: whsec-1234}
api_tokens: [tok-abcdef0123456789]
encryption_key: ` + strings.Repeat("ab", 32) + `
pages: {link_key: link-key-1}
`
	cfg, err := Parse([]byte(yml), "imagegen.yaml", testRegistry(), lookupFrom(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range cfg.Secrets() {
		got = append(got, s.Reveal())
	}
	for _, want := range []string{"r3dis-pw", "whsec-1234", "tok-abcdef0123456789", strings.Repeat("ab", 32), "link-key-1",
		pem, "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo", "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onL"} {
		if !slices.Contains(got, want) {
			t.Errorf("Secrets() lacks %q", want)
		}
	}
	for _, s := range got {
		if s == "" || (strings.HasPrefix(s, "-----") && !strings.Contains(s, "\n")) {
			t.Errorf("Secrets() holds %q", s)
		}
	}
}

// TestSecretTooLong: a secret longer than the log redaction can hold back is
// refused at start, naming the key (4 KiB; the App's PEM key is exempt).
func TestSecretTooLong(t *testing.T) {
	long := strings.Repeat("x", 5000)
	_, err := Parse([]byte("github: {token: "+long+", webhook_secret: s3cret-hook}\n"), "imagegen.yaml", testRegistry(), lookupFrom(nil))
	if err == nil || !strings.Contains(err.Error(), "imagegen.yaml: github.token: secret too long: 5000 bytes, at most 4096") {
		t.Fatalf("Parse = %v; want github.token refused as too long", err)
	}
	if strings.Contains(err.Error(), long) {
		t.Error("the error prints the secret")
	}
}
