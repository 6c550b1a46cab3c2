package github

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/imagegen/imagegen/builds"
)

// Peek is what the webhook answers a delivery by, and what it stores of it.
type Peek struct {
	// Action is a check_run's or check_suite's action ("rerequested" is the
	// one acted on).
	Action string
	// Event is what the delivery asks of imagegen, as ParseDelivery makes
	// it: a builds.Push for every push (a branch deletion or a tag's too),
	// a re-run, or nil.
	Event builds.Event
}

// PeekDelivery reads from the payload of a delivery of event what the
// webhook's answer depends on and what the worker needs, without decoding a
// push whole: it is the hot path of ingest (docs/BENCHMARKS.md, section 1).
//
// It reads:
//   - of any event, whether payload is exactly one JSON value (its error
//     when not): gjson's validator, or encoding/json's for a payload that
//     could nest deeper than maxNesting;
//   - of a push, the fields pushOf keeps (ref, before, after, created,
//     deleted, forced, repository.full_name and .default_branch,
//     installation.id, and the files of the commits), found by gjson,
//     skipping over the rest; a payload whose keys encoding/json would
//     match otherwise than byte for byte (another case, escapes, a key
//     given twice) is decoded by encoding/json instead, into pushShape;
//   - of check_run and check_suite (rare), everything ParseDelivery reads,
//     decoded by the same code.
//
// It guarantees, which TestPeekDeliveryMatchesParse checks on every
// @octokit/webhooks-examples payload, TestPeekPushTypes with every JSON type
// in every field read, and FuzzPeekPush on whatever the fuzzer makes: a
// payload encoding/json takes is taken unless a field read has another type
// than go-github gives it, which is refused as go-github refuses it; Event
// is what ParseDelivery returns. The rest of a push is not looked at: a
// field imagegen does not use may have any type.
func PeekDelivery(event string, payload []byte) (Peek, error) {
	if err := validJSON(payload); err != nil {
		return Peek{}, err
	}
	switch event {
	case "push":
		ev, err := peekPush(payload)
		return Peek{Event: ev}, err
	case "check_run":
		ev, err := decodeAction[checkRunEvent](payload, event)
		if err != nil {
			return Peek{}, err
		}
		return Peek{Action: ev.Action, Event: ev.event()}, nil
	case "check_suite":
		ev, err := decodeAction[checkSuiteEvent](payload, event)
		if err != nil {
			return Peek{}, err
		}
		return Peek{Action: ev.Action, Event: ev.event()}, nil
	}
	return Peek{}, nil
}

// maxNesting bounds how deeply nested a payload may be; encoding/json, which
// the worker decodes it with, has the same limit.
const maxNesting = 10000

// validJSON checks that payload is one JSON value. gjson's validator is
// several times faster than encoding/json's but recursive, so a payload that
// could nest deeper than maxNesting (one that has that many brackets at all:
// bytes.Count is cheap) goes to encoding/json's, which is not; 25 MB of "["
// would otherwise overflow the goroutine's stack and crash the server.
func validJSON(payload []byte) error {
	if bytes.Count(payload, []byte{'['})+bytes.Count(payload, []byte{'{'}) > maxNesting {
		var v json.RawMessage
		return json.Unmarshal(payload, &v)
	}
	if !gjson.ValidBytes(payload) {
		return errors.New("invalid JSON")
	}
	return nil
}

