package provenance

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadType is the DSSE payload type of an in-toto statement.
const PayloadType = "application/vnd.in-toto+json"

// ErrNoKey is returned by PublicKeyPEM when no signing key is configured.
var ErrNoKey = errors.New("no provenance signing key is configured")

// UnsignedWarning is what Signer.Warning returns when no key is configured.
const UnsignedWarning = "provenance: no signing key configured (provenance.signing_key_file): " +
	"images get unsigned provenance statements, which imagegen verify rejects"

// Signer signs statements with the server's provenance key, or with none.
//
// Without a key (LoadSigner("") or a nil *Signer) Sign still writes a DSSE
// envelope, with no signatures: the statement is stored, served, hashed into
// TagProvenance and read by trace exactly as a signed one, and only
// verification tells them apart (ErrUnsigned). One format for both keeps every
// caller free of "was it signed" branches, and an envelope whose signature
// list is empty is one every DSSE verifier rejects (the dsse library with
// dsse.ErrNoSignature), so none takes it for signed by mistake.
type Signer struct {
	sv    dsse.SignerVerifier // nil: no key
	keyID string
	pub   crypto.PublicKey
}

// LoadSigner reads the key file the server config names
// (provenance.signing_key_file): a PEM PKCS#8 "PRIVATE KEY", ed25519 or ECDSA
// P-256. An empty path means no key: the Signer then writes unsigned envelopes,
// and Warning says so for the caller to log at start.
func LoadSigner(path string) (*Signer, error) {
	if path == "" {
		return &Signer{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("provenance signing key: %w", err)
	}
	s, err := ParseSigner(data)
	if err != nil {
		return nil, fmt.Errorf("provenance signing key %s: %w", path, err)
	}
	return s, nil
}

// ParseSigner reads a private key as LoadSigner does, from its PEM text.
func ParseSigner(pemData []byte) (*Signer, error) {
	der, pub, err := parsePrivateKey(pemData)
	if err != nil {
		return nil, err
	}
	sv, keyID, err := signerVerifier("PRIVATE KEY", der, pub)
	if err != nil {
		return nil, err
	}
	return &Signer{sv: sv, keyID: keyID, pub: pub}, nil
}

// Signs reports whether the Signer has a key.
func (s *Signer) Signs() bool { return s != nil && s.sv != nil }

// Warning returns UnsignedWarning when there is no key, "" otherwise.
func (s *Signer) Warning() string {
	if s.Signs() {
		return ""
	}
	return UnsignedWarning
}

// KeyID returns the key's id ("" without a key), as it appears in the
// envelope's signatures: "SHA256:" and the base64 SHA-256 of the public key in
// SSH wire format, the DSSE library's own key id (dsse.SHA256KeyID) and the
// fingerprint `ssh-keygen -l` prints for the key.
func (s *Signer) KeyID() string {
	if !s.Signs() {
		return ""
	}
	return s.keyID
}

// Algorithm returns AlgorithmEd25519 or AlgorithmECDSAP256 ("" without a key).
func (s *Signer) Algorithm() string {
	if !s.Signs() {
		return ""
	}
	return algorithmOf(s.pub)
}

// PublicKeyPEM returns the public key as a PEM "PUBLIC KEY" (PKIX), what the
// server serves for `imagegen verify --key`, or ErrNoKey.
func (s *Signer) PublicKeyPEM() ([]byte, error) {
	if !s.Signs() {
		return nil, ErrNoKey
	}
	return publicKeyPEM(s.pub)
}

// Verifier returns the Verifier for the Signer's own public key, or ErrNoKey.
func (s *Signer) Verifier() (*Verifier, error) {
	pemData, err := s.PublicKeyPEM()
	if err != nil {
		return nil, err
	}
	return ParseVerifier(pemData)
}

// Sign wraps the statement in a DSSE envelope, signed when the Signer has a
// key, and returns the envelope's JSON. Store and serve those bytes as they
// are: the image's TagProvenance is their Digest.
func (s *Signer) Sign(ctx context.Context, st *Statement) ([]byte, error) {
	if st == nil {
		return nil, errors.New("provenance: no statement to sign")
	}
	env := &dsse.Envelope{
		PayloadType: PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(st.json),
		Signatures:  []dsse.Signature{},
	}
	if s.Signs() {
		es, err := dsse.NewEnvelopeSigner(s.sv)
		if err != nil {
			return nil, fmt.Errorf("provenance: %w", err)
		}
		if env, err = es.SignPayload(ctx, PayloadType, st.json); err != nil {
			return nil, fmt.Errorf("provenance: signing the statement: %w", err)
		}
	}
	return json.Marshal(env)
}

// Digest returns the hex SHA-256 of an envelope's JSON, the value of the
// image's TagProvenance.
func Digest(envelope []byte) string {
	sum := sha256.Sum256(envelope)
	return hex.EncodeToString(sum[:])
}
