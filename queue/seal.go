package queue

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/imagegen/imagegen/internal/secret"
)

// Sealer encrypts passwords for the trip through Redis with AES-256-GCM. The
// additional data binds a sealed password to its build and cloud, so it cannot
// be replayed into another task.
type Sealer struct {
	aead cipher.AEAD
}

// KeySize is the length of an encryption key in bytes.
const KeySize = 32

// NewSealer makes a Sealer from the config's encryption_key (32 bytes in hex or
// base64). An empty key generates a random one: fine for serve with its own
// worker, but a worker in another process cannot open what it seals, so a
// serve --no-worker + worker split needs encryption_key set.
func NewSealer(key secret.String) (*Sealer, error) {
	var raw []byte
	if key.IsZero() {
		raw = make([]byte, KeySize)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("generate encryption key: %w", err)
		}
	} else {
		var err error
		if raw, err = decodeKey(strings.TrimSpace(key.Reveal())); err != nil {
			return nil, err
		}
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("encryption_key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

func decodeKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, nil
		}
	}
	return nil, errors.New("encryption_key must be 32 bytes in hex (64 characters) or base64 (e.g. openssl rand -hex 32)")
}

// Seal encrypts p for the given context (build and cloud).
func (s *Sealer) Seal(p secret.String, context string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, []byte(p.Reveal()), []byte(context)), nil
}

// Open decrypts what Seal made for the same context.
func (s *Sealer) Open(sealed []byte, context string) (secret.String, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return secret.String{}, errors.New("sealed password too short")
	}
	p, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(context))
	if err != nil {
		// Most often a worker started with another key (or none): say so.
		return secret.String{}, fmt.Errorf("open sealed password (is encryption_key the same on every serve and worker?): %w", err)
	}
	return secret.New(string(p)), nil
}
