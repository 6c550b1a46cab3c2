package clouds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Kind classifies a cloud error: Transient errors are retried with backoff,
// every other kind fails the build at once with a message that says which.
type Kind string

// The kinds of cloud error.
const (
	KindUnknown   Kind = ""          // unclassified: treated as permanent
	KindTransient Kind = "transient" // 429, 5xx, timeouts, conflicts that clear
	KindAuth      Kind = "auth"      // bad credentials, missing permission
	KindQuota     Kind = "quota"     // quota or limit exceeded
	KindCapacity  Kind = "capacity"  // the cloud has no room for the request now
	KindNotFound  Kind = "not-found" // the thing named does not exist (image, flavor, network)
	KindInvalid   Kind = "invalid"   // the request is wrong (bad input)
	KindFailed    Kind = "failed"    // the cloud put the resource in an error state
)

// Error is a classified cloud error.
type Error struct {
	Kind       Kind
	Op         string        // what was being done: "launch server", "create image"
	Code       string        // the cloud's own code: "InstanceLimitExceeded", "413"
	Hint       string        // what the user can do about it
	RetryAfter time.Duration // from Retry-After, when the cloud said
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Kind != KindUnknown && e.Kind != KindTransient {
		b.WriteString(string(e.Kind))
		b.WriteString(": ")
	}
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return strings.TrimSuffix(b.String(), ": ")
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns a classified error wrapping fmt.Errorf(format, args...).
func Errorf(kind Kind, op, format string, args ...any) error {
	return &Error{Kind: kind, Op: op, Err: fmt.Errorf(format, args...)}
}

// ErrNotFound is wrapped by drivers for "already gone"; Terminate treats it as success.
var ErrNotFound = &Error{Kind: KindNotFound, Err: errors.New("not found")}

// KindOf classifies err: a wrapped *Error's kind, transient for network
// timeouts and refused connections, KindUnknown otherwise. A canceled context
// is never transient.
func KindOf(err error) Kind {
	if err == nil {
		return KindUnknown
	}
	if errors.Is(err, context.Canceled) {
		return KindUnknown
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTransient
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return KindTransient
	}
	return KindUnknown
}

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool { return KindOf(err) == KindTransient }

// IsNotFound reports whether err says the thing does not exist.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }
