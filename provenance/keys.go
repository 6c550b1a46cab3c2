package provenance

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"
)

// Key algorithms, as Signer.Algorithm and Verifier.Algorithm name them.
const (
	AlgorithmEd25519   = "ed25519"
	AlgorithmECDSAP256 = "ecdsa-p256"
)

// ErrKeyType is wrapped by the error for a key of a type other than ed25519 or
// ECDSA P-256; the message names the type found.
var ErrKeyType = errors.New("unsupported key type: want ed25519 or ECDSA P-256")

const genKeyHint = "openssl genpkey -algorithm ed25519 -out provenance.key"

// parsePrivateKey reads a PKCS#8 ("PRIVATE KEY") PEM block holding an ed25519
// or ECDSA P-256 key. Other encodings and types are refused with a message
// that names what was found and how to make a key that works.
func parsePrivateKey(data []byte) (der []byte, pub crypto.PublicKey, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, fmt.Errorf("no PEM block found (want a PKCS#8 \"PRIVATE KEY\"; make one with: %s)", genKeyHint)
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "ENCRYPTED PRIVATE KEY":
		return nil, nil, fmt.Errorf("the key is encrypted; imagegen reads an unencrypted PKCS#8 key (keep the file itself secret): openssl pkey -in FILE -out provenance.key")
	case "EC PRIVATE KEY":
		return nil, nil, fmt.Errorf("the key is a SEC 1 \"EC PRIVATE KEY\"; imagegen reads PKCS#8: openssl pkey -in FILE -out provenance.key")
	case "RSA PRIVATE KEY":
		return nil, nil, fmt.Errorf("%w: found an RSA key (PKCS#1); make one with: %s", ErrKeyType, genKeyHint)
	case "OPENSSH PRIVATE KEY":
		return nil, nil, fmt.Errorf("the key is in OpenSSH's format; imagegen reads a PKCS#8 PEM key: %s", genKeyHint)
	case "PUBLIC KEY":
		return nil, nil, fmt.Errorf("this is a public key; signing needs the private key (a PKCS#8 \"PRIVATE KEY\")")
	default:
		return nil, nil, fmt.Errorf("the PEM block is a %q, want a PKCS#8 \"PRIVATE KEY\"", block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%w: found %s", ErrKeyType, describeKey(key))
	}
	pub = signer.Public()
	if err := checkKeyType(pub); err != nil {
		return nil, nil, err
	}
	return block.Bytes, pub, nil
}

// parsePublicKey reads a PKIX ("PUBLIC KEY") PEM block, as PublicKeyPEM writes it.
func parsePublicKey(data []byte) (der []byte, pub crypto.PublicKey, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("no PEM block found (want a \"PUBLIC KEY\", as the server serves at /api/v1/provenance/key)")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, nil, fmt.Errorf("the PEM block is a %q, want a \"PUBLIC KEY\" (as the server serves at /api/v1/provenance/key)", block.Type)
	}
	pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	if err := checkKeyType(pub); err != nil {
		return nil, nil, err
	}
	return block.Bytes, pub, nil
}

func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return nil
		}
	}
	return fmt.Errorf("%w: found %s", ErrKeyType, describeKey(pub))
}

func algorithmOf(pub crypto.PublicKey) string {
	if _, ok := pub.(ed25519.PublicKey); ok {
		return AlgorithmEd25519
	}
	return AlgorithmECDSAP256
}

// describeKey names a key's type for an error message.
func describeKey(k any) string {
	switch k := k.(type) {
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "an ed25519 key"
	case *ecdsa.PublicKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case *ecdsa.PrivateKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case *rsa.PublicKey:
		return fmt.Sprintf("an RSA %d-bit key", k.N.BitLen())
	case *rsa.PrivateKey:
		return fmt.Sprintf("an RSA %d-bit key", k.N.BitLen())
	case *ecdh.PublicKey:
		return "an ECDH " + curveName(k.Curve()) + " key (a key-agreement key, which cannot sign)"
	case *ecdh.PrivateKey:
		return "an ECDH " + curveName(k.Curve()) + " key (a key-agreement key, which cannot sign)"
	default:
		return fmt.Sprintf("a key of Go type %T", k)
	}
}

func curveName(c ecdh.Curve) string {
	switch c {
	case ecdh.X25519():
		return "X25519"
	case ecdh.P256():
		return "P-256"
	case ecdh.P384():
		return "P-384"
	case ecdh.P521():
		return "P-521"
	}
	return "unknown-curve"
}

// signerVerifier builds securesystemslib's DSSE signer-verifier for a key (a
// PKCS#8 private or a PKIX public key, DER) and gives it imagegen's key id.
func signerVerifier(pemType string, der []byte, pub crypto.PublicKey) (dsse.SignerVerifier, string, error) {
	key, err := signerverifier.LoadKey(pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}))
	if err != nil {
		return nil, "", err
	}
	var sv dsse.SignerVerifier
	switch pub.(type) {
	case ed25519.PublicKey:
		sv, err = signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	default:
		sv, err = signerverifier.NewECDSASignerVerifierFromSSLibKey(key)
	}
	if err != nil {
		return nil, "", err
	}
	id, err := keyID(pub)
	if err != nil {
		return nil, "", err
	}
	return withKeyID{sv, id}, id, nil
}

// keyID is the DSSE library's own id for a public key (dsse.SHA256KeyID):
// "SHA256:" and the unpadded base64 SHA-256 of the key in SSH wire format, the
// fingerprint ssh-keygen -l prints. The library's EnvelopeVerifier computes it
// for every verifier that names no key id of its own, and so do the verifiers
// built on it without configuration (sigstore's, which cosign uses): they
// match imagegen's signatures to the key as they are. securesystemslib's key
// objects carry another id (a hash of their JSON form); a verifier built from
// one must drop it, or it skips the signature as another key's.
func keyID(pub crypto.PublicKey) (string, error) {
	return dsse.SHA256KeyID(pub)
}

// withKeyID gives a signer-verifier imagegen's key id.
type withKeyID struct {
	dsse.SignerVerifier
	id string
}

func (w withKeyID) KeyID() (string, error) { return w.id, nil }

func publicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
