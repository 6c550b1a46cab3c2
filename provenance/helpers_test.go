package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/imagegen/imagegen/provenance"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// testFacts is one image's facts with fixed times, as the pipeline would give them.
func testFacts() provenance.Facts {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return provenance.Facts{
		BuilderID:      "https://imagegen.example.org",
		BuilderVersion: "v1.4.0",
		Repo:           "fg/images",
		RepoURL:        "https://github.com/fg/images",
		Ref:            "refs/heads/main",
		Commit:         "3f786850e387550fdab836ed7e6dc881de23001b",
		Generator:      "dstat",
		Cloud:          "hotel-openstack",
		ImageID:        "0b9e8c1a-5b7d-4c52-9a36-7d1f3e2c4b6a",
		ImageName:      "dstat-20260301-1200-3f78685",
		ScriptSHA256:   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		BaseImage:      "6e5959e9-f349-420f-b77c-5485306fdc25",
		BuildID:        "0123456789abcdef",
		Started:        t0,
		Finished:       t0.Add(2*time.Minute + 13*time.Second),
	}
}

func newStatement(t *testing.T, f provenance.Facts) *provenance.Statement {
	t.Helper()
	st, err := provenance.NewStatement(f)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// imageTags are the tags the pipeline puts on the image for f, plus one it does
// not sign, and the envelope's digest.
func imageTags(f provenance.Facts, envelope []byte) map[string]string {
	base := f.BaseImageID
	if base == "" {
		base = f.BaseImage
	}
	return map[string]string{
		"imagegen:repo":              f.Repo,
		"imagegen:commit":            f.Commit,
		"imagegen:generator":         f.Generator,
		"imagegen:script-sha256":     f.ScriptSHA256,
		"imagegen:base-image":        base,
		"imagegen:build":             f.BuildID,
		"imagegen:tested":            "true",
		"imagegen:provenance-sha256": provenance.Digest(envelope),
	}
}

// keyPair is a generated key: its PKCS#8 PEM, written to a file, and its public half.
type keyPair struct {
	name    string
	private crypto.Signer
	pemData []byte
	file    string
}

func writeKey(t *testing.T, name string, key any) keyPair {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemData := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	file := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(file, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	kp := keyPair{name: name, pemData: pemData, file: file}
	kp.private, _ = key.(crypto.Signer)
	return kp
}

func newEd25519(t *testing.T) keyPair {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, "ed25519", k)
}

func newP256(t *testing.T) keyPair {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, "ecdsa-p256", k)
}

func newP384(t *testing.T) keyPair {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return writeKey(t, "ecdsa-p384", k)
}

func newRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newX25519(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedEd25519 is a test key from a fixed seed: ed25519 signatures are
// deterministic, so its envelopes are the same bytes on every run.
func fixedEd25519(t *testing.T) keyPair {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	return writeKey(t, "fixed-ed25519", ed25519.NewKeyFromSeed(seed))
}

func loadSigner(t *testing.T, kp keyPair) *provenance.Signer {
	t.Helper()
	s, err := provenance.LoadSigner(kp.file)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func publicPEM(t *testing.T, s *provenance.Signer) []byte {
	t.Helper()
	p, err := s.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func verifier(t *testing.T, s *provenance.Signer) *provenance.Verifier {
	t.Helper()
	v, err := provenance.ParseVerifier(publicPEM(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sign(t *testing.T, s *provenance.Signer, st *provenance.Statement) []byte {
	t.Helper()
	env, err := s.Sign(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func decodeEnvelope(t *testing.T, envelope []byte) *dsse.Envelope {
	t.Helper()
	env := &dsse.Envelope{}
	if err := json.Unmarshal(envelope, env); err != nil {
		t.Fatal(err)
	}
	return env
}

func encodeEnvelope(t *testing.T, env *dsse.Envelope) []byte {
	t.Helper()
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func payload(t *testing.T, env *dsse.Envelope) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkGolden compares got with testdata/name (go test -update rewrites it).
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to make it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("differs from %s (go test -run Golden -update, then review the diff):\n%s", golden, got)
	}
}