// peekPush makes of a valid JSON push what ParseDelivery makes of it.
func peekPush(payload []byte) (builds.Event, error) {
	b := bytes.TrimLeft(payload, " \t\r\n")
	switch {
	case len(b) > 0 && b[0] == 'n':
		// null: go-github's ParseWebHook returns no event, and no error.
		return nil, nil
	case len(b) == 0 || b[0] != '{':
		return nil, errors.New("not a JSON object")
	}
	// The scanner reads a string; the payload stays unchanged while it is
	// read, and what is kept of it is copied (readString).
	p, err := readPush(unsafe.String(unsafe.SliceData(payload), len(payload)))
	if errors.Is(err, errUnusual) {
		return decodePush(payload)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// errUnusual: the payload has a key that encoding/json may match to a field
// read otherwise than byte for byte, or a field read twice; readPush leaves
// it to encoding/json.
var errUnusual = errors.New("unusual keys")

// The fields of a push readPush reads, at each level, by their JSON names.
var (
	pushFields   = []string{"ref", "before", "after", "created", "deleted", "forced", "repository", "installation", "commits"}
	repoFields   = []string{"full_name", "default_branch"}
	instFields   = []string{"id"}
	commitFields = []string{"added", "removed", "modified"}
)

// readPush reads a push object (valid JSON) as encoding/json decodes it into
// go-github's PushEvent, for the fields pushOf uses (see pushShape), and
// makes of them what pushOf makes, in one pass that skips over the rest. It
// returns errUnusual for what it does not decode exactly as encoding/json
// does (fieldOf).
func readPush(s string) (builds.Push, error) {
	var p builds.Push
	var ch changedFiles
	commits := 0
	sc := &scanner{s: s}
	sc.ws()
	err := sc.fields(pushFields, func(f int) error {
		var err error
		switch f {
		case 0:
			p.Ref, err = sc.readString("ref")
		case 1:
			p.Before, err = sc.readString("before")
		case 2:
			p.After, err = sc.readString("after")
		case 3:
			p.Created, err = sc.readBool("created")
		case 4:
			p.Deleted, err = sc.readBool("deleted")
		case 5:
			p.Forced, err = sc.readBool("forced")
		case 6:
			err = sc.readObject("repository", repoFields, func(f int) error {
				var err error
				if f == 0 {
					p.Repo, err = sc.readString("repository.full_name")
				} else {
					p.DefaultBranch, err = sc.readString("repository.default_branch")
				}
				return err
			})
		case 7:
			err = sc.readObject("installation", instFields, func(int) error {
				var err error
				p.Installation, err = sc.readInt64("installation.id")
				return err
			})
		case 8:
			commits, err = sc.readCommits(&ch)
		}
		return err
	})
	if err != nil {
		return builds.Push{}, err
	}
	ch.finish(&p, commits)
	return p, nil
}

// readCommits adds the files of a push's commits to ch, added, removed and
// modified of each commit in turn as pushOf adds them, and returns how many
// commits the push lists (null ones included, as go-github keeps them).
func (sc *scanner) readCommits(ch *changedFiles) (int, error) {
	switch sc.peek() {
	case 'n':
		sc.skip()
		return 0, nil
	case '[':
	default:
		return 0, errors.New("commits: not an array")
	}
	n := 0
	err := sc.elements(func(i int) error {
		n++
		switch sc.peek() {
		case 'n':
			sc.skip()
			return nil
		case '{':
		default:
			return fmt.Errorf("commits[%d]: not an object", i)
		}
		var files [3]string // each list's JSON, read once the commit is
		err := sc.fields(commitFields, func(f int) error {
			files[f] = sc.skip()
			return nil
		})
		for f := 0; err == nil && f < len(files); f++ {
			if files[f] != "" {
				fs := &scanner{s: files[f]}
				if err = fs.readFiles(ch); err != nil {
					err = fmt.Errorf("commits[%d].%s%w", i, commitFields[f], err)
				}
			}
		}
		return err
	})
	return n, err
}

// readFiles adds a commit's list of files to ch: an array of strings (a
// null in it is "", as encoding/json leaves it), or null. Its error goes
// after the list's name.
func (sc *scanner) readFiles(ch *changedFiles) error {
	switch sc.peek() {
	case 'n':
		return nil
	case '[':
	default:
		return errors.New(": not an array")
	}
	return sc.elements(func(i int) error {
		f, err := sc.readString("")
		if err != nil {
			return fmt.Errorf("[%d]%w", i, err)
		}
		ch.addOne(f)
		return nil
	})
}

// fieldOf returns the index in names of the key raw (quoted, as in the
// JSON), -1 for none, and whether encoding/json could match the key to one
// of names otherwise than byte for byte: it unescapes keys, replaces invalid
// UTF-8, and matches a key equal to a field's name but for case (Unicode's
// simple folding: "ſ" is "s") when no key is that name exactly. A key with
// escapes or non-ASCII bytes, or one equal to a name but for ASCII case, is
// such a key.
func fieldOf(raw string, names []string) (int, bool) {
	if needsDecoding(raw) {
		return -1, true
	}
	k := raw[1 : len(raw)-1]
	for i, n := range names {
		if k == n {
			return i, false
		}
	}
	for _, n := range names {
		if len(k) == len(n) && strings.EqualFold(k, n) {
			return -1, true
		}
	}
	return -1, false
}

// needsDecoding reports whether the JSON string raw (quoted) has an escape
// or a byte outside ASCII: what encoding/json decodes (unescaping,
// replacing invalid UTF-8) into other bytes than the raw ones.
func needsDecoding(raw string) bool {
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c == '\\' || c >= 0x80 {
			return true
		}
	}
	return false
}

// scanner walks a JSON text that gjson has validated, without decoding what
// it skips, never recursing: skipping a value counts brackets. Its reads
// decode a value as encoding/json decodes it into the Go type named.
type scanner struct {
	s string
	i int
}

// ws skips whitespace and the separators ',' and ':' (the text is valid, so
// where they are is known).
func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r', ',', ':':
			sc.i++
		default:
			return
		}
	}
}

