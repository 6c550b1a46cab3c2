package provenance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/provenance"
)

// TestVerifyImage is `imagegen verify` minus the fetching: an untouched image
// passes; an edited or removed tag is reported by name; an envelope about
// another image is refused.
func TestVerifyImage(t *testing.T) {
	ctx := context.Background()
	s := loadSigner(t, newP256(t))
	v := verifier(t, s)
	f := testFacts()
	envelope := sign(t, s, newStatement(t, f))
	image := func(edit func(map[string]string)) provenance.Image {
		tags := imageTags(f, envelope)
		edit(tags)
		return provenance.Image{Cloud: f.Cloud, ID: f.ImageID, Tags: tags}
	}

	t.Run("untouched", func(t *testing.T) {
		r, err := provenance.VerifyImage(ctx, v, envelope, image(func(map[string]string) {}))
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() || r.Err() != nil || r.KeyID != s.KeyID() || r.Digest != provenance.Digest(envelope) || r.Statement.Facts() != newStatement(t, f).Facts() {
			t.Errorf("result %+v, Err %v", r, r.Err())
		}
	})

	const other = "89abcdef0123456789abcdef0123456789abcdef"
	cases := []struct {
		name string
		edit func(map[string]string)
		want []provenance.TagChange
		text string
	}{
		{"commit edited", func(m map[string]string) { m["imagegen:commit"] = other },
			[]provenance.TagChange{{Tag: provenance.TagCommit, Signed: f.Commit, Current: other}},
			`imagegen:commit changed from "` + f.Commit + `" to "` + other + `"`},
		{"commit removed", func(m map[string]string) { delete(m, "imagegen:commit") },
			[]provenance.TagChange{{Tag: provenance.TagCommit, Signed: f.Commit, Missing: true}},
			`imagegen:commit is missing (signed: "` + f.Commit + `")`},
		{"commit emptied", func(m map[string]string) { m["imagegen:commit"] = "" },
			[]provenance.TagChange{{Tag: provenance.TagCommit, Signed: f.Commit}},
			`imagegen:commit changed from "` + f.Commit + `" to ""`},
		{"base image and build edited", func(m map[string]string) {
			m["imagegen:base-image"], m["imagegen:build"] = "ami-0", "fedcba9876543210"
		}, []provenance.TagChange{
			{Tag: provenance.TagBaseImage, Signed: f.BaseImage, Current: "ami-0"},
			{Tag: provenance.TagBuild, Signed: f.BuildID, Current: "fedcba9876543210"},
		}, "imagegen:base-image changed"},
		{"provenance tag names another envelope", func(m map[string]string) { m["imagegen:provenance-sha256"] = strings.Repeat("0", 64) },
			[]provenance.TagChange{{Tag: provenance.TagProvenance, Signed: provenance.Digest(envelope), Current: strings.Repeat("0", 64)}},
			"imagegen:provenance-sha256 changed"},
		{"control characters are quoted", func(m map[string]string) { m["imagegen:generator"] = "dstat\x1b[2J" },
			[]provenance.TagChange{{Tag: provenance.TagGenerator, Signed: f.Generator, Current: "dstat\x1b[2J"}},
			`to "dstat\x1b[2J"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := provenance.VerifyImage(ctx, v, envelope, image(c.edit))
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() || len(r.Changes) != len(c.want) {
				t.Fatalf("changes %v, want %v", r.Changes, c.want)
			}
			for i := range c.want {
				if r.Changes[i] != c.want[i] {
					t.Errorf("change %d = %+v, want %+v", i, r.Changes[i], c.want[i])
				}
			}
			if err := r.Err(); err == nil || !strings.Contains(err.Error(), c.text) {
				t.Errorf("Err() = %v, want it to contain %q", err, c.text)
			}
		})
	}

	t.Run("tags it does not sign are ignored", func(t *testing.T) {
		r, err := provenance.VerifyImage(ctx, v, envelope, image(func(m map[string]string) {
			m["imagegen:tested"] = "false"
			m["owner"] = "someone"
		}))
		if err != nil || !r.OK() {
			t.Errorf("%v %v", r, err)
		}
	})
	t.Run("another image", func(t *testing.T) {
		img := image(func(map[string]string) {})
		img.ID = "ami-0fedcba9876543210"
		_, err := provenance.VerifyImage(ctx, v, envelope, img)
		if !errors.Is(err, provenance.ErrWrongImage) || !strings.Contains(err.Error(), f.ImageID) {
			t.Errorf("err = %v, want ErrWrongImage", err)
		}
	})
	t.Run("same id on another cloud", func(t *testing.T) {
		img := image(func(map[string]string) {})
		img.Cloud = "sierra-openstack"
		if _, err := provenance.VerifyImage(ctx, v, envelope, img); !errors.Is(err, provenance.ErrWrongImage) {
			t.Errorf("err = %v, want ErrWrongImage", err)
		}
	})
	t.Run("signed with another key", func(t *testing.T) {
		_, err := provenance.VerifyImage(ctx, verifier(t, loadSigner(t, newEd25519(t))), envelope, image(func(map[string]string) {}))
		if !errors.Is(err, provenance.ErrWrongKey) {
			t.Errorf("err = %v, want ErrWrongKey", err)
		}
	})
	t.Run("CompareTags alone", func(t *testing.T) {
		st := newStatement(t, f)
		if c := provenance.CompareTags(st, st.Tags()); c != nil {
			t.Errorf("a statement's own tags differ: %v", c)
		}
		if c := provenance.CompareTags(st, nil); len(c) != 6 || !c[0].Missing || c[0].Tag != provenance.TagRepo {
			t.Errorf("no tags: %v", c)
		}
	})
}

func TestLoadSignerErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	pkcs8 := func(key any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	rsaKey := newRSA(t)
	p256 := newP256(t)
	cases := []struct {
		name    string
		data    []byte
		keyType bool // wraps ErrKeyType
		want    string
	}{
		{"RSA, PKCS#8", pkcs8(rsaKey), true, "found an RSA 2048-bit key"},
		{"RSA, PKCS#1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), true, "found an RSA key (PKCS#1)"},
		{"ECDSA P-384", newP384(t).pemData, true, "found an ECDSA P-384 key"},
		{"X25519", pkcs8(newX25519(t)), true, "found an ECDH X25519 key"},
		{"SEC 1 EC key", sec1(t, p256), false, `SEC 1 "EC PRIVATE KEY"; imagegen reads PKCS#8: openssl pkey`},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), false, "the key is encrypted"},
		{"OpenSSH", pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte{1}}), false, "OpenSSH's format"},
		{"public key", publicPEM(t, loadSigner(t, p256)), false, "this is a public key"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), false, `PEM block is a "CERTIFICATE"`},
		{"not PEM", []byte("ssh-ed25519 AAAA"), false, "no PEM block found"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), false, "not a PKCS#8 private key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := write(strings.ReplaceAll(c.name, " ", "_")+".pem", c.data)
			s, err := provenance.LoadSigner(file)
			if err == nil {
				t.Fatalf("loaded %v", s)
			}
			if errors.Is(err, provenance.ErrKeyType) != c.keyType || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), file) {
				t.Errorf("err = %v, want it to name %s and contain %q (ErrKeyType: %v)", err, file, c.want, c.keyType)
			}
			if c.keyType && !strings.Contains(err.Error(), "want ed25519 or ECDSA P-256") {
				t.Errorf("err = %v, want it to say which types work", err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "nope.pem")
		_, err := provenance.LoadSigner(missing)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Errorf("err = %v", err)
		}
		if _, err := provenance.LoadVerifier(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadVerifier: err = %v", err)
		}
	})
}

