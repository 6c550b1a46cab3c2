package provenance

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Verification errors; the errors Verify returns wrap one of them and say more.
var (
	// ErrUnsigned: the envelope has no signature (the server had no key).
	ErrUnsigned = errors.New("the provenance envelope is not signed")
	// ErrWrongKey: the envelope is signed, by another key than the one given.
	ErrWrongKey = errors.New("the provenance is signed with another key")
	// ErrBadSignature: a signature by the given key does not match the
	// envelope: the payload or the signature was altered after signing.
	ErrBadSignature = errors.New("the provenance signature does not verify")
	// ErrWrongImage: the statement is about another image than the one checked.
	ErrWrongImage = errors.New("the provenance is about another image")
)

// Verifier checks envelopes against one public key.
type Verifier struct {
	ev    *dsse.EnvelopeVerifier
	keyID string
	pub   crypto.PublicKey
}

// LoadVerifier reads a PEM "PUBLIC KEY" file (what /api/v1/provenance/key
// serves), ed25519 or ECDSA P-256.
func LoadVerifier(path string) (*Verifier, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("provenance public key: %w", err)
	}
	v, err := ParseVerifier(data)
	if err != nil {
		return nil, fmt.Errorf("provenance public key %s: %w", path, err)
	}
	return v, nil
}

// ParseVerifier reads a public key as LoadVerifier does, from its PEM text.
func ParseVerifier(pemData []byte) (*Verifier, error) {
	der, pub, err := parsePublicKey(pemData)
	if err != nil {
		return nil, err
	}
	sv, keyID, err := signerVerifier("PUBLIC KEY", der, pub)
	if err != nil {
		return nil, err
	}
	ev, err := dsse.NewEnvelopeVerifier(sv)
	if err != nil {
		return nil, err
	}
	return &Verifier{ev: ev, keyID: keyID, pub: pub}, nil
}

// KeyID returns the key's id, as Signer.KeyID computes it.
func (v *Verifier) KeyID() string { return v.keyID }

// Algorithm returns AlgorithmEd25519 or AlgorithmECDSAP256.
func (v *Verifier) Algorithm() string { return algorithmOf(v.pub) }

// Verify checks that the envelope is signed by the Verifier's key and returns
// the statement it carries. The errors wrap ErrUnsigned, ErrWrongKey or
// ErrBadSignature, or say why the envelope or statement cannot be read.
func (v *Verifier) Verify(ctx context.Context, envelope []byte) (*Statement, error) {
	env, err := decodeEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	if len(env.Signatures) == 0 {
		return nil, fmt.Errorf("%w (the server that wrote it had no provenance.signing_key_file)", ErrUnsigned)
	}
	if _, err := v.ev.Verify(ctx, env); err != nil {
		return nil, v.signatureError(env)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("provenance envelope: %w", err)
	}
	return ParseStatement(payload)
}

// signatureError says why no signature verified: none is by this key (by key
// id), or one is and does not match what it signs.
func (v *Verifier) signatureError(env *dsse.Envelope) error {
	var ids []string
	for _, s := range env.Signatures {
		if s.KeyID == "" || s.KeyID == v.keyID {
			return fmt.Errorf("%w with key %s: the envelope was altered after signing", ErrBadSignature, v.keyID)
		}
		ids = append(ids, s.KeyID)
	}
	return fmt.Errorf("%w: signed by key %s, not by the given key %s", ErrWrongKey, strings.Join(ids, ", "), v.keyID)
}

// ReadUnverified returns the statement in an envelope without checking any
// signature: for showing provenance (trace, the API), never for trusting it.
func ReadUnverified(envelope []byte) (*Statement, error) {
	env, err := decodeEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("provenance envelope: %w", err)
	}
	return ParseStatement(payload)
}

func decodeEnvelope(envelope []byte) (*dsse.Envelope, error) {
	env := &dsse.Envelope{}
	if err := json.Unmarshal(envelope, env); err != nil {
		return nil, fmt.Errorf("provenance envelope: not a DSSE envelope: %w", err)
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("provenance envelope: payload type is %q, want %q", env.PayloadType, PayloadType)
	}
	return env, nil
}

