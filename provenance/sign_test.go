package provenance_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imagegen/imagegen/provenance"
)

func keyTypes(t *testing.T) []keyPair {
	return []keyPair{newEd25519(t), newP256(t)}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, kp := range keyTypes(t) {
		t.Run(kp.name, func(t *testing.T) {
			s := loadSigner(t, kp)
			if !s.Signs() || s.Warning() != "" || s.Algorithm() != kp.name {
				t.Errorf("Signs %v, Warning %q, Algorithm %q", s.Signs(), s.Warning(), s.Algorithm())
			}
			st := newStatement(t, testFacts())
			envelope := sign(t, s, st)

			v := verifier(t, s)
			wantID, _ := dsse.SHA256KeyID(kp.private.Public())
			if s.KeyID() != wantID || v.KeyID() != wantID || !strings.HasPrefix(wantID, "SHA256:") || v.Algorithm() != kp.name {
				t.Errorf("key ids: signer %q, verifier %q; algorithm %q", s.KeyID(), v.KeyID(), v.Algorithm())
			}
			got, err := v.Verify(context.Background(), envelope)
			if err != nil {
				t.Fatal(err)
			}
			if got.Facts() != st.Facts() || !bytes.Equal(got.JSON(), st.JSON()) {
				t.Errorf("verified statement differs:\n%s\n%s", got.JSON(), st.JSON())
			}

			// The Signer's own Verifier is the same key.
			own, err := s.Verifier()
			if err != nil || own.KeyID() != s.KeyID() {
				t.Errorf("Signer.Verifier: %v, %v", own, err)
			}

			env := decodeEnvelope(t, envelope)
			if env.PayloadType != "application/vnd.in-toto+json" || len(env.Signatures) != 1 || env.Signatures[0].KeyID != s.KeyID() {
				t.Errorf("envelope: %s", envelope)
			}
			if sum := sha256.Sum256(envelope); provenance.Digest(envelope) != fmt.Sprintf("%x", sum) {
				t.Error("Digest is not the hex sha256 of the envelope")
			}
		})
	}
}

// TestIndependentVerifier checks envelopes without this package's Verifier:
// with the DSSE library's own EnvelopeVerifier over verifiers built from the
// published PEM public key (securesystemslib's, and one made the way sigstore's
// adapter, which cosign uses, is), with the standard library over the DSSE
// pre-authentication encoding written from the spec, and then reads the
// payload with the in-toto bindings and validates it.
func TestIndependentVerifier(t *testing.T) {
	for _, kp := range keyTypes(t) {
		t.Run(kp.name, func(t *testing.T) {
			s := loadSigner(t, kp)
			envelope := sign(t, s, newStatement(t, testFacts()))
			pubPEM := publicPEM(t, s)
			env := decodeEnvelope(t, envelope)

			// 1. The dsse library, with securesystemslib's dsse.Verifier
			// built from the PEM, and with a bare one (no key id of its own,
			// like sigstore's VerifierAdapter): the library matches both to
			// the signature by the key id it computes itself.
			verifiers := map[string]dsse.Verifier{
				"securesystemslib": sslibVerifier(t, pubPEM, false),
				"bare":             bareVerifier{kp.private.Public()},
			}
			for name, dv := range verifiers {
				ev, err := dsse.NewEnvelopeVerifier(dv)
				if err != nil {
					t.Fatal(err)
				}
				accepted, err := ev.Verify(context.Background(), env)
				if err != nil {
					t.Fatalf("dsse.EnvelopeVerifier over the %s verifier: %v", name, err)
				}
				if len(accepted) != 1 || accepted[0].KeyID != s.KeyID() {
					t.Errorf("%s: accepted %+v, want key %s", name, accepted, s.KeyID())
				}
			}
			// As KeyID documents: a verifier that keeps securesystemslib's own
			// key id takes the signature for another key's and skips it.
			ev, _ := dsse.NewEnvelopeVerifier(sslibVerifier(t, pubPEM, true))
			if _, err := ev.Verify(context.Background(), env); err == nil {
				t.Error("a verifier with securesystemslib's key id accepted the signature; update the KeyID docs")
			}

			// 2. The standard library, over PAE as the DSSE spec defines it:
			// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
			body := payload(t, env)
			pae := []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len(env.PayloadType), env.PayloadType, len(body), body))
			sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
			if err != nil {
				t.Fatal(err)
			}
			switch pub := kp.private.Public().(type) {
			case ed25519.PublicKey:
				if !ed25519.Verify(pub, pae, sig) {
					t.Error("ed25519.Verify rejects the signature")
				}
			case *ecdsa.PublicKey:
				digest := sha256.Sum256(pae)
				if !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Error("ecdsa.VerifyASN1 rejects the signature")
				}
			}

			// 3. The payload is an in-toto Statement v1 with a SLSA v1 predicate.
			var st intoto.Statement
			if err := protojson.Unmarshal(body, &st); err != nil {
				t.Fatal(err)
			}
			if err := st.Validate(); err != nil {
				t.Errorf("in-toto Validate: %v", err)
			}
			var prov slsa.Provenance
			pred, err := protojson.Marshal(st.GetPredicate())
			if err != nil {
				t.Fatal(err)
			}
			if err := protojson.Unmarshal(pred, &prov); err != nil {
				t.Fatal(err)
			}
			if err := prov.Validate(); err != nil {
				t.Errorf("SLSA Validate: %v", err)
			}
			f := testFacts()
			if st.GetPredicateType() != "https://slsa.dev/provenance/v1" ||
				st.GetSubject()[0].GetDigest()["imagegenImageId"] != f.Cloud+"/"+f.ImageID ||
				prov.GetBuildDefinition().GetBuildType() != provenance.BuildType ||
				prov.GetRunDetails().GetBuilder().GetId() != f.BuilderID ||
				prov.GetRunDetails().GetMetadata().GetInvocationId() != f.BuildID {
				t.Errorf("statement fields:\n%s", body)
			}
		})
	}
}

