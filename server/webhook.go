package server

import (
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

	gogithub "github.com/google/go-github/v60/github"
	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/queue"
)

// webhook answers a GitHub delivery. It only checks it and makes it durable
// (a task keyed by the push, or the delivery id); all GitHub API calls happen
// in the worker, so the answer comes well within GitHub's 10 s.
//
// Nothing is read of a request refused by its headers alone (admit): a
// missing or malformed signature, a missing or unused event, a body over
// 25 MiB. What is read is bounded in number and bytes at once (readLimit):
// past that the answer is 503 with Retry-After, before reading.
//
// It is the hot path of ingest (docs/BENCHMARKS.md, section 1): the body is
// read once into a buffer of its announced size, its signature checked with a
// pooled HMAC, and github.PeekDelivery reads what the answer depends on and
// what the worker needs, which the task keeps instead of the body.
func (s *Server) webhook(c echo.Context) error {
	start := time.Now()
	req := c.Request()
	event := req.Header.Get(gogithub.EventTypeHeader)
	delivery := req.Header.Get(gogithub.DeliveryIDHeader)
	mac, ct, a := admit(req, event)
	if a != nil {
		return s.answer(c, start, event, delivery, a)
	}
	p, a := s.read(c.Response(), req, mac, event, ct)
	if a == nil {
		a = s.acceptRepo(p.Event) // github.allow_repos (allow.go)
	}
	if a == nil && delivery == "" {
		a = refuse(http.StatusBadRequest, "bad_request", "missing X-GitHub-Delivery")
	}
	if a != nil {
		return s.answer(c, start, event, delivery, a)
	}
	created, err := s.queue.EnqueueDelivery(req.Context(), queue.Delivery{ID: delivery, Event: event, Parsed: p.Event})
	if err != nil {
		s.log.LogAttrs(req.Context(), slog.LevelError, "enqueue delivery",
			slog.String("delivery", delivery), slog.String("event", event), slog.Any("err", err))
		s.metrics.deliveries.WithLabelValues(event, "error").Inc()
		// 503 makes GitHub show the delivery as failed, to be redelivered.
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"message": "could not store the delivery; redeliver it later"})
	}
	if !created {
		// This delivery id, or this push (repository, ref, commit) under
		// another, was received within queue.DeliveryRetention.
		return s.answer(c, start, event, delivery, answerDuplicate)
	}
	return s.answer(c, start, event, delivery, answerAccepted)
}

// read reads the body of an admitted delivery within the read limit (busy
// past it), checks its signature and parses it (decide). The body is dead
// once it returns (the parsed event holds copies of what it keeps), so the
// wait on Redis that follows does not count against the limit.
func (s *Server) read(w http.ResponseWriter, req *http.Request, mac [sha256.Size]byte, event, ct string) (github.Peek, *answer) {
	size := reservation(req.ContentLength)
	if !s.reads.take(size) {
		return github.Peek{}, answerBusy
	}
	defer s.reads.give(size)
	body, a := s.authenticate(w, req, mac)
	if a != nil {
		return github.Peek{}, a
	}
	payload, a := payloadOf(ct, body)
	if a != nil {
		return github.Peek{}, a
	}
	return decide(event, payload)
}

// answer is the webhook's answer to a delivery.
type answer struct {
	code    int
	outcome string // the metric's label and the log's
	msg     string
	blob    []byte // the answer encoded once, for answers that never change; nil: {"message": msg}
	// retryAfter is the Retry-After header's value, if any.
	retryAfter string
}

