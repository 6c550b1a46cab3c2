package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/google/go-github/v60/github"
	"github.com/labstack/echo/v4"
	"github.com/tidwall/gjson"

	"github.com/imagegen/imagegen/queue"
)

// Answers that never change, encoded once: echo's c.JSON would encode a map
// for every delivery.
var (
	answerAccepted  = jsonMessage("accepted")
	answerDuplicate = jsonMessage("already received")
	answerPong      = jsonMessage("pong")
)

func jsonMessage(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return append(b, '\n')
}

// webhook answers a GitHub delivery. It only checks it and makes it durable (a
// task keyed by the delivery id); all GitHub API calls happen in the worker,
// so the answer comes well within GitHub's 10 s.
//
// It is the hot path of ingest (docs/BENCHMARKS.md, section 1): the body is
// read once into a buffer of its announced size, its signature checked with a
// pooled HMAC, its JSON validated and only the four fields the answer depends
// on read (gjson, without decoding the rest), and the task's payload embeds
// the body as it came. The worker parses the whole event (HandleDelivery).
func (s *Server) webhook(c echo.Context) error {
	start := time.Now()
	req := c.Request()
	event := req.Header.Get(github.EventTypeHeader)
	delivery := req.Header.Get(github.DeliveryIDHeader)
	// One log line per delivery, with what its answer was.
	answer := func(code int, o, msg string, blob []byte) error {
		s.metrics.deliveries.WithLabelValues(eventLabel(event), o).Inc()
		s.log.LogAttrs(req.Context(), slog.LevelInfo, "delivery answered",
			slog.String("delivery", delivery), slog.String("event", event),
			slog.String("outcome", o), slog.Int("status", code), slog.String("reason", msg),
			slog.Int64("duration_ms", time.Since(start).Milliseconds()))
		if blob != nil {
			return c.JSONBlob(code, blob)
		}
		return c.JSON(code, map[string]string{"message": msg})
	}
	outcome := func(code int, o, msg string) error { return answer(code, o, msg, nil) }

	if req.ContentLength > MaxWebhookBody {
		return outcome(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
	}
	body, err := readBody(c.Response(), req)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return outcome(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
	case err != nil:
		return outcome(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
	}

	sig := req.Header.Get(github.SHA256SignatureHeader)
	if sig == "" {
		return outcome(http.StatusUnauthorized, "unauthorized", "missing X-Hub-Signature-256")
	}
	ct := req.Header.Get("Content-Type")
	if ct != "application/json" { // what GitHub sends, without parameters: no need to parse it
		if ct, _, err = mime.ParseMediaType(ct); err != nil {
			ct = "application/json" // GitHub always sends one; the signature decides anyway
		}
	}
	if ct != "application/json" && ct != "application/x-www-form-urlencoded" {
		return outcome(http.StatusBadRequest, "bad_request", fmt.Sprintf("webhook request has unsupported Content-Type %q", ct))
	}
	if !s.signatures.valid(sig, body) {
		return outcome(http.StatusUnauthorized, "unauthorized", "bad X-Hub-Signature-256")
	}

	switch event {
	case "ping", "push", "check_run", "check_suite":
	case "":
		return outcome(http.StatusBadRequest, "bad_request", "missing X-GitHub-Event")
	default:
		return outcome(http.StatusOK, "ignored", fmt.Sprintf("event %q is not used by imagegen", event))
	}
	payload := body
	if ct == "application/x-www-form-urlencoded" {
		// GitHub signs the form; the JSON is its payload parameter.
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return outcome(http.StatusBadRequest, "bad_request", "malformed form: "+err.Error())
		}
		payload = []byte(form.Get("payload"))
	}
	if err := validJSON(payload); err != nil {
		return outcome(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
	}
	switch event {
	case "ping":
		return answer(http.StatusOK, "ping", "pong", answerPong)
	case "check_run", "check_suite":
		ev, err := parseEvent(event, payload)
		if err != nil {
			return outcome(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
		}
		if a := ev.(actionEvent).action(); a != "rerequested" {
			return outcome(http.StatusOK, "ignored", fmt.Sprintf("%s action %q: nothing to do", event, a))
		}
	case "push":
		p, err := peekPush(payload)
		if err != nil {
			return outcome(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
		}
		if p.deleted {
			return outcome(http.StatusOK, "ignored", "branch deletion: nothing to build")
		}
		if !strings.HasPrefix(p.ref, "refs/heads/") {
			return outcome(http.StatusOK, "ignored", "not a branch push: nothing to build")
		}
		if p.repo == "" || p.after == "" {
			return outcome(http.StatusBadRequest, "bad_request", "push without repository or after")
		}
	}
	if delivery == "" {
		return outcome(http.StatusBadRequest, "bad_request", "missing X-GitHub-Delivery")
	}
	// The payload as GitHub sent it; NewDeliveryTask embeds it unchanged.
	created, err := s.q.EnqueueDelivery(req.Context(), queue.Delivery{ID: delivery, Event: event, Body: payload})
	if err != nil {
		s.log.LogAttrs(req.Context(), slog.LevelError, "enqueue delivery",
			slog.String("delivery", delivery), slog.String("event", event), slog.Any("err", err))
		s.metrics.deliveries.WithLabelValues(event, "error").Inc()
		// 503 makes GitHub show the delivery as failed, to be redelivered.
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"message": "could not store the delivery; redeliver it later"})
	}
	if !created {
		return answer(http.StatusOK, "duplicate", "already received", answerDuplicate)
	}
	return answer(http.StatusAccepted, "accepted", "accepted", answerAccepted)
}

// eventLabel bounds the metrics' event label: unbounded values would let
// anyone with the secret grow the metrics.
func eventLabel(e string) string {
	switch e {
	case "":
		return "none"
	case "ping", "push", "check_run", "check_suite", "installation", "installation_repositories", "pull_request", "create", "delete":
		return e
	}
	return "other"
}

// bodyPrealloc caps the buffer allocated from a request's Content-Length
// before any byte arrived: a client claiming 25 MB and sending nothing must
// not hold 25 MB. Larger bodies grow as their bytes arrive.
const bodyPrealloc = 64 << 10

// readBody reads the request body, at most MaxWebhookBody bytes. A body
// of known and modest length (every GitHub delivery has a Content-Length) is
// read into one buffer of exactly that size; io.ReadAll would grow one from
// 512 bytes, copying it four times for a 7.6 kB push.
func readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	r := http.MaxBytesReader(w, req.Body, MaxWebhookBody)
	n := req.ContentLength
	if n < 0 || n > bodyPrealloc {
		return io.ReadAll(r)
	}
	// net/http's body reader ends at Content-Length, so this is all of it.
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// signatures checks X-Hub-Signature-256 with HMACs kept in a pool: hmac.New
// hashes the key anew each time, Reset reuses that work.
type signatures struct {
	pool sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the webhook secret
}

func newSignatures(secret func() []byte) *signatures {
	return &signatures{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, secret()) }}}
}