// sslibVerifier is securesystemslib's dsse.Verifier for a PEM public key,
// with or without the key id securesystemslib gives it.
func sslibVerifier(t *testing.T, pubPEM []byte, keepID bool) dsse.Verifier {
	t.Helper()
	key, err := signerverifier.LoadKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !keepID {
		key.KeyID = ""
	}
	var v dsse.Verifier
	switch key.KeyType {
	case signerverifier.ED25519KeyType:
		v, err = signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	case signerverifier.ECDSAKeyType:
		v, err = signerverifier.NewECDSASignerVerifierFromSSLibKey(key)
	default:
		t.Fatalf("key type %q", key.KeyType)
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// bareVerifier is a dsse.Verifier from the standard library and nothing else,
// with no key id of its own.
type bareVerifier struct{ pub crypto.PublicKey }

func (b bareVerifier) Verify(_ context.Context, data, sig []byte) error {
	ok := false
	switch pub := b.pub.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, data, sig)
	case *ecdsa.PublicKey:
		digest := sha256.Sum256(data)
		ok = ecdsa.VerifyASN1(pub, digest[:], sig)
	}
	if !ok {
		return errors.New("bad signature")
	}
	return nil
}
func (b bareVerifier) KeyID() (string, error)   { return "", nil }
func (b bareVerifier) Public() crypto.PublicKey { return b.pub }