// Image is an image as its cloud reports it now: what `imagegen verify`
// compares with the signed statement.
type Image struct {
	Cloud string            // the server config's cloud name; "" skips comparing it
	ID    string            // the image's id on that cloud
	Tags  map[string]string // its current tags (EC2 tags, Glance properties...)
}

// TagChange is one tag whose current value differs from the signed one.
type TagChange struct {
	Tag     string // e.g. TagCommit
	Signed  string // the value the statement signed (for TagProvenance: the envelope's digest)
	Current string // the value on the image now; "" when Missing
	Missing bool   // the image no longer carries the tag
}

// String says what changed, quoting values: they come from the cloud, and
// whoever edited a tag chose them.
func (c TagChange) String() string {
	if c.Missing {
		return fmt.Sprintf("%s is missing (signed: %q)", c.Tag, c.Signed)
	}
	return fmt.Sprintf("%s changed from %q to %q", c.Tag, c.Signed, c.Current)
}

// Result is what VerifyImage found.
type Result struct {
	Statement *Statement  // the verified statement
	KeyID     string      // the key that signed it
	Digest    string      // the envelope's SHA-256, as TagProvenance should hold it
	Changes   []TagChange // tags that differ from the statement, in a fixed order; empty: none
}

// OK reports whether the image's tags all match the signed statement.
func (r *Result) OK() bool { return len(r.Changes) == 0 }

// Err returns nil when OK, or an error naming every changed tag.
func (r *Result) Err() error {
	if r.OK() {
		return nil
	}
	lines := make([]string, len(r.Changes))
	for i, c := range r.Changes {
		lines[i] = c.String()
	}
	return fmt.Errorf("the image's tags differ from its signed provenance: %s", strings.Join(lines, "; "))
}

// VerifyImage is `imagegen verify` without the fetching: it verifies the
// envelope with v, checks that the statement is about img, and compares the
// statement with img's current tags, TagProvenance included (it must hold the
// envelope's Digest, which binds the image to this very envelope). A bad
// signature or another image is an error; changed tags are in the Result.
func VerifyImage(ctx context.Context, v *Verifier, envelope []byte, img Image) (*Result, error) {
	st, err := v.Verify(ctx, envelope)
	if err != nil {
		return nil, err
	}
	f := st.Facts()
	if f.ImageID != img.ID || (img.Cloud != "" && f.Cloud != img.Cloud) {
		return nil, fmt.Errorf("%w: it names image %q on cloud %q, not %q on %q", ErrWrongImage, f.ImageID, f.Cloud, img.ID, img.Cloud)
	}
	digest := Digest(envelope)
	changes := CompareTags(st, img.Tags)
	if c, ok := compareTag(TagProvenance, digest, img.Tags); !ok {
		changes = append(changes, c)
	}
	return &Result{Statement: st, KeyID: v.keyID, Digest: digest, Changes: changes}, nil
}

// CompareTags returns the tags in tags that differ from the statement's Tags,
// in a fixed order (repo, commit, generator, script digest, base image, build); nil when all match. Tags the statement does not
// sign (imagegen:tested, a user's own) are not compared.
func CompareTags(st *Statement, tags map[string]string) []TagChange {
	signed := st.Tags()
	var changes []TagChange
	for _, tag := range signedTags {
		if c, ok := compareTag(tag, signed[tag], tags); !ok {
			changes = append(changes, c)
		}
	}
	return changes
}

func compareTag(tag, signed string, tags map[string]string) (TagChange, bool) {
	current, present := tags[tag]
	switch {
	case !present:
		return TagChange{Tag: tag, Signed: signed, Missing: true}, false
	case current != signed:
		return TagChange{Tag: tag, Signed: signed, Current: current}, false
	}
	return TagChange{}, true
}

// signedTags are the tags a statement signs, in the order CompareTags reports them.
var signedTags = []string{TagRepo, TagCommit, TagGenerator, TagScriptSHA, TagBaseImage, TagBuild}
