package clouds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// HostKeyPolicy is how a cloud learns a new instance's SSH host key before the
// pipeline first connects, and what happens when it cannot: a cloud entry's
// `host_key:` (openstack, ec2). Trusting the first key the server presents is
// never a fallback, only the explicit HostKeyFirstUse.
type HostKeyPolicy string

// The policies.
const (
	// HostKeyRequire: only a key known before first contact, the build's own
	// injected through user data (or, for type ssh, the configured one). A
	// launch with none to inject fails before it creates anything.
	HostKeyRequire HostKeyPolicy = "require"
	// HostKeyConsole: the injected key, else the keys cloud-init prints on
	// the console. None there within the SSH timeout fails the launch.
	HostKeyConsole HostKeyPolicy = "console"
	// HostKeyFirstUse: as HostKeyConsole, but with no key found the pipeline
	// trusts the first key the server presents, warning in the build log.
	HostKeyFirstUse HostKeyPolicy = "first-use"
)

// Where an Endpoint's host keys came from (Endpoint.HostKeySource).
const (
	SourceInjected = "injected"  // the build's generated key, given to the instance in user data or a seed
	SourceConsole  = "console"   // printed by cloud-init on the instance's console
	SourceConfig   = "config"    // the cloud's configuration (type ssh, simulated ssh.host_key)
	SourceFirstUse = "first-use" // none: the first key the server presents (HostKeyFirstUse only)
)

// DefaultSSHTimeout is what a zero LaunchRequest.SSHTimeout means.
const DefaultSSHTimeout = 15 * time.Minute

// ErrNoHostKey is wrapped by the errors of a launch or a connection refused
// because no host key could be pinned.
var ErrNoHostKey = errors.New("no SSH host key")

// ParseHostKeyPolicy reads a cloud entry's host_key; "" is def.
func ParseHostKeyPolicy(s string, def HostKeyPolicy) (HostKeyPolicy, error) {
	switch p := HostKeyPolicy(strings.TrimSpace(s)); p {
	case "":
		return def, nil
	case HostKeyRequire, HostKeyConsole, HostKeyFirstUse:
		return p, nil
	}
	hint := ""
	if strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") {
		// type ssh's host_key is a key; a line copied from there lands here.
		hint = " (here host_key is a policy; a key line is type ssh's host_key)"
	}
	return "", fmt.Errorf("host_key %q: want require, console or first-use%s", abbreviate(s), hint)
}

// TrustsFirstUse reports whether a connection may trust the first key seen.
func (p HostKeyPolicy) TrustsFirstUse() bool { return p == HostKeyFirstUse }

// CheckInjected refuses, under HostKeyRequire, a launch whose instance gets no
// host key: drivers call it before they create anything. injected says whether
// the driver gives the instance req.HostKey (inject_host_key).
func (p HostKeyPolicy) CheckInjected(req LaunchRequest, injected bool) error {
	switch {
	case p != HostKeyRequire || (injected && strings.TrimSpace(req.HostKey.Public) != ""):
		return nil
	case !injected:
		return &hostKeyError{msg: "host_key: require needs the build's host key injected, and inject_host_key is false; " +
			"set inject_host_key: true, or host_key: console to read the key from the console"}
	default:
		return &hostKeyError{msg: "host_key: require needs the build's host key injected, and the build brought none"}
	}
}

// HostKeyLookup is the host-key step of a driver that injects the build's
// host key through cloud-init user data and can read the instance's console.
type HostKeyLookup struct {
	Policy   HostKeyPolicy
	Instance string // the instance's id, for messages
	// Injected says whether the instance was given req.HostKey.
	Injected bool
	// ConsoleTimeout bounds reading the console under HostKeyFirstUse; under
	// HostKeyConsole the console is read for at least the SSH timeout.
	ConsoleTimeout time.Duration
	// Console reads the console until it shows host keys, and returns them
	// (authorized_keys lines), or returns when ctx ends.
	Console func(ctx context.Context) ([]string, error)
}

// Pin sets ep's host keys and policy: the injected key; else, unless the
// policy is HostKeyRequire, the keys on the console. With none, it fails
// (ErrNoHostKey), except under HostKeyFirstUse, where ep is left without keys
// for the pipeline to trust the first one seen, and req.Log says so.
func (l HostKeyLookup) Pin(ctx context.Context, req LaunchRequest, ep *Endpoint) error {
	ep.HostKeyPolicy = l.Policy
	if pub := strings.TrimSpace(req.HostKey.Public); l.Injected && pub != "" {
		ep.HostKeys, ep.HostKeySource = []string{pub}, SourceInjected
		return nil
	}
	if err := l.Policy.CheckInjected(req, l.Injected); err != nil {
		return err
	}
	wait := l.ConsoleTimeout
	if l.Policy != HostKeyFirstUse {
		ssh := req.SSHTimeout
		if ssh <= 0 {
			ssh = DefaultSSHTimeout
		}
		wait = max(wait, ssh)
	}
	// The wait may be long (the SSH timeout): say what the launch waits for.
	req.Log.Info("reading the SSH host keys cloud-init prints on the console", "instance", l.Instance,
		"host_key", string(l.Policy), "up_to", ShortDuration(wait))
	cctx, cancel := context.WithTimeout(ctx, wait)
	keys, err := l.Console(cctx)
	timedOut := cctx.Err() != nil
	cancel()
	if ctx.Err() != nil {
		return fmt.Errorf("launch: %w", ctx.Err())
	}
	if len(keys) > 0 {
		ep.HostKeys, ep.HostKeySource = keys, SourceConsole
		return nil
	}
	why := fmt.Sprintf("%s for instance %s on the console after %s", ErrNoHostKey, l.Instance, ShortDuration(wait))
	if !timedOut && err != nil {
		why = fmt.Sprintf("%s for instance %s: reading the console: %v", ErrNoHostKey, l.Instance, err)
	}
	if l.Policy == HostKeyFirstUse {
		req.Log.Warn(why + "; host_key: first-use, so the first key the server presents will be trusted (not recommended)")
		ep.HostKeys, ep.HostKeySource = nil, SourceFirstUse
		return nil
	}
	e := &hostKeyError{msg: why + "; set host_key: first-use to trust the first key seen (not recommended) or inject_host_key: true"}
	if !timedOut {
		e.err = err
	}
	return e
}

// hostKeyError is a launch refused for want of a host key: its message is
// whole (what, where, what to do); it is ErrNoHostKey and, when reading the
// console failed before the time was up, that failure.
type hostKeyError struct {
	msg string
	err error
}

func (e *hostKeyError) Error() string { return e.msg }

func (e *hostKeyError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrNoHostKey}
	}
	return []error{ErrNoHostKey, e.err}
}

// ShortDuration writes d as people do: 15m, 2m30s, 1h, 300ms.
func ShortDuration(d time.Duration) string {
	if d < time.Second {
		return d.String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
