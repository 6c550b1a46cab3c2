package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/google/go-github/v60/github"
	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/queue"
)

// webhook answers a GitHub delivery. It only checks it and makes it durable (a
// task keyed by the delivery id); all GitHub API calls happen in the worker,
// so the answer comes well within GitHub's 10 s.
func (s *Server) webhook(c echo.Context) error {
	req := c.Request()
	event := req.Header.Get(github.EventTypeHeader)
	log := logOf(c)
	outcome := func(code int, o, msg string) error {
		ev := event
		if ev == "" {
			ev = "none"
		} else if !knownEvent(ev) {
			// Unbounded label values would let anyone with the secret grow the metrics.
			ev = "other"
		}
		s.metrics.deliveries.WithLabelValues(ev, o).Inc()
		log.Info("delivery answered", "outcome", o, "status", code, "reason", msg)
		return c.JSON(code, map[string]string{"message": msg})
	}

	if req.ContentLength > MaxWebhookBody {
		return outcome(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, MaxWebhookBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return outcome(http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over %d bytes", MaxWebhookBody))
	case err != nil:
		return outcome(http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
	}

	// Only the SHA-256 signature counts (go-github would fall back to SHA-1).
	sig := req.Header.Get(github.SHA256SignatureHeader)
	if sig == "" {
		return outcome(http.StatusUnauthorized, "unauthorized", "missing X-Hub-Signature-256")
	}
	ct, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil {
		ct = "application/json" // GitHub always sends one; the signature decides anyway
	}
	payload, err := github.ValidatePayloadFromBody(ct, bytes.NewReader(body), sig, []byte(s.cfg.GitHub.WebhookSecret.Reveal()))
	if err != nil {
		if strings.Contains(err.Error(), "unsupported Content-Type") {
			return outcome(http.StatusBadRequest, "bad_request", err.Error())
		}
		return outcome(http.StatusUnauthorized, "unauthorized", "bad X-Hub-Signature-256")
	}

	delivery := req.Header.Get("X-GitHub-Delivery")
	switch event {
	case "ping", "push", "check_run":
	case "":
		return outcome(http.StatusBadRequest, "bad_request", "missing X-GitHub-Event")
	default:
		return outcome(http.StatusOK, "ignored", fmt.Sprintf("event %q is not used by imagegen", event))
	}
	if event == "check_run" {
		cr, err := parseCheckRun(payload)
		if err != nil {
			return outcome(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
		}
		if cr.Action != "rerequested" {
			return outcome(http.StatusOK, "ignored", fmt.Sprintf("check_run action %q: nothing to do", cr.Action))
		}
	}
	ev, err := parseEvent(event, payload)
	if err != nil {
		return outcome(http.StatusBadRequest, "bad_request", "malformed payload: "+err.Error())
	}
	switch ev := ev.(type) {
	case *github.PingEvent:
		return outcome(http.StatusOK, "ping", "pong")
	case *github.PushEvent:
		if ev.GetDeleted() {
			return outcome(http.StatusOK, "ignored", "branch deletion: nothing to build")
		}
		if !strings.HasPrefix(ev.GetRef(), "refs/heads/") {
			return outcome(http.StatusOK, "ignored", "not a branch push: nothing to build")
		}
		if ev.GetRepo().GetFullName() == "" || ev.GetAfter() == "" {
			return outcome(http.StatusBadRequest, "bad_request", "push without repository or after")
		}
	}
	if delivery == "" {
		return outcome(http.StatusBadRequest, "bad_request", "missing X-GitHub-Delivery")
	}
	// Keep the payload as GitHub sent it (compact JSON when it came form-encoded).
	var raw json.RawMessage = payload
	created, err := s.q.EnqueueDelivery(req.Context(), queue.Delivery{ID: delivery, Event: event, Body: raw})
	if err != nil {
		log.Error("enqueue delivery", "err", err)
		s.metrics.deliveries.WithLabelValues(event, "error").Inc()
		// 503 makes GitHub show the delivery as failed, to be redelivered.
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"message": "could not store the delivery; redeliver it later"})
	}
	if !created {
		return outcome(http.StatusOK, "duplicate", "already received")
	}
	return outcome(http.StatusAccepted, "accepted", "accepted")
}

func knownEvent(e string) bool {
	switch e {
	case "ping", "push", "check_run", "check_suite", "installation", "installation_repositories", "pull_request", "create", "delete":
		return true
	}
	return false
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

func parseCheckRun(payload []byte) (*checkRunEvent, error) {
	var ev checkRunEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	if ev.Action == "" {
		return nil, errors.New("check_run without action")
	}
	return &ev, nil
}

// parseEvent is github.ParseWebHook, except for check_run (see checkRunEvent).
func parseEvent(event string, payload []byte) (any, error) {
	if event == "check_run" {
		return parseCheckRun(payload)
	}
	return github.ParseWebHook(event, payload)
}
