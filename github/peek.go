package github

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
)

// Peek is what the webhook answers a delivery by.
type Peek struct {
	Action  string // check_run, check_suite: the action ("rerequested" is the one acted on)
	Ref     string // push: the ref pushed (refs/heads/<branch> for a branch)
	After   string // push: the commit the ref points to now
	Repo    string // push: the repository's full name, owner/name
	Deleted bool   // push: the ref was deleted
}

// PeekDelivery reads from the payload of a delivery of event what the
// webhook's answer depends on, without decoding a push whole: it is the hot
// path of ingest (docs/BENCHMARKS.md, section 1), and the worker decodes
// the delivery anyway (ParseDelivery).
//
// It reads:
//   - of any event, whether payload is exactly one JSON value (its error
//     when not): gjson's validator, or encoding/json's for a payload that
//     could nest deeper than maxNesting;
//   - of a push, the top-level object's ref, after, deleted and
//     repository.full_name (keys as GitHub writes them: encoding/json
//     would also match other cases), skipping over the rest;
//   - of check_run and check_suite (rare), everything ParseDelivery reads,
//     decoded by the same code.
//
// It guarantees, which TestPeekDeliveryMatchesParse checks on every
// @octokit/webhooks-examples payload: a payload encoding/json takes is
// taken; the fields read are the values go-github's PushEvent (push) and
// ParseDelivery (check_run, check_suite) decode; a field of another type
// than theirs is an error, as it is for them. The rest of a push is not
// looked at: a payload that fails ParseDelivery on another field is
// accepted here and fails in the worker.
func PeekDelivery(event string, payload []byte) (Peek, error) {
	if err := validJSON(payload); err != nil {
		return Peek{}, err
	}
	switch event {
	case "push":
		return peekPush(payload)
	case "check_run":
		ev, err := decodeAction[checkRunEvent](payload, event)
		if err != nil {
			return Peek{}, err
		}
		return Peek{Action: ev.Action}, nil
	case "check_suite":
		ev, err := decodeAction[checkSuiteEvent](payload, event)
		if err != nil {
			return Peek{}, err
		}
		return Peek{Action: ev.Action}, nil
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

// peekPush reads the four fields of a valid JSON push the answer depends on,
// with the types go-github's PushEvent gives them. gjson finds each,
// skipping over the values before it without decoding them, and copies only
// what it finds; the repository object is copied (to check its type) only
// when it has no full_name, which a push GitHub sends always has.
func peekPush(payload []byte) (Peek, error) {
	var p Peek
	if b := bytes.TrimLeft(payload, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return p, errors.New("not a JSON object")
	}
	f := gjson.GetManyBytes(payload, "ref", "after", "deleted", "repository.full_name")
	var errs []error
	str := func(name string, v gjson.Result, to *string) {
		switch v.Type {
		case gjson.String:
			*to = v.Str
		case gjson.Null: // or absent
		default:
			errs = append(errs, fmt.Errorf("%s: not a string", name))
		}
	}
	str("ref", f[0], &p.Ref)
	str("after", f[1], &p.After)
	switch f[2].Type {
	case gjson.True:
		p.Deleted = true
	case gjson.False, gjson.Null:
	default:
		errs = append(errs, errors.New("deleted: not a boolean"))
	}
	if f[3].Exists() { // then repository is an object
		str("repository.full_name", f[3], &p.Repo)
	} else if repo := gjson.GetBytes(payload, "repository"); repo.Type != gjson.Null && !repo.IsObject() {
		errs = append(errs, errors.New("repository: not an object"))
	}
	if len(errs) > 0 {
		return Peek{}, errs[0]
	}
	return p, nil
}
