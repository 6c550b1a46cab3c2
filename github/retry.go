package github

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gogithub "github.com/google/go-github/v60/github"
)

// Error is a failed GitHub call, after any retries.
type Error struct {
	Op         string // what was asked: "set status imagegen/dstat/ec2 on o/r@abc123"
	StatusCode int    // the HTTP status GitHub answered, 0 for transport errors
	// Transient is true when the failure was retryable but retries ran out
	// (or the wait would pass the deadline): trying again later may work.
	Transient bool
	Hint      string // what to do about it, when known
	Err       error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("github: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether GitHub answered 404 (or the file does not exist).
func IsNotFound(err error) bool {
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusNotFound {
		return true
	}
	return false
}

// IsTransient reports whether err may go away if the call is made again later.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// Backoff is the retry policy for transient GitHub errors: waits grow from
// Initial by Factor up to Max; Attempts (0: unlimited, bounded by ctx) limits
// the number of tries. (Its own, not clouds.Backoff: this package knows
// nothing of clouds.)
type Backoff struct {
	Initial  time.Duration
	Max      time.Duration
	Factor   float64
	Attempts int
}

// Delay returns the wait before try n (0-based).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	f := max(b.Factor, 1)
	for range n {
		d = time.Duration(float64(d) * f)
		if b.Max > 0 && d >= b.Max {
			return b.Max
		}
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d
}

// verdict is what to do about one failed try.
type verdict struct {
	retry   bool
	wait    time.Duration // 0: use the backoff
	status  int
	reason  string // for the log and the final error
	hint    string
	tooLong bool // a rate limit whose reset is further away than we wait
}

// do runs fn until it succeeds, fails permanently, runs out of tries or ctx
// ends. Errors are *Error naming op.
func (c *Client) do(ctx context.Context, op string, fn func(context.Context) error) error {
	f := c.f
	for try := 0; ; try++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return &Error{Op: op, Err: fmt.Errorf("%w (last error: %w)", ctx.Err(), err)}
		}
		v := f.classify(err, try)
		if !v.retry {
			return &Error{Op: op, StatusCode: v.status, Transient: v.tooLong, Hint: v.hint, Err: err}
		}
		if f.retry.Attempts > 0 && try+1 >= f.retry.Attempts {
			return &Error{Op: op, StatusCode: v.status, Transient: true, Hint: v.hint,
				Err: fmt.Errorf("gave up after %d tries (%s): %w", try+1, v.reason, err)}
		}
		wait := v.wait
		if wait <= 0 {
			wait = f.retry.Delay(try)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return &Error{Op: op, StatusCode: v.status, Transient: true, Hint: v.hint,
				Err: fmt.Errorf("%s: waiting %s to retry would pass the deadline: %w", v.reason, wait.Round(time.Millisecond), err)}
		}
		f.log.WarnContext(ctx, "github call failed, retrying",
			"op", op, "try", try+1, "status", v.status, "reason", v.reason, "wait", wait.Round(time.Millisecond), "err", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return &Error{Op: op, StatusCode: v.status, Transient: true, Err: fmt.Errorf("%w (last error: %w)", ctx.Err(), err)}
		case <-t.C:
		}
	}
}

// classify decides whether a failed try is worth another and how long to wait.
func (f *Factory) classify(err error, try int) verdict {
	var rle *gogithub.RateLimitError
	var abuse *gogithub.AbuseRateLimitError
	var er *gogithub.ErrorResponse
	var he *ghinstallation.HTTPError
	switch {
	case errors.As(err, &rle):
		return f.primaryLimit(rle.Rate.Reset.Time, statusOf(rle.Response))
	case errors.As(err, &abuse):
		v := verdict{retry: true, status: statusOf(abuse.Response), reason: "secondary rate limit"}
		if abuse.RetryAfter != nil && *abuse.RetryAfter > 0 {
			v.wait = *abuse.RetryAfter
		}
		return v
	case errors.As(err, &er) && er.Response != nil:
		return f.fromResponse(er.Response.StatusCode, er.Response.Header, er.Message)
	case errors.As(err, &he):
		if he.Response != nil {
			// ghinstallation leaves the body of a failed token request open.
			msg := readMessage(he.Response.Body)
			he.Response.Body.Close()
			return f.fromResponse(he.Response.StatusCode, he.Response.Header, msg)
		}
		if he.RootCause != nil {
			return f.classify(he.RootCause, try)
		}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		// No retry fixes a certificate GitHub (Enterprise) does not match.
		return verdict{hint: "the server's TLS certificate was not accepted; check github.api_url and the system's CA certificates"}
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return verdict{retry: true, reason: "transport error"}
	}
	return verdict{}
}

// fromResponse classifies an HTTP error answer.
func (f *Factory) fromResponse(status int, h http.Header, message string) verdict {
	retryAfter := func() time.Duration {
		if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s >= 0 {
			return time.Duration(s) * time.Second
		}
		return 0
	}
	switch {
	case (status == http.StatusForbidden || status == http.StatusTooManyRequests) && h.Get("X-RateLimit-Remaining") == "0" && h.Get("Retry-After") == "":
		reset, _ := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
		return f.primaryLimit(time.Unix(reset, 0), status)
	case status == http.StatusTooManyRequests:
		return verdict{retry: true, status: status, wait: retryAfter(), reason: "429 too many requests"}
	case status == http.StatusForbidden && (h.Get("Retry-After") != "" || strings.Contains(strings.ToLower(message), "secondary rate limit")):
		return verdict{retry: true, status: status, wait: retryAfter(), reason: "secondary rate limit"}
	case status >= 500:
		return verdict{retry: true, status: status, wait: retryAfter(), reason: fmt.Sprintf("server error %d", status)}
	}
	v := verdict{status: status}
	switch status {
	case http.StatusUnauthorized:
		v.hint = "bad credentials: check github.token, or the App's id and private key"
	case http.StatusForbidden:
		v.hint = "forbidden: the token or App installation lacks a permission this needs (contents: read, statuses: write, checks: write)"
	case http.StatusNotFound:
		v.hint = "not found, or not visible to this token or installation"
	case http.StatusUnprocessableEntity:
		v.hint = "GitHub rejected the request as invalid"
	}
	return v
}

// primaryLimit waits for an exhausted primary rate limit to reset, unless
// that is further away than the factory is willing to wait.
func (f *Factory) primaryLimit(reset time.Time, status int) verdict {
	wait := time.Until(reset)
	if reset.IsZero() || reset.Unix() <= 0 {
		// No reset time given: a plain backoff.
		return verdict{retry: true, status: status, reason: "rate limit exhausted"}
	}
	if wait > f.maxWait {
		return verdict{status: status, tooLong: true, reason: "rate limit exhausted",
			hint: fmt.Sprintf("the API rate limit is exhausted until %s (in %s), longer than the %s imagegen waits",
				reset.UTC().Format(time.RFC3339), wait.Round(time.Second), f.maxWait)}
	}
	if wait < 50*time.Millisecond {
		// The reset has passed (or is now): go again almost at once.
		wait = 50 * time.Millisecond
	}
	return verdict{retry: true, status: status, wait: wait, reason: "rate limit exhausted until " + reset.UTC().Format(time.RFC3339)}
}

func statusOf(r *http.Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode
}

// readMessage reads GitHub's {"message": ...} from an error body, best effort.
func readMessage(r io.Reader) string {
	if r == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	return string(b)
}
