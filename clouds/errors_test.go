package clouds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

var errTransient = &Error{Kind: KindTransient, Op: "list servers", Code: "503", Err: errors.New("busy")}

func TestKindOf(t *testing.T) {
	_, dialErr := net.Dial("tcp", "127.0.0.1:1") // nothing listens on port 1: a real *net.OpError
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, KindUnknown},
		{"plain", errors.New("x"), KindUnknown},
		{"classified", &Error{Kind: KindQuota}, KindQuota},
		{"wrapped", fmt.Errorf("launch: %w", &Error{Kind: KindAuth}), KindAuth},
		{"not found sentinel", fmt.Errorf("server 1: %w", ErrNotFound), KindNotFound},
		{"canceled", context.Canceled, KindUnknown},
		{"canceled wrapping transient", fmt.Errorf("%w: %w", context.Canceled, errTransient), KindUnknown},
		{"deadline", context.DeadlineExceeded, KindTransient}, // a net.Error with Timeout() true
		{"os timeout", os.ErrDeadlineExceeded, KindTransient},
		{"refused", dialErr, KindTransient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.want {
				t.Errorf("KindOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
	if !IsTransient(errTransient) || IsTransient(ErrNotFound) || !IsNotFound(ErrNotFound) {
		t.Error("IsTransient / IsNotFound disagree with KindOf")
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Kind: KindQuota, Op: "launch server", Code: "InstanceLimitExceeded", Err: errors.New("too many"), Hint: "ask for more"},
			"launch server: quota: InstanceLimitExceeded: too many (ask for more)"},
		{&Error{Kind: KindTransient, Op: "list", Err: errors.New("busy")}, "list: busy"},
		{&Error{Kind: KindAuth, Op: "open"}, "open: auth"},
		{&Error{}, ""},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if e := Errorf(KindInvalid, "op", "bad %d", 3); e.Error() != "op: invalid: bad 3" || KindOf(e) != KindInvalid {
		t.Errorf("Errorf = %v", e)
	}
}

var fastBackoff = Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, Factor: 2}