// valid reports whether sig is "sha256=" and the hex HMAC-SHA256 of body.
// Only SHA-256 counts: go-github's ValidateSignature would also take a
// "sha1=" value in this header.
func (s *signatures) valid(sig string, body []byte) bool {
	hexSum, ok := strings.CutPrefix(sig, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return false
	}
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], []byte(hexSum)); err != nil {
		return false
	}
	mac := s.pool.Get().(hash.Hash)
	defer s.pool.Put(mac)
	mac.Reset()
	mac.Write(body)
	var got [sha256.Size]byte
	return hmac.Equal(mac.Sum(got[:0]), want[:])
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

// pushPeek is what the webhook's answer to a push depends on.
type pushPeek struct {
	ref, after, repo string
	deleted          bool
}

// peekPush reads the four fields of a valid JSON push the answer depends on,
// in one pass over the top-level object that stops once it has them, without
// decoding the rest, and with the types go-github's PushEvent gives them (a
// field of another type is malformed, as it was with ParseWebHook).
func peekPush(payload []byte) (pushPeek, error) {
	var p pushPeek
	if len(payload) == 0 {
		return p, errors.New("empty")
	}
	// The body is not written to once read: a string sharing its bytes spares
	// a copy of the whole payload (gjson.ParseBytes would make one).
	root := gjson.Parse(unsafe.String(unsafe.SliceData(payload), len(payload)))
	if !root.IsObject() {
		return p, errors.New("not a JSON object")
	}
	var err error
	str := func(name string, v gjson.Result, to *string) {
		switch v.Type {
		case gjson.String:
			*to = v.Str
		case gjson.Null:
		default:
			err = fmt.Errorf("%s: not a string", name)
		}
	}
	found := 0
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "deleted":
			switch v.Type {
			case gjson.True:
				p.deleted = true
			case gjson.False, gjson.Null:
			default:
				err = errors.New("deleted: not a boolean")
			}
		case "ref":
			str("ref", v, &p.ref)
		case "after":
			str("after", v, &p.after)
		case "repository":
			switch {
			case v.Type == gjson.Null:
			case v.IsObject():
				str("repository.full_name", v.Get("full_name"), &p.repo)
			default:
				err = errors.New("repository: not an object")
			}
		default:
			return true
		}
		found++
		return err == nil && found < 4
	})
	return p, err
}

// checkRunEvent is the part of a check_run delivery imagegen uses. It is
// decoded by hand: go-github's Timestamp refuses the "2018-04-25 20:42:10"
// form GitHub has sent in check_run payloads, and none of those fields matter here.
type checkRunEvent struct {
	Action   string `json:"action"`
	CheckRun struct {
		ID         int64  `json:"id"`
		HeadSHA    string `json:"head_sha"`
		ExternalID string `json:"external_id"`
	} `json:"check_run"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Installation struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

// actionEvent is an event decoded by hand; its action decides what to do.
type actionEvent interface{ action() string }

func (e *checkRunEvent) action() string   { return e.Action }
func (e *checkSuiteEvent) action() string { return e.Action }

// decodeAction decodes event's payload into an E, which must have an action.
func decodeAction[E any, P interface {
	*E
	actionEvent
}](payload []byte, event string) (P, error) {
	ev := P(new(E))
	if err := json.Unmarshal(payload, ev); err != nil {
		return nil, err
	}
	if ev.action() == "" {
		return nil, fmt.Errorf("%s without action", event)
	}
	return ev, nil
}

// checkSuiteEvent is the part of a check_suite delivery imagegen uses
// ("Re-run all checks"), decoded by hand for the same reason as checkRunEvent.
type checkSuiteEvent struct {
	Action     string `json:"action"`
	CheckSuite struct {
		HeadSHA string `json:"head_sha"`
	} `json:"check_suite"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

// parseEvent is github.ParseWebHook, except for check_run and check_suite
// (see checkRunEvent).
func parseEvent(event string, payload []byte) (any, error) {
	switch event {
	case "check_run":
		return decodeAction[checkRunEvent](payload, event)
	case "check_suite":
		return decodeAction[checkSuiteEvent](payload, event)
	}
	return github.ParseWebHook(event, payload)
}