// peek returns the first byte of the value at the scanner (0 at the end).
func (sc *scanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

// skip skips the value at the scanner and returns its JSON.
func (sc *scanner) skip() string {
	start := sc.i
	switch sc.peek() {
	case '"':
		sc.skipString()
	case '{', '[':
		depth := 0
		for sc.i < len(sc.s) {
			switch sc.s[sc.i] {
			case '"':
				sc.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			sc.i++
			if depth == 0 {
				break
			}
		}
	default: // a number or a literal
		for sc.i < len(sc.s) {
			switch sc.s[sc.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
			default:
				sc.i++
				continue
			}
			break
		}
	}
	raw := sc.s[start:sc.i]
	sc.ws()
	return raw
}

// skipString moves past the string at the scanner.
func (sc *scanner) skipString() {
	i := sc.i + 1
	for {
		j := strings.IndexByte(sc.s[i:], '"')
		if j < 0 {
			sc.i = len(sc.s)
			return
		}
		i += j
		// The quote ends the string unless an odd number of backslashes
		// comes before it.
		n := 0
		for k := i - 1; k > sc.i && sc.s[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			sc.i = i
			return
		}
	}
}

// fields calls fn for each key of the object at the scanner that is one of
// names (with its index, the scanner at its value, which fn reads), once
// each, and skips the other values. A key encoding/json might match to one
// of names otherwise than byte for byte, or one of names given twice, ends
// it with errUnusual.
func (sc *scanner) fields(names []string, fn func(int) error) error {
	sc.i++ // '{'
	sc.ws()
	var seen uint32
	for sc.peek() == '"' {
		start := sc.i
		sc.skipString()
		f, unusual := fieldOf(sc.s[start:sc.i], names)
		sc.ws()
		switch {
		case unusual || (f >= 0 && seen&(1<<f) != 0):
			return errUnusual
		case f >= 0:
			seen |= 1 << f
			if err := fn(f); err != nil {
				return err
			}
			sc.ws()
		default:
			sc.skip()
		}
	}
	if sc.peek() != '}' {
		return errors.New("invalid JSON")
	}
	sc.i++
	return nil
}

// elements calls fn for each element of the array at the scanner, the
// scanner at the element, which fn reads.
func (sc *scanner) elements(fn func(int) error) error {
	sc.i++ // '['
	sc.ws()
	for i := 0; sc.peek() != ']'; i++ {
		if sc.peek() == 0 {
			return errors.New("invalid JSON")
		}
		if err := fn(i); err != nil {
			return err
		}
		sc.ws()
	}
	sc.i++
	return nil
}

// readString reads a value into a *string: a string, or null ("").
func (sc *scanner) readString(name string) (string, error) {
	switch sc.peek() {
	case '"':
		raw := sc.skip()
		if needsDecoding(raw) {
			var s string
			err := json.Unmarshal([]byte(raw), &s)
			return s, err
		}
		return strings.Clone(raw[1 : len(raw)-1]), nil // raw is part of the payload
	case 'n':
		sc.skip()
		return "", nil
	}
	sc.skip()
	return "", fmt.Errorf("%s: not a string", name)
}

// readBool reads a value into a *bool: true, false or null.
func (sc *scanner) readBool(name string) (bool, error) {
	switch sc.skip() {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, fmt.Errorf("%s: not a boolean", name)
}

// readInt64 reads a value into an *int64: a number literal that
// strconv.ParseInt takes (not 1.0, not 1e3), as encoding/json, or null.
func (sc *scanner) readInt64(name string) (int64, error) {
	raw := sc.skip()
	if raw == "null" {
		return 0, nil
	}
	if c := raw[0]; c == '-' || c >= '0' && c <= '9' {
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: not a 64-bit integer", name)
}

// readObject reads a value into a pointer to a struct: an object, whose
// fields among names go to fn, or null.
func (sc *scanner) readObject(name string, names []string, fn func(int) error) error {
	switch sc.peek() {
	case '{':
		return sc.fields(names, fn)
	case 'n':
		sc.skip()
		return nil
	}
	sc.skip()
	return fmt.Errorf("%s: not an object", name)
}

// pushShape is go-github's PushEvent cut to the fields pushOf reads, with
// their Go types: encoding/json decodes these fields of a payload into it as
// it decodes them into a PushEvent (a key in another case, a key given
// twice, objects merged, null commits), and ignores the rest.
type pushShape struct {
	Ref     *string `json:"ref"`
	Before  *string `json:"before"`
	After   *string `json:"after"`
	Created *bool   `json:"created"`
	Deleted *bool   `json:"deleted"`
	Forced  *bool   `json:"forced"`
	Repo    *struct {
		FullName      *string `json:"full_name"`
		DefaultBranch *string `json:"default_branch"`
	} `json:"repository"`
	Installation *struct {
		ID *int64 `json:"id"`
	} `json:"installation"`
	Commits []*struct {
		Added    []string `json:"added"`
		Removed  []string `json:"removed"`
		Modified []string `json:"modified"`
	} `json:"commits"`
}

// decodePush makes of a push object what pushOf makes, decoding it with
// encoding/json: for payloads readPush leaves to it.
func decodePush(payload []byte) (builds.Event, error) {
	var s pushShape
	if err := json.Unmarshal(payload, &s); err != nil {
		return nil, err
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	flag := func(p *bool) bool { return p != nil && *p }
	p := builds.Push{Ref: str(s.Ref), Before: str(s.Before), After: str(s.After),
		Created: flag(s.Created), Deleted: flag(s.Deleted), Forced: flag(s.Forced)}
	if s.Repo != nil {
		p.Repo, p.DefaultBranch = str(s.Repo.FullName), str(s.Repo.DefaultBranch)
	}
	if s.Installation != nil && s.Installation.ID != nil {
		p.Installation = *s.Installation.ID
	}
	var ch changedFiles
	for _, c := range s.Commits {
		if c != nil {
			ch.add(c.Added)
			ch.add(c.Removed)
			ch.add(c.Modified)
		}
	}
	ch.finish(&p, len(s.Commits))
	return p, nil
}
