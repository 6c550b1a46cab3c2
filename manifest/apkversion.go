package manifest

import "strings"

// Alpine's version order, as apk-tools 2.14 and 3 define it (no maintained Go
// module implements the current rules, with ~commit hashes and leading-zero
// string comparison, so it is written here from the grammar):
//
//	digit{.digit}...{letter}{_suffix{digits}}...{~hexhash}{-rN}
//
// where suffix is one of alpha, beta, pre, rc (before the release) or cvs,
// svn, git, hg, p (after it). Versions are compared token by token; a
// number after a dot with a leading zero compares as a string (Gentoo's
// rule); when one version runs out of tokens first, it is older unless the
// other one goes on with a pre-release suffix.

// apk token kinds, in the order the grammar allows them.
const (
	apkInitialDigit = iota
	apkDigit
	apkLetter
	apkSuffix
	apkSuffixNo
	apkCommitHash
	apkRevisionNo
	apkEnd
	apkInvalid
)

// apk suffix values: pre-release ones below apkSuffixNone.
var apkSuffixes = map[string]int{
	"alpha": 1, "beta": 2, "pre": 3, "rc": 4,
	"cvs": 6, "svn": 7, "git": 8, "hg": 9, "p": 10,
}

const apkSuffixNone = 5

type apkTokenizer struct {
	rest   string
	kind   int
	suffix int
	num    uint64
	val    string
}

// digits reads a number into t; none makes the token invalid.
func (t *apkTokenizer) digits() {
	i := 0
	var n uint64
	for i < len(t.rest) && t.rest[i] >= '0' && t.rest[i] <= '9' {
		if n < 1<<60 { // saturate: a version's numbers are not this large
			n = n*10 + uint64(t.rest[i]-'0')
		}
		i++
	}
	t.val, t.num, t.rest = t.rest[:i], n, t.rest[i:]
	if i == 0 {
		t.kind = apkInvalid
	}
}

func (t *apkTokenizer) first(s string) {
	t.rest, t.kind = s, apkInitialDigit
	t.digits()
}

func (t *apkTokenizer) next() {
	if t.rest == "" {
		t.kind = apkEnd
		return
	}
	c := t.rest[0]
	switch {
	case c >= 'a' && c <= 'z':
		if t.kind > apkDigit {
			t.kind = apkInvalid
			return
		}
		t.val, t.rest, t.kind = t.rest[:1], t.rest[1:], apkLetter
	case c == '.' || c >= '0' && c <= '9':
		if c == '.' {
			if t.kind > apkDigit {
				t.kind = apkInvalid
				return
			}
			t.rest = t.rest[1:]
		}
		switch t.kind {
		case apkInitialDigit, apkDigit:
			t.kind = apkDigit
		case apkSuffix:
			t.kind = apkSuffixNo
		default:
			t.kind = apkInvalid
			return
		}
		t.digits()
	case c == '_':
		if t.kind > apkSuffixNo {
			t.kind = apkInvalid
			return
		}
		t.rest = t.rest[1:]
		i := 0
		for i < len(t.rest) && t.rest[i] >= 'a' && t.rest[i] <= 'z' {
			i++
		}
		t.val, t.rest = t.rest[:i], t.rest[i:]
		t.suffix = apkSuffixes[t.val]
		if t.suffix == 0 {
			t.kind = apkInvalid
			return
		}
		t.kind = apkSuffix
	case c == '~':
		if t.kind >= apkCommitHash {
			t.kind = apkInvalid
			return
		}
		t.rest = t.rest[1:]
		i := 0
		for i < len(t.rest) && (t.rest[i] >= '0' && t.rest[i] <= '9' || t.rest[i] >= 'a' && t.rest[i] <= 'f') {
			i++
		}
		if i == 0 {
			t.kind = apkInvalid
			return
		}
		t.val, t.rest, t.kind = t.rest[:i], t.rest[i:], apkCommitHash
	case c == '-':
		if t.kind >= apkRevisionNo || !strings.HasPrefix(t.rest, "-r") {
			t.kind = apkInvalid
			return
		}
		t.rest, t.kind = t.rest[2:], apkRevisionNo
		t.digits()
	default:
		t.kind = apkInvalid
	}
}

// cmpToken compares two tokens of the same kind.
func cmpToken(a, b *apkTokenizer) int {
	var x, y uint64
	switch a.kind {
	case apkDigit:
		if a.val[0] == '0' || b.val[0] == '0' {
			return strings.Compare(a.val, b.val) // a leading zero: as strings
		}
		x, y = a.num, b.num
	case apkInitialDigit, apkSuffixNo, apkRevisionNo:
		x, y = a.num, b.num
	case apkLetter:
		x, y = uint64(a.val[0]), uint64(b.val[0])
	case apkSuffix:
		x, y = uint64(a.suffix), uint64(b.suffix)
	default:
		return strings.Compare(a.val, b.val)
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// ValidAPK says whether apk accepts v as a version.
func ValidAPK(v string) bool {
	var t apkTokenizer
	for t.first(v); t.kind < apkEnd; t.next() {
	}
	return t.kind == apkEnd
}

// CompareAPK orders two Alpine versions as apk does: -1, 0 or +1. Invalid
// versions are compared up to their first invalid token, as apk does too.
func CompareAPK(a, b string) int {
	var ta, tb apkTokenizer
	ta.first(a)
	tb.first(b)
	for ta.kind == tb.kind && ta.kind < apkEnd {
		if r := cmpToken(&ta, &tb); r != 0 {
			return r
		}
		ta.next()
		tb.next()
	}
	switch {
	case ta.kind == tb.kind:
		return 0
	case ta.kind == apkSuffix && ta.suffix < apkSuffixNone:
		return -1 // a goes on with a pre-release: older
	case tb.kind == apkSuffix && tb.suffix < apkSuffixNone:
		return 1
	case ta.kind > tb.kind:
		return -1 // a ended (or broke) first
	case tb.kind > ta.kind:
		return 1
	}
	return 0
}
