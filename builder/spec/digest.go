package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
)

// digestVersion starts every digest's input, so a future change of what is
// hashed cannot collide with today's digests.
const digestVersion = "imagegen-generator-v1"

// ComputeDigest returns the spec's provenance digest (the imagegen:script-sha256
// tag): the hex sha256 of a canonical encoding of what decides an image's content,
// and nothing else. Comments, key order, quoting, YAML layout, branches and whether
// the script was inline or in a file do not change it; CRLF line ends in the
// script count as LF.
//
// The encoding is a sequence of netstrings ("<decimal byte length>:<bytes>,"),
// which cannot be ambiguous whatever the values hold:
//
//	"imagegen-generator-v1", name, script, number of clouds (decimal),
//	then for each cloud in name order: name, image, ssh_user, size
//
// where image is the id as written, or for a filter its canonical form
// ("filter:" and the filter's JSON, keys sorted): the id a filter finds
// is recorded, and tagged, as the image's base image.
//
// e.g. in sh: printf '21:imagegen-generator-v1,5:dstat,...' | sha256sum
func ComputeDigest(s *Spec) string {
	h := sha256.New()
	put := func(v string) { writeNetstring(h, v) }
	put(digestVersion)
	put(s.Name)
	put(strings.ReplaceAll(s.Script, "\r\n", "\n"))
	names := s.CloudNames()
	put(strconv.Itoa(len(names)))
	for _, n := range names {
		c := s.Clouds[n]
		put(n)
		put(c.imageKey())
		put(c.SSHUser)
		put(c.Size)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeNetstring(h hash.Hash, v string) {
	h.Write([]byte(strconv.Itoa(len(v))))
	h.Write([]byte{':'})
	h.Write([]byte(v))
	h.Write([]byte{','})
}