// TestOpenSSLVerifies checks a signature with OpenSSL, a verifier that shares
// no code with Go, and that a key made by `openssl genpkey` loads. Skipped
// where openssl is not installed.
func TestOpenSSLVerifies(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	try := func(args ...string) error {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("openssl %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	run := func(args ...string) {
		t.Helper()
		if err := try(args...); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	for _, alg := range []struct{ name, genpkey string }{
		{"ed25519", "-algorithm ed25519"},
		{"ecdsa-p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"},
	} {
		t.Run(alg.name, func(t *testing.T) {
			keyFile := filepath.Join(dir, alg.name+".key")
			run(append(append([]string{"genpkey"}, strings.Fields(alg.genpkey)...), "-out", keyFile)...)
			s, err := provenance.LoadSigner(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			env := decodeEnvelope(t, sign(t, s, newStatement(t, testFacts())))
			body := payload(t, env)
			pae := fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(env.PayloadType), env.PayloadType, len(body), body)
			sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
			files := map[string][]byte{"pub.pem": publicPEM(t, s), "pae.bin": pae, "sig.bin": sig}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, alg.name+"-"+name), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			p := func(name string) string { return filepath.Join(dir, alg.name+"-"+name) }
			verify := []string{"dgst", "-sha256", "-verify", p("pub.pem"), "-signature", p("sig.bin"), p("pae.bin")}
			if alg.name == "ed25519" {
				verify = []string{"pkeyutl", "-verify", "-pubin", "-inkey", p("pub.pem"), "-rawin", "-in", p("pae.bin"), "-sigfile", p("sig.bin")}
			}
			run(verify...)
			// And OpenSSL does say no: the same check fails on an altered payload.
			pae[len(pae)-2] ^= 1
			if err := os.WriteFile(p("pae.bin"), pae, 0o644); err != nil {
				t.Fatal(err)
			}
			if try(verify...) == nil {
				t.Error("openssl accepts the signature over an altered payload")
			}
			// The key id is the key's SSH fingerprint (OpenSSH 9.2 imports no
			// ed25519 PKCS#8 key, so ECDSA only).
			if sshKeygen, err := exec.LookPath("ssh-keygen"); err == nil && alg.name == "ecdsa-p256" {
				sshPub, err := exec.Command(sshKeygen, "-i", "-m", "PKCS8", "-f", p("pub.pem")).Output()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p("ssh.pub"), sshPub, 0o644); err != nil {
					t.Fatal(err)
				}
				fp, err := exec.Command(sshKeygen, "-l", "-f", p("ssh.pub")).Output()
				if err != nil || !strings.Contains(string(fp), " "+s.KeyID()+" ") {
					t.Errorf("ssh-keygen -l: %s (%v), want key id %s", fp, err, s.KeyID())
				}
			}
		})
	}
}

func TestWrongKeyFails(t *testing.T) {
	st := newStatement(t, testFacts())
	for _, signKey := range keyTypes(t) {
		for _, verifyKey := range keyTypes(t) {
			t.Run(signKey.name+" verified with another "+verifyKey.name, func(t *testing.T) {
				s := loadSigner(t, signKey)
				other := verifier(t, loadSigner(t, verifyKey))
				_, err := other.Verify(context.Background(), sign(t, s, st))
				if !errors.Is(err, provenance.ErrWrongKey) {
					t.Fatalf("err = %v, want ErrWrongKey", err)
				}
				want := fmt.Sprintf("signed by key %s, not by the given key %s", s.KeyID(), other.KeyID())
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to name both keys: %q", err, want)
				}
			})
		}
	}
}

