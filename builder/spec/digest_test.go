package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"testing/fstest"
)

func TestDigest(t *testing.T) {
	base := "name: dstat\nscript: |\n  apt-get update\n  apt-get install -y dstat\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"
	repo := fstest.MapFS{
		"s.sh":      {Data: []byte("apt-get update\napt-get install -y dstat\n")},
		"s-crlf.sh": {Data: []byte("apt-get update\r\napt-get install -y dstat\r\n")},
	}
	digest := func(t *testing.T, src string) string {
		t.Helper()
		s, err := ParseBytes(repo, "x.yaml", []byte(src), testOpts)
		if err != nil {
			t.Fatalf("ParseBytes: %v", err)
		}
		return s.Digest
	}
	want := digest(t, base)
	same := []struct{ name, src string }{
		{"reordered and commented", "# a comment\nclouds:\n  ec2:\n    ssh_user: ubuntu   # trailing\n    image: ami-1\n  hotel:\n    size: m1.small\n    image: img-1\n    ssh_user: ubuntu\nscript: \"apt-get update\\napt-get install -y dstat\\n\"\nname: 'dstat'\n"},
		{"branches do not count", base + "branches: [main, dev]\n"},
		{"script from a file", "name: dstat\nscript_file: s.sh\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"},
		{"CRLF script file", "name: dstat\nscript_file: s-crlf.sh\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"},
	}
	for _, tt := range same {
		t.Run("same/"+tt.name, func(t *testing.T) {
			if got := digest(t, tt.src); got != want {
				t.Errorf("digest = %s, want %s", got, want)
			}
		})
	}
	differ := []struct{ name, src string }{
		{"script changed", "name: dstat\nscript: |\n  apt-get update\n  apt-get install -y dstat htop\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"},
		{"name changed", "name: dstat2\nscript: |\n  apt-get update\n  apt-get install -y dstat\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"},
		{"image changed", "name: dstat\nscript: |\n  apt-get update\n  apt-get install -y dstat\nclouds:\n  hotel: {image: img-2, ssh_user: ubuntu, size: m1.small}\n  ec2: {image: ami-1, ssh_user: ubuntu}\n"},
		{"size moved to another cloud", "name: dstat\nscript: |\n  apt-get update\n  apt-get install -y dstat\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu}\n  ec2: {image: ami-1, ssh_user: ubuntu, size: m1.small}\n"},
		{"cloud dropped", "name: dstat\nscript: |\n  apt-get update\n  apt-get install -y dstat\nclouds:\n  hotel: {image: img-1, ssh_user: ubuntu, size: m1.small}\n"},
	}
	for _, tt := range differ {
		t.Run("differs/"+tt.name, func(t *testing.T) {
			if got := digest(t, tt.src); got == want {
				t.Errorf("digest = %s, the same as the base spec's", got)
			}
		})
	}
}

// TestDigestEncoding pins the documented encoding, so the digest of existing
// images stays reproducible outside imagegen.
func TestDigestEncoding(t *testing.T) {
	s := &Spec{Name: "dstat", Script: "echo hi\r\n", Clouds: map[string]CloudSpec{
		"z": {Image: "i2", SSHUser: "u"},
		"a": {Image: "i1", SSHUser: "ubuntu", Size: "m1"},
	}}
	enc := "21:imagegen-generator-v1,5:dstat,8:echo hi\n,1:2," + "1:a,2:i1,6:ubuntu,2:m1," + "1:z,2:i2,1:u,0:,"
	sum := sha256.Sum256([]byte(enc))
	if got, want := ComputeDigest(s), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("ComputeDigest = %s, want sha256(%q) = %s", got, enc, want)
	}
}