// Answers that never change, encoded once: echo's c.JSON would encode a map
// for every delivery.
var (
	answerAccepted  = fixedAnswer(http.StatusAccepted, "accepted", "accepted")
	answerDuplicate = fixedAnswer(http.StatusOK, "duplicate", "already received")
	answerPong      = fixedAnswer(http.StatusOK, "ping", "pong")
	answerTooLarge  = refuse(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
	// answerBusy: every delivery being read at once counts against the
	// limits of config webhook:. 503, not 429: the limit is the server's,
	// the same for every client, not a rate one client exceeded.
	answerBusy = &answer{code: http.StatusServiceUnavailable, outcome: "busy", msg: "too many deliveries being read at once; retry later", retryAfter: "5"}
)

func fixedAnswer(code int, outcome, msg string) *answer {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return &answer{code: code, outcome: outcome, msg: msg, blob: append(b, '\n')}
}

// refuse is an answer that takes nothing (the delivery is ignored or refused).
func refuse(code int, outcome, msg string) *answer {
	return &answer{code: code, outcome: outcome, msg: msg}
}

// answer sends a, counting it and logging it: one log line per delivery.
func (s *Server) answer(c echo.Context, start time.Time, event, delivery string, a *answer) error {
	req := c.Request()
	s.metrics.deliveries.WithLabelValues(eventLabel(event), a.outcome).Inc()
	s.log.LogAttrs(req.Context(), slog.LevelInfo, "delivery answered",
		slog.String("delivery", delivery), slog.String("event", event),
		slog.String("outcome", a.outcome), slog.Int("status", a.code), slog.String("reason", a.msg),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	if a.retryAfter != "" {
		c.Response().Header().Set("Retry-After", a.retryAfter)
	}
	if a.blob != nil {
		return c.JSONBlob(a.code, a.blob)
	}
	return c.JSON(a.code, map[string]string{"message": a.msg})
}

// admit checks what the headers of a delivery say, before anything of its
// body is read: its size, that it carries a well-formed X-Hub-Signature-256
// (returned decoded), that its event is one imagegen uses, and its content
// type (returned without parameters); or the answer refusing or ignoring it.
func admit(req *http.Request, event string) (mac [sha256.Size]byte, ct string, a *answer) {
	if req.ContentLength > MaxWebhookBody {
		return mac, "", answerTooLarge
	}
	sig := req.Header.Get(gogithub.SHA256SignatureHeader)
	if sig == "" {
		return mac, "", refuse(http.StatusUnauthorized, "unauthorized", "missing X-Hub-Signature-256")
	}
	mac, ok := parseSignature(sig)
	if !ok {
		return mac, "", refuse(http.StatusUnauthorized, "unauthorized", "bad X-Hub-Signature-256: not sha256= and 64 hex digits")
	}
	switch event {
	case "ping", "push", "check_run", "check_suite":
	case "":
		return mac, "", refuse(http.StatusBadRequest, "bad_request", "missing X-GitHub-Event")
	default:
		// Not read, so not verified either: nothing is done with it.
		return mac, "", refuse(http.StatusOK, "ignored", fmt.Sprintf("event %q is not used by imagegen", event))
	}
	ct = req.Header.Get("Content-Type")
	if ct != "application/json" { // what GitHub sends, without parameters: no need to parse it
		var err error
		if ct, _, err = mime.ParseMediaType(ct); err != nil {
			ct = "application/json" // GitHub always sends one; the signature decides anyway
		}
	}
	if ct != "application/json" && ct != "application/x-www-form-urlencoded" {
		return mac, "", refuse(http.StatusBadRequest, "bad_request", fmt.Sprintf("webhook request has unsupported Content-Type %q", ct))
	}
	return mac, ct, nil
}

// reservation is what reading a body of announced length n counts against
// the webhook's byte limit: n, or the largest body when it is not announced
// (a chunked request).
func reservation(n int64) int64 {
	if n < 0 {
		return MaxWebhookBody
	}
	return n
}

// authenticate reads the body of an admitted delivery and checks that it is
// what GitHub signed (mac, from X-Hub-Signature-256); it returns the body, or
// the answer refusing it.
func (s *Server) authenticate(w http.ResponseWriter, req *http.Request, mac [sha256.Size]byte) ([]byte, *answer) {
	body, err := readBody(w, req)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, answerTooLarge
	case err != nil:
		return nil, refuse(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
	}
	if !s.signatures.valid(mac, body) {
		return nil, refuse(http.StatusUnauthorized, "unauthorized", "bad X-Hub-Signature-256")
	}
	return body, nil
}

// payloadOf returns the JSON payload of a signed delivery of content type
// ct, or the answer refusing it.
func payloadOf(ct string, body []byte) ([]byte, *answer) {
	if ct != "application/x-www-form-urlencoded" {
		return body, nil
	}
	// GitHub signs the form; the JSON is its payload parameter.
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "bad_request", "malformed form: "+err.Error())
	}
	return []byte(form.Get("payload")), nil
}

