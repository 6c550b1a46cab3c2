package clouds

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		15 * time.Minute:                      "15m",
		2*time.Minute + 30*time.Second:        "2m30s",
		time.Hour:                             "1h",
		time.Hour + 30*time.Minute:            "1h30m",
		time.Second:                           "1s",
		300 * time.Millisecond:                "300ms",
		1500 * time.Millisecond:               "2s",
		90*time.Minute + 15*time.Second:       "1h30m15s",
		45*time.Second + 400*time.Millisecond: "45s",
	} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestParseHostKeyPolicy(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{"", "console", ""},
		{"require", "require", ""},
		{"console", "console", ""},
		{"first-use", "first-use", ""},
		{"tofu", "", `host_key "tofu": want require, console or first-use`},
		{"Require", "", `host_key "Require": want require, console or first-use`},
		{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5d0kOnZPvL2f3uV8p root@box", "",
			`host_key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5d...": want require, console or first-use (here host_key is a policy; a key line is type ssh's host_key)`},
	} {
		got, err := ParseHostKeyPolicy(tc.in, HostKeyConsole)
		if string(got) != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
			t.Errorf("ParseHostKeyPolicy(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestHostKeyLookup covers what the drivers' fakes do not reach: a console
// that cannot be read at all, the SSH timeout's default, cancellation.
func TestHostKeyLookup(t *testing.T) {
	const pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5d0kOnZPvL2f3uV8pQk1mY7x3bWcZ4nE6sT2aR9hLq"
	broken := &Error{Kind: KindInvalid, Op: "read console", Err: errors.New("console log not available (409)")}
	for _, tc := range []struct {
		name     string
		policy   HostKeyPolicy
		injected bool
		key      string        // req.HostKey.Public
		ssh      time.Duration // req.SSHTimeout
		timeout  time.Duration // console_timeout
		console  func(ctx context.Context) ([]string, error)
		wantWait time.Duration // how long the console is read; 0: not checked
		wantErr  string
		wantIs   error
		wantLog  string
		wantSrc  string
	}{
		{name: "injected: the console is not read", policy: HostKeyConsole, injected: true, key: pub,
			console: func(context.Context) ([]string, error) { panic("read") }, wantSrc: SourceInjected},
		{name: "a key the driver did not inject is not pinned", policy: HostKeyConsole, injected: false, key: pub, ssh: time.Second,
			console: func(context.Context) ([]string, error) { return []string{"ssh-ed25519 OTHER"}, nil }, wantSrc: SourceConsole},
		{name: "console unreadable, console: fails with why", policy: HostKeyConsole, ssh: time.Hour,
			console: func(context.Context) ([]string, error) { return nil, broken },
			wantErr: "no SSH host key for instance i-1: reading the console: read console: invalid: console log not available (409); " +
				"set host_key: first-use to trust the first key seen (not recommended) or inject_host_key: true", wantIs: broken},
		{name: "console unreadable, first-use: warns", policy: HostKeyFirstUse, timeout: time.Minute,
			console: func(context.Context) ([]string, error) { return nil, broken }, wantSrc: SourceFirstUse,
			wantLog: `level=WARN msg="no SSH host key for instance i-1: reading the console: read console: invalid: console log not available (409); host_key: first-use, so the first key the server presents will be trusted (not recommended)"`},
		{name: "console: the SSH timeout, 15m without one", policy: HostKeyConsole, timeout: 2 * time.Minute, wantWait: 15 * time.Minute,
			console: func(context.Context) ([]string, error) { return []string{pub}, nil }, wantSrc: SourceConsole},
		{name: "console: a longer console_timeout wins", policy: HostKeyConsole, timeout: time.Hour, ssh: time.Minute, wantWait: time.Hour,
			console: func(context.Context) ([]string, error) { return []string{pub}, nil }, wantSrc: SourceConsole},
		{name: "first-use: console_timeout only", policy: HostKeyFirstUse, timeout: 2 * time.Minute, ssh: time.Hour, wantWait: 2 * time.Minute,
			console: func(context.Context) ([]string, error) { return []string{pub}, nil }, wantSrc: SourceConsole},
		{name: "require: the console is never read", policy: HostKeyRequire, injected: false,
			console: func(context.Context) ([]string, error) { panic("read") },
			wantErr: "host_key: require needs the build's host key injected, and inject_host_key is false; set inject_host_key: true, or host_key: console to read the key from the console", wantIs: ErrNoHostKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			req := LaunchRequest{HostKey: HostKey{Public: tc.key}, SSHTimeout: tc.ssh, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			l := HostKeyLookup{Policy: tc.policy, Instance: "i-1", Injected: tc.injected, ConsoleTimeout: tc.timeout,
				Console: func(ctx context.Context) ([]string, error) {
					dl, _ := ctx.Deadline()
					if left := time.Until(dl); tc.wantWait > 0 && (left > tc.wantWait || left < tc.wantWait-time.Minute) {
						t.Errorf("console read for %s, want %s", left.Round(time.Second), tc.wantWait)
					}
					return tc.console(ctx)
				}}
			var ep Endpoint
			err := l.Pin(context.Background(), req, &ep)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrNoHostKey) || !errors.Is(err, tc.wantIs) {
					t.Fatalf("Pin = %v\nwant %q (and errors.Is %v)", err, tc.wantErr, tc.wantIs)
				}
				if KindOf(err) == KindTransient {
					t.Error("a refusal for want of a host key is retried")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.HostKeySource != tc.wantSrc || ep.HostKeyPolicy != tc.policy {
				t.Errorf("endpoint %+v, want source %s", ep, tc.wantSrc)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tc.wantLog)
			}
		})
	}

	// Canceled while reading the console: the cancellation, not a refusal.
	ctx, cancel := context.WithCancel(context.Background())
	l := HostKeyLookup{Policy: HostKeyConsole, Instance: "i-1", Console: func(ctx context.Context) ([]string, error) {
		cancel()
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	err := l.Pin(ctx, LaunchRequest{Log: slog.New(slog.DiscardHandler)}, &Endpoint{})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNoHostKey) {
		t.Errorf("canceled Pin = %v", err)
	}
}
