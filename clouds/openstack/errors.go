package openstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/imagegen/imagegen/clouds"
)

// classify turns a gophercloud error into a clouds.Error whose Kind tells the
// pipeline whether to retry: 429 and 5xx are transient (honouring Retry-After),
// quota and auth failures fail at once.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *clouds.Error
	if errors.As(err, &ce) {
		return err
	}
	var reauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauth) {
		return &clouds.Error{Kind: clouds.KindAuth, Op: op, Code: "401", Err: err,
			Hint: "the cloud refused the credentials when the token was renewed"}
	}
	var reauthV gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauthV) {
		return &clouds.Error{Kind: clouds.KindAuth, Op: op, Code: "401", Err: err}
	}
	var enf *gophercloud.ErrEndpointNotFound
	if errors.As(err, &enf) {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: op, Err: err,
			Hint: "the service catalog has no such endpoint: check region and interface in clouds.yaml"}
	}
	var re gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &re) {
		var rp *gophercloud.ErrUnexpectedResponseCode
		if !errors.As(err, &rp) {
			if k := clouds.KindOf(err); k != clouds.KindUnknown {
				return &clouds.Error{Kind: k, Op: op, Err: err}
			}
			return fmt.Errorf("%s: %w", op, err)
		}
		re = *rp
	}
	msg := apiMessage(re.Body)
	e := &clouds.Error{Op: op, Code: strconv.Itoa(re.Actual), Err: errors.New(msg)}
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "quota exceeded") || strings.Contains(lower, "quotaexceeded") ||
		strings.Contains(lower, "exceeded quota"):
		// Before 429 existed, Nova said 413 overLimit for quotas too; a quota
		// does not clear by waiting, whatever Retry-After says.
		e.Kind = clouds.KindQuota
		e.Hint = "raise the project's quota or free resources"
	case re.Actual == http.StatusTooManyRequests || re.Actual == http.StatusRequestEntityTooLarge:
		e.Kind = clouds.KindTransient
		e.RetryAfter = retryAfter(re.ResponseHeader)
	case re.Actual == http.StatusUnauthorized:
		e.Kind = clouds.KindAuth
		e.Hint = "check the credentials in clouds.yaml (or the password given with the build)"
	case re.Actual == http.StatusForbidden:
		e.Kind = clouds.KindAuth
		e.Hint = "the account lacks permission for this"
	case re.Actual == http.StatusNotFound:
		e.Kind = clouds.KindNotFound
	case re.Actual == http.StatusBadRequest && strings.Contains(lower, "could not be found"):
		// Nova answers 400 for a server naming a missing image, flavor or network.
		e.Kind = clouds.KindNotFound
	case re.Actual == http.StatusConflict:
		// Nova answers 409 while a task (spawning, image_uploading) holds the
		// server; it clears.
		e.Kind = clouds.KindTransient
	case re.Actual >= 500:
		e.Kind = clouds.KindTransient
		e.RetryAfter = retryAfter(re.ResponseHeader)
	case re.Actual >= 400:
		e.Kind = clouds.KindInvalid
	}
	return e
}

// apiMessage pulls the message out of an OpenStack error body, which each
// service shapes its own way: Nova {"itemNotFound": {"message": ...}},
// Neutron {"NeutronError": {"message": ...}}, Keystone {"error": {"message": ...}},
// Glance a plain text or HTML page.
func apiMessage(body []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) == nil {
		for _, v := range m {
			var inner struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(v, &inner) == nil && inner.Message != "" {
				return inner.Message
			}
		}
		var flat struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &flat) == nil && flat.Message != "" {
			return flat.Message
		}
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	if s == "" {
		s = "(empty response)"
	}
	return s
}

// retryAfter reads Retry-After in seconds or as an HTTP date; waits are capped
// at a minute so a confused cloud cannot park a build.
func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	if d < 0 {
		d = 0
	}
	if d > time.Minute {
		d = time.Minute
	}
	return d
}