// decide reads a delivery (github.PeekDelivery) and answers it when it needs
// no work (a ping, an action or a push imagegen does nothing about) or is
// malformed; a nil answer means its Event is to be queued.
func decide(event string, payload []byte) (github.Peek, *answer) {
	p, err := github.PeekDelivery(event, payload)
	if err != nil {
		return p, refuse(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
	}
	switch event {
	case "ping":
		return p, answerPong
	case "check_run", "check_suite":
		switch {
		case p.Action != "rerequested":
			return p, refuse(http.StatusOK, "ignored", fmt.Sprintf("%s action %q: nothing to do", event, p.Action))
		case p.Event == nil && event == "check_run":
			return p, refuse(http.StatusOK, "ignored", "check_run rerequested: not a check run imagegen made (no external_id, or no repository): nothing to do")
		case p.Event == nil:
			return p, refuse(http.StatusOK, "ignored", "check_suite rerequested without repository or head_sha: nothing to do")
		}
	case "push":
		push, ok := p.Event.(builds.Push)
		switch {
		case !ok: // a payload of null
			return p, refuse(http.StatusBadRequest, "bad_request", "malformed payload: not a JSON object")
		case push.Deleted:
			return p, refuse(http.StatusOK, "ignored", "branch deletion: nothing to build")
		case !strings.HasPrefix(push.Ref, "refs/heads/"):
			return p, refuse(http.StatusOK, "ignored", "not a branch push: nothing to build")
		case push.Repo == "" || push.After == "":
			return p, refuse(http.StatusBadRequest, "bad_request", "push without repository or after")
		}
	}
	return p, nil
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

// readBody reads the request body, at most MaxWebhookBody bytes. A body of
// announced length (every GitHub delivery has a Content-Length) is read
// into one buffer of exactly that size, which the read limit has counted;
// io.ReadAll would grow one from 512 bytes, copying it over and over.
func readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	r := http.MaxBytesReader(w, req.Body, MaxWebhookBody)
	n := req.ContentLength
	if n < 0 {
		return io.ReadAll(r)
	}
	// net/http's body reader ends at Content-Length, so this is all of it.
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// readLimit bounds the webhook's bodies being read (and then checked and
// parsed) at once: their number and their bytes, each counted as
// reservation says. A request past either is refused before its body is
// read, so that unsigned requests cost the server no more than the limit.
type readLimit struct {
	mu                 sync.Mutex
	reads, bytes       int64
	maxReads, maxBytes int64
}

// newReadLimit makes the limits of cfg (config's defaults where unset: a
// Config not loaded by config.Load).
func newReadLimit(cfg config.Webhook) *readLimit {
	l := &readLimit{maxReads: int64(cfg.MaxConcurrentReads), maxBytes: cfg.MaxConcurrentBytes}
	if l.maxReads <= 0 {
		l.maxReads = config.DefaultWebhookConcurrency
	}
	if l.maxBytes <= 0 {
		l.maxBytes = config.DefaultWebhookBytes
	}
	return l
}

// take counts a body of size bytes in, if both limits allow it.
func (l *readLimit) take(size int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reads >= l.maxReads || l.bytes+size > l.maxBytes {
		return false
	}
	l.reads++
	l.bytes += size
	return true
}

// give counts a body taken out again.
func (l *readLimit) give(size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads--
	l.bytes -= size
}

// signatures checks X-Hub-Signature-256 with HMACs kept in a pool: hmac.New
// hashes the key anew each time, Reset reuses that work.
type signatures struct {
	pool sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the webhook secret
}

func newSignatures(secret func() []byte) *signatures {
	return &signatures{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, secret()) }}}
}

// parseSignature decodes an X-Hub-Signature-256 value: "sha256=" and the
// hex HMAC-SHA256 of the body. Only SHA-256 counts: go-github's
// ValidateSignature would also take a "sha1=" value in this header.
func parseSignature(sig string) (mac [sha256.Size]byte, ok bool) {
	hexSum, ok := strings.CutPrefix(sig, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return mac, false
	}
	if _, err := hex.Decode(mac[:], []byte(hexSum)); err != nil {
		return mac, false
	}
	return mac, true
}

// valid reports whether want is the HMAC-SHA256 of body.
func (s *signatures) valid(want [sha256.Size]byte, body []byte) bool {
	mac := s.pool.Get().(hash.Hash)
	defer s.pool.Put(mac)
	mac.Reset()
	mac.Write(body)
	var got [sha256.Size]byte
	return hmac.Equal(mac.Sum(got[:0]), want[:])
}