func TestParseVerifierErrors(t *testing.T) {
	rsaDER, err := x509.MarshalPKIXPublicKey(&newRSA(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		data    []byte
		keyType bool
		want    string
	}{
		{"RSA", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER}), true, "found an RSA 2048-bit key"},
		{"ECDSA P-384", pkixPEM(t, newP384(t)), true, "found an ECDSA P-384 key"},
		{"private key", newEd25519(t).pemData, false, `PEM block is a "PRIVATE KEY", want a "PUBLIC KEY"`},
		{"not PEM", []byte("hello"), false, "no PEM block found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := provenance.ParseVerifier(c.data)
			if err == nil || errors.Is(err, provenance.ErrKeyType) != c.keyType || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want %q (ErrKeyType: %v)", err, c.want, c.keyType)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "pub.pem")
	s := loadSigner(t, newEd25519(t))
	if err := os.WriteFile(file, publicPEM(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, err := provenance.LoadVerifier(file); err != nil || v.KeyID() != s.KeyID() {
		t.Errorf("LoadVerifier: %v", err)
	}
}

// sec1 encodes an ECDSA key as `openssl ecparam -genkey` writes it.
func sec1(t *testing.T, kp keyPair) []byte {
	der, err := x509.MarshalECPrivateKey(kp.private.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func pkixPEM(t *testing.T, kp keyPair) []byte {
	der, err := x509.MarshalPKIXPublicKey(kp.private.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestKeyIDs(t *testing.T) {
	a, b := loadSigner(t, newEd25519(t)), loadSigner(t, newEd25519(t))
	if a.KeyID() == b.KeyID() {
		t.Error("two keys, one id")
	}
	// The id depends on the public key only: the same key read again, or its
	// public half, has the same id.
	kp := newP256(t)
	s1, err := provenance.ParseSigner(kp.pemData)
	if err != nil {
		t.Fatal(err)
	}
	if s1.KeyID() != loadSigner(t, kp).KeyID() || s1.KeyID() != verifier(t, s1).KeyID() {
		t.Error("the key id changed between loads")
	}
}