func TestTamperedEnvelopeFails(t *testing.T) {
	for _, kp := range keyTypes(t) {
		s := loadSigner(t, kp)
		v := verifier(t, s)
		envelope := sign(t, s, newStatement(t, testFacts()))
		f := testFacts()
		cases := map[string]func(*dsse.Envelope){
			"commit in the payload": func(e *dsse.Envelope) {
				body := bytes.ReplaceAll(payload(t, e), []byte(f.Commit), []byte(strings.Repeat("0", 40)))
				e.Payload = base64.StdEncoding.EncodeToString(body)
			},
			"image id in the payload": func(e *dsse.Envelope) {
				body := bytes.ReplaceAll(payload(t, e), []byte(f.ImageID), []byte("ami-0fedcba9876543210"))
				e.Payload = base64.StdEncoding.EncodeToString(body)
			},
			"signature": func(e *dsse.Envelope) {
				sig, _ := base64.StdEncoding.DecodeString(e.Signatures[0].Sig)
				sig[len(sig)/2] ^= 1
				e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(sig)
			},
			"payload, key id dropped": func(e *dsse.Envelope) {
				body := bytes.ReplaceAll(payload(t, e), []byte(f.Generator), []byte("evil"))
				e.Payload = base64.StdEncoding.EncodeToString(body)
				e.Signatures[0].KeyID = ""
			},
		}
		for name, tamper := range cases {
			t.Run(kp.name+" "+name, func(t *testing.T) {
				env := decodeEnvelope(t, envelope)
				tamper(env)
				_, err := v.Verify(context.Background(), encodeEnvelope(t, env))
				if !errors.Is(err, provenance.ErrBadSignature) || !strings.Contains(err.Error(), "altered after signing") {
					t.Errorf("err = %v, want ErrBadSignature", err)
				}
			})
		}
		t.Run(kp.name+" payload type", func(t *testing.T) {
			env := decodeEnvelope(t, envelope)
			env.PayloadType = "application/json"
			_, err := v.Verify(context.Background(), encodeEnvelope(t, env))
			if err == nil || !strings.Contains(err.Error(), `payload type is "application/json"`) {
				t.Errorf("err = %v", err)
			}
		})
	}
	if _, err := verifier(t, loadSigner(t, newEd25519(t))).Verify(context.Background(), []byte("{")); err == nil || !strings.Contains(err.Error(), "not a DSSE envelope") {
		t.Errorf("not JSON: err = %v", err)
	}
}

// TestUnsigned: without a key the Signer writes an envelope with no signatures,
// which reads as a statement but never verifies.
func TestUnsigned(t *testing.T) {
	unkeyed, err := provenance.LoadSigner("")
	if err != nil {
		t.Fatal(err)
	}
	var nilSigner *provenance.Signer
	for name, s := range map[string]*provenance.Signer{"LoadSigner(\"\")": unkeyed, "nil": nilSigner} {
		t.Run(name, func(t *testing.T) {
			if s.Signs() || s.Warning() != provenance.UnsignedWarning || s.KeyID() != "" || s.Algorithm() != "" {
				t.Errorf("Signs %v, Warning %q, KeyID %q", s.Signs(), s.Warning(), s.KeyID())
			}
			if _, err := s.PublicKeyPEM(); !errors.Is(err, provenance.ErrNoKey) {
				t.Errorf("PublicKeyPEM: %v", err)
			}
			st := newStatement(t, testFacts())
			envelope := sign(t, s, st)
			if !bytes.Contains(envelope, []byte(`"signatures":[]`)) {
				t.Errorf("envelope: %s", envelope)
			}
			read, err := provenance.ReadUnverified(envelope)
			if err != nil || !bytes.Equal(read.JSON(), st.JSON()) {
				t.Errorf("ReadUnverified: %v", err)
			}
			_, err = verifier(t, loadSigner(t, newEd25519(t))).Verify(context.Background(), envelope)
			if !errors.Is(err, provenance.ErrUnsigned) {
				t.Errorf("Verify: err = %v, want ErrUnsigned", err)
			}
			// The dsse library agrees that there is nothing to verify.
			ev, _ := dsse.NewEnvelopeVerifier(sslibVerifier(t, publicPEM(t, loadSigner(t, newEd25519(t))), false))
			if _, err := ev.Verify(context.Background(), decodeEnvelope(t, envelope)); !errors.Is(err, dsse.ErrNoSignature) {
				t.Errorf("dsse: err = %v, want ErrNoSignature", err)
			}
		})
	}
}

// TestGoldenEnvelope pins the envelope (ed25519 signatures are deterministic)
// and so the value of the imagegen:provenance-sha256 tag for given facts and key.
func TestGoldenEnvelope(t *testing.T) {
	s := loadSigner(t, fixedEd25519(t))
	envelope := sign(t, s, newStatement(t, testFacts()))
	var out bytes.Buffer
	fmt.Fprintf(&out, "key id: %s\nimagegen:provenance-sha256: %s\n%s\n", s.KeyID(), provenance.Digest(envelope), envelope)
	checkGolden(t, "envelope-ed25519.golden", out.Bytes())
	if !json.Valid(envelope) {
		t.Error("not JSON")
	}
}
