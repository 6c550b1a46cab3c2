// Package provenance writes, signs and verifies the provenance of the images
// imagegen builds: an in-toto Statement (v1) whose predicate is SLSA Provenance v1
// (Statement, NewStatement), signed in a DSSE envelope (Signer) with an ed25519 or
// ECDSA P-256 key, and checked against a public key and an image's current tags
// (Verifier, VerifyImage) — what `imagegen verify` reports.
//
// It owns the statement format (the build type, see BuildType), the envelope, the
// keys and their ids, and the comparison of a signed statement with tags. It must
// not know clouds, Redis or GitHub: callers hand it plain values (Facts, Image,
// bytes) and store, serve and tag what it returns. The in-toto and DSSE encodings
// come from the ecosystem's libraries (github.com/in-toto/attestation,
// github.com/secure-systems-lab/go-securesystemslib), not from code of ours, so
// any verifier built on them, or on the published specifications, can check what
// imagegen signs.
package provenance
