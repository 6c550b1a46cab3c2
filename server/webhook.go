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

	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/queue"
)

// webhook answers a GitHub delivery. It only checks it and makes it durable (a
// task keyed by the delivery id); all GitHub API calls happen in the worker,
// so the answer comes well within GitHub's 10 s.
//
// It is the hot path of ingest (docs/BENCHMARKS.md, section 1): the body is
// read once into a buffer of its announced size, its signature checked with a
// pooled HMAC, what the answer depends on peeked at (github.PeekDelivery),
// and the task's payload embeds the body as it came. The worker parses the
// whole event (github.ParseDelivery).
func (s *Server) webhook(c echo.Context) error {
	start := time.Now()
	req := c.Request()
	event := req.Header.Get(gogithub.EventTypeHeader)
	delivery := req.Header.Get(gogithub.DeliveryIDHeader)
	body, ct, a := s.authenticate(c.Response(), req)
	var payload []byte
	if a == nil {
		payload, a = payloadOf(event, ct, body)
	}
	if a == nil {
		a = decide(event, payload)
	}
	if a == nil {
		a = s.acceptRepo(payload) // github.allow_repos (allow.go)
	}
	if a == nil && delivery == "" {
		a = refuse(http.StatusBadRequest, "bad_request", "missing X-GitHub-Delivery")
	}
	if a != nil {
		return s.answer(c, start, event, delivery, a)
	}
	// The payload as GitHub sent it; NewDeliveryTask embeds it unchanged.
	created, err := s.queue.EnqueueDelivery(req.Context(), queue.Delivery{ID: delivery, Event: event, Body: payload})
	if err != nil {
		s.log.LogAttrs(req.Context(), slog.LevelError, "enqueue delivery",
			slog.String("delivery", delivery), slog.String("event", event), slog.Any("err", err))
		s.metrics.deliveries.WithLabelValues(event, "error").Inc()
		// 503 makes GitHub show the delivery as failed, to be redelivered.
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"message": "could not store the delivery; redeliver it later"})
	}
	if !created {
		return s.answer(c, start, event, delivery, answerDuplicate)
	}
	return s.answer(c, start, event, delivery, answerAccepted)
}

// answer is the webhook's answer to a delivery.
type answer struct {
	code    int
	outcome string // the metric's label and the log's
	msg     string
	blob    []byte // the answer encoded once, for answers that never change; nil: {"message": msg}
}

// Answers that never change, encoded once: echo's c.JSON would encode a map
// for every delivery.
var (
	answerAccepted  = fixedAnswer(http.StatusAccepted, "accepted", "accepted")
	answerDuplicate = fixedAnswer(http.StatusOK, "duplicate", "already received")
	answerPong      = fixedAnswer(http.StatusOK, "ping", "pong")
	answerTooLarge  = refuse(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
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
	if a.blob != nil {
		return c.JSONBlob(a.code, a.blob)
	}
	return c.JSON(a.code, map[string]string{"message": a.msg})
}

// authenticate reads the body of a delivery and checks that GitHub signed
// it; it returns the body and its content type, or the answer refusing it.
func (s *Server) authenticate(w http.ResponseWriter, req *http.Request) (body []byte, ct string, a *answer) {
	if req.ContentLength > MaxWebhookBody {
		return nil, "", answerTooLarge
	}
	body, err := readBody(w, req)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, "", answerTooLarge
	case err != nil:
		return nil, "", refuse(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
	}
	sig := req.Header.Get(gogithub.SHA256SignatureHeader)
	if sig == "" {
		return nil, "", refuse(http.StatusUnauthorized, "unauthorized", "missing X-Hub-Signature-256")
	}
	ct = req.Header.Get("Content-Type")
	if ct != "application/json" { // what GitHub sends, without parameters: no need to parse it
		if ct, _, err = mime.ParseMediaType(ct); err != nil {
			ct = "application/json" // GitHub always sends one; the signature decides anyway
		}
	}
	if ct != "application/json" && ct != "application/x-www-form-urlencoded" {
		return nil, "", refuse(http.StatusBadRequest, "bad_request", fmt.Sprintf("webhook request has unsupported Content-Type %q", ct))
	}
	if !s.signatures.valid(sig, body) {
		return nil, "", refuse(http.StatusUnauthorized, "unauthorized", "bad X-Hub-Signature-256")
	}
	return body, ct, nil
}

// payloadOf returns the JSON payload of a signed delivery of event, or the
// answer ignoring or refusing it: imagegen uses four events.
func payloadOf(event, ct string, body []byte) ([]byte, *answer) {
	switch event {
	case "ping", "push", "check_run", "check_suite":
	case "":
		return nil, refuse(http.StatusBadRequest, "bad_request", "missing X-GitHub-Event")
	default:
		return nil, refuse(http.StatusOK, "ignored", fmt.Sprintf("event %q is not used by imagegen", event))
	}
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

// decide answers a delivery that needs no work (a ping, an action or a push
// imagegen does nothing about) or is malformed; nil means it is to be queued.
func decide(event string, payload []byte) *answer {
	p, err := github.PeekDelivery(event, payload)
	if err != nil {
		return refuse(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
	}
	switch event {
	case "ping":
		return answerPong
	case "check_run", "check_suite":
		if p.Action != "rerequested" {
			return refuse(http.StatusOK, "ignored", fmt.Sprintf("%s action %q: nothing to do", event, p.Action))
		}
	case "push":
		switch {
		case p.Deleted:
			return refuse(http.StatusOK, "ignored", "branch deletion: nothing to build")
		case !strings.HasPrefix(p.Ref, "refs/heads/"):
			return refuse(http.StatusOK, "ignored", "not a branch push: nothing to build")
		case p.Repo == "" || p.After == "":
			return refuse(http.StatusBadRequest, "bad_request", "push without repository or after")
		}
	}
	return nil
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
