// Package sshexec is imagegen's SSH client: it waits for a server, pins its host key, uploads a script and streams its output in lines.
// It knows no cloud, build or log store: builder runs generator scripts with it, clouds/cloudtest checks drivers' endpoints with it.
package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/internal/secret"
)

// Defaults for Config's zero values.
const (
	DefaultTimeout     = 15 * time.Minute
	DefaultRetryEvery  = 1 * time.Second
	DefaultDialTimeout = 10 * time.Second
	// DefaultKeepAlive is how often the client asks the server whether it is
	// still there, and DefaultKeepAliveTimeout how long it waits for an answer
	// before it calls the connection lost: without them a connection whose
	// server vanished (powered off, a NAT that forgot it, a partition) hangs
	// a build until its timeout, as TCP on its own can wait for hours.
	DefaultKeepAlive        = 10 * time.Second
	DefaultKeepAliveTimeout = 30 * time.Second
	// MaxLine is the longest line passed on whole; longer lines are split, so
	// a script printing megabytes without a newline cannot exhaust memory.
	MaxLine = 64 << 10
	// TailLines is how many lines of output a failed script's error carries.
	TailLines = 20
)

// Config says how to reach one SSH server.
type Config struct {
	Addr   string // host:port
	User   string
	Signer ssh.Signer

	// HostKeys are authorized_keys lines; the server must present one of them.
	// Empty is refused, unless TrustFirstUse.
	HostKeys      []string
	HostKeySource string // where HostKeys came from, for messages
	// TrustFirstUse, with no HostKeys, trusts the first key the server
	// presents (and logs it) and pins it for the connection's retries. Only
	// for a caller whose user asked for it: sshexec never trusts on its own.
	TrustFirstUse bool

	Timeout     time.Duration // how long to wait for SSH to answer; default 15 min
	RetryEvery  time.Duration // wait between attempts; default (and at most) DefaultRetryEvery, 1 s
	DialTimeout time.Duration // one attempt's TCP + handshake limit; default 10 s
	// KeepAlive and KeepAliveTimeout: see DefaultKeepAlive (the defaults for
	// zero); a negative KeepAlive sends none.
	KeepAlive, KeepAliveTimeout time.Duration

	Log *slog.Logger // may be nil
	// Progress is called after each failed attempt with the time waited so far.
	Progress func(elapsed time.Duration, lastErr error)
}

// HostKeyError is a server presenting a host key other than the pinned ones.
// It is never retried: it means the wrong machine, or a man in the middle.
type HostKeyError struct {
	Addr     string
	Source   string
	Expected []string // fingerprints
	Offered  string   // fingerprint
}

func (e *HostKeyError) Error() string {
	src := ""
	if e.Source != "" {
		src = " (from " + e.Source + ")"
	}
	return fmt.Sprintf("host key mismatch on %s: expected %s%s, the server offered %s", e.Addr, strings.Join(e.Expected, " or "), src, e.Offered)
}

// ErrConnectionLost is what an error wrapping a *LostError is (errors.Is):
// the connection ended under a command, reset, dropped or silent.
var ErrConnectionLost = errors.New("connection lost")

// LostError is a connection to the server that ended while a command used
// it: reset, closed, or silent for longer than the keepalive timeout.
type LostError struct {
	Addr   string
	During string // what was going on: "the script", "the upload of the script"
	Err    error  // why, as the transport saw it
}

func (e *LostError) Error() string {
	return fmt.Sprintf("connection lost to %s during %s (the network dropped it or the VM went away): %v", e.Addr, e.During, e.Err)
}

func (e *LostError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrConnectionLost) true.
func (e *LostError) Is(target error) bool { return target == ErrConnectionLost }

// Client is a connection to a build's VM.
type Client struct {
	c    *ssh.Client
	addr string
	log  *slog.Logger

	dead chan struct{} // closed when the connection has ended
	mu   sync.Mutex
	lost error // why it ended, once dead
}

func newClient(c *ssh.Client, cfg Config, log *slog.Logger) *Client {
	cl := &Client{c: c, addr: cfg.Addr, log: log, dead: make(chan struct{})}
	go func() {
		err := c.Wait()
		cl.mu.Lock()
		if cl.lost == nil {
			if err == nil {
				err = io.EOF
			}
			cl.lost = err
		}
		cl.mu.Unlock()
		close(cl.dead)
	}()
	every, timeout := cfg.KeepAlive, cfg.KeepAliveTimeout
	if every == 0 {
		every = DefaultKeepAlive
	}
	if timeout <= 0 {
		timeout = DefaultKeepAliveTimeout
	}
	if every > 0 {
		go cl.keepAlive(every, timeout)
	}
	return cl
}

// keepAlive asks the server every interval whether it is there; when an
// answer takes longer than timeout, the connection is called lost and
// closed, which ends every command on it.
func (c *Client) keepAlive(every, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-t.C:
		}
		answered := make(chan error, 1)
		go func() {
			// Any answer will do: OpenSSH answers this request with a failure.
			_, _, err := c.c.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		wait := time.NewTimer(timeout)
		select {
		case err := <-answered:
			wait.Stop()
			if err != nil {
				return // the connection is over; Wait says why
			}
		case <-c.dead:
			wait.Stop()
			return
		case <-wait.C:
			c.mu.Lock()
			if c.lost == nil {
				c.lost = fmt.Errorf("the server answered no keepalive for %s", timeout)
			}
			c.mu.Unlock()
			c.log.Warn("SSH connection lost: no answer to keepalives", "addr", c.addr, "timeout", timeout.String())
			c.c.Close()
			return
		}
	}
}

// lostDuring returns a *LostError when the connection has ended (or ends
// within a moment: a session's channel closes just before the transport
// reports why), else nil.
func (c *Client) lostDuring(what string) error {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-c.dead:
	case <-t.C:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return &LostError{Addr: c.addr, During: what, Err: c.lost}
}

// Connect dials cfg.Addr until the SSH server answers and lets cfg.User in,
// or cfg.Timeout passes, or ctx ends. A host key mismatch fails at once.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RetryEvery <= 0 || cfg.RetryEvery > DefaultRetryEvery {
		cfg.RetryEvery = DefaultRetryEvery
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Signer == nil {
		return nil, errors.New("ssh: no private key to log in with")
	}
	hk, err := newHostKeyChecker(cfg, log)
	if err != nil {
		return nil, err
	}
	cc := &ssh.ClientConfig{
		User:            cfg.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: hk.check,
		Timeout:         cfg.DialTimeout,
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	for attempt := 1; ; attempt++ {
		c, err := dial(ctx, cfg.Addr, cc, cfg.DialTimeout)
		if err == nil {
			log.Info("SSH is up", "addr", cfg.Addr, "user", cfg.User, "host_key", hk.presented(),
				"waited", time.Since(start).Round(time.Second).String(), "attempts", attempt)
			return newClient(c, cfg, log), nil
		}
		var hke *HostKeyError
		if errors.As(err, &hke) {
			return nil, hke
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("SSH on %s did not answer within %s (last error: %w)", cfg.Addr, cfg.Timeout, err)
			}
			return nil, fmt.Errorf("waiting for SSH on %s: %w", cfg.Addr, ctx.Err())
		}
		if cfg.Progress != nil {
			cfg.Progress(time.Since(start), err)
		}
		log.Debug("SSH not ready", "addr", cfg.Addr, "attempt", attempt, "err", err)
		t := time.NewTimer(cfg.RetryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("SSH on %s did not answer within %s (last error: %w)", cfg.Addr, cfg.Timeout, err)
			}
			return nil, fmt.Errorf("waiting for SSH on %s: %w", cfg.Addr, ctx.Err())
		case <-t.C:
		}
	}
}

// dial makes one attempt, abandoning the handshake when ctx ends.
func dial(ctx context.Context, addr string, cc *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The handshake has no context: a deadline bounds it, and closing the
	// connection when ctx ends interrupts it.
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, cc)
	if !stop() {
		if err == nil {
			sc.Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

type hostKeyChecker struct {
	addr   string
	source string
	log    *slog.Logger

	mu       sync.Mutex
	allowed  []ssh.PublicKey
	tofu     bool
	accepted ssh.PublicKey // the key the last accepted server presented
}

// ErrNoHostKey is a Connect refused because there is no host key to pin and
// TrustFirstUse was not set.
var ErrNoHostKey = errors.New("ssh: no host key to pin")

func newHostKeyChecker(cfg Config, log *slog.Logger) (*hostKeyChecker, error) {
	h := &hostKeyChecker{addr: cfg.Addr, source: cfg.HostKeySource, log: log}
	for _, line := range cfg.HostKeys {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("ssh: host key %q from %s: %w", abbreviate(line), orUnknown(cfg.HostKeySource), err)
		}
		h.allowed = append(h.allowed, k)
	}
	if len(h.allowed) == 0 && !cfg.TrustFirstUse {
		return nil, fmt.Errorf("%w for %s, and trusting the first key seen was not asked for", ErrNoHostKey, cfg.Addr)
	}
	h.tofu = len(h.allowed) == 0
	return h, nil
}

// presented is the accepted key as "type SHA256:fingerprint".
func (h *hostKeyChecker) presented() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.accepted == nil {
		return ""
	}
	return fingerprint(h.accepted)
}

func fingerprint(k ssh.PublicKey) string { return k.Type() + " " + ssh.FingerprintSHA256(k) }

func (h *hostKeyChecker) check(_ string, _ net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.allowed) == 0 && h.tofu {
		// Nothing to pin: the cloud could not tell us the key. Trust this
		// one, and only this one, for the rest of the build.
		h.allowed = []ssh.PublicKey{key}
		h.accepted = key
		h.log.Warn("trusting the SSH host key on first use: nothing known to pin it against",
			"addr", h.addr, "host_key", fingerprint(key))
		return nil
	}
	for _, k := range h.allowed {
		if bytes.Equal(k.Marshal(), key.Marshal()) {
			h.accepted = key
			return nil
		}
	}
	e := &HostKeyError{Addr: h.addr, Source: h.source, Offered: fingerprint(key)}
	if h.tofu {
		e.Source = "first use"
	}
	for _, k := range h.allowed {
		e.Expected = append(e.Expected, fingerprint(k))
	}
	return e
}

// Close ends the connection.
func (c *Client) Close() error { return c.c.Close() }

// Line is one line of a command's output.
type Line struct {
	Time   time.Time
	Stream string // "stdout" or "stderr"
	Text   string
}

// Batch is the lines of one stream that one read brought in. They arrived
// together, so they share one clock reading: on a fast stream, a clock read,
// a lock and a callback per line took a third of the streaming CPU (issue 8).
type Batch struct {
	Time   time.Time
	Stream string // "stdout" or "stderr"
	// Lines, in order. The slice is reused once the callback returns; the
	// strings may be kept (they share one allocation per read).
	Lines []string
}

// Output is where a command's output goes.
type Output struct {
	// Batch is called with each read's lines. Calls are serialized: lines
	// of one stream are in order, the two streams may interleave. May be nil.
	Batch func(Batch)
	// Redact is applied to each stream's bytes as they arrive, before they
	// are cut into lines and reach Batch or an ExitError's tail: a secret is
	// replaced however the network split the output, where a line longer
	// than MaxLine is cut, and when it has newlines in it. It holds back at
	// most Redact.Lookbehind bytes that may begin a secret. The zero value
	// redacts nothing.
	Redact secret.Redactor
}

// lineByLine adapts a per-line callback to Output.
func lineByLine(out func(Line)) Output {
	if out == nil {
		return Output{}
	}
	return Output{Batch: func(b Batch) {
		for _, s := range b.Lines {
			out(Line{Time: b.Time, Stream: b.Stream, Text: s})
		}
	}}
}

// ExitError is a script that ended with a non-zero exit code.
type ExitError struct {
	Code   int      // -1 when it was killed by a signal
	Signal string   // the signal, if any
	Tail   []string // the last lines of its output, both streams, in arrival order
}

func (e *ExitError) Error() string {
	how := fmt.Sprintf("exited with code %d", e.Code)
	if e.Signal != "" {
		how = "was killed by signal " + e.Signal
	}
	if len(e.Tail) == 0 {
		return "the script " + how
	}
	return fmt.Sprintf("the script %s; its last %d lines:\n%s", how, len(e.Tail), strings.Join(e.Tail, "\n"))
}

// RunScript uploads script to /tmp/imagegen-<name>.sh, runs it with bash -e
// as the logged-in user, and calls out for every line of its output (calls
// for one stream are in order; the two streams may interleave). It returns
// the exit code; a non-zero exit is also an *ExitError carrying the last lines.
// When ctx ends it returns at once, and the script's process group is killed.
func (c *Client) RunScript(ctx context.Context, name, script string, out func(Line)) (int, error) {
	return c.RunScriptTo(ctx, name, script, lineByLine(out))
}

// RunScriptTo is RunScript handing the output over in batches, one per read,
// redacted by out.Redact: the way to stream a verbose script at full speed.
func (c *Client) RunScriptTo(ctx context.Context, name, script string, out Output) (int, error) {
	path := "/tmp/imagegen-" + safeName(name) + ".sh"
	if err := c.upload(ctx, path, script); err != nil {
		if ctx.Err() == nil {
			if lost := c.lostDuring("the upload of the script"); lost != nil {
				return -1, lost
			}
		}
		return -1, fmt.Errorf("upload the script: %w", err)
	}
	return c.run(ctx, scriptCommand(path), "the script", out)
}

// scriptCommand runs the script in its own process group, with a watchdog
// that kills the group when the session's stdin closes: OpenSSH servers
// often ignore signal requests, and closing a channel does not stop the
// processes behind it. The script's own stdin is /dev/null, so a script that
// reads input (apt without -y) does not hang.
func scriptCommand(path string) string {
	return strings.Join([]string{
		// A background job's stdin is /dev/null unless redirected: keep the session's as fd 3.
		`exec 3<&0`,
		`if command -v setsid >/dev/null 2>&1; then setsid bash -e ` + path + ` </dev/null 3<&- & else bash -e ` + path + ` </dev/null 3<&- & fi`,
		`p=$!`,
		`(cat <&3 >/dev/null 2>&1; kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null) >/dev/null 2>&1 &`,
		`exec 3<&-`,
		`wait $p; rc=$?`,
		`rm -f ` + path,
		`exit $rc`,
	}, "\n")
}

// Run runs one command and reports its output like RunScript.
func (c *Client) Run(ctx context.Context, cmd string, out func(Line)) (int, error) {
	return c.run(ctx, cmd, "the command", lineByLine(out))
}

// RunTo runs one command and reports its output like RunScriptTo.
func (c *Client) RunTo(ctx context.Context, cmd string, out Output) (int, error) {
	return c.run(ctx, cmd, "the command", out)
}

// RunRaw runs cmd the way an SSH exec request does (the login shell's -c,
// through sh -c inside a watchdog) with no standard input, and copies its
// standard output and standard error to stdout and stderr byte for byte as
// they arrive: no lines, no cut, no redaction. It is for output a program
// parses (the image's manifest), never for the build log. Writes to one
// writer are sequential; the two may be concurrent.
//
// It returns the exit code, -1 when there is none (a signal, a dropped
// connection); a non-zero exit is not an error. When ctx ends it returns at
// once with ctx's error, and the command's process group is killed (the
// watchdog RunScript uses; OpenSSH servers ignore signal requests).
func (c *Client) RunRaw(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error) {
	s, err := c.start(rawCommand(cmd))
	if err != nil {
		return -1, err
	}
	done := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		wg.Go(func() { _, _ = io.Copy(stdout, s.stdout) })
		wg.Go(func() { _, _ = io.Copy(stderr, s.stderr) })
		wg.Wait()
		done <- s.sess.Wait()
	}()
	select {
	case err = <-done:
		s.stdin.Close()
		s.sess.Close()
	case <-ctx.Done():
		s.stdin.Close() // fires the watchdog
		_ = s.sess.Signal(ssh.SIGKILL)
		s.sess.Close()
		return -1, ctx.Err()
	}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.Signal() == "":
		return ee.ExitStatus(), nil
	case errors.As(err, &ee):
		return -1, nil
	default:
		return -1, err
	}
}

// rawCommand runs cmd with sh -c in its own process group, with the
// watchdog of scriptCommand: closing the session's stdin kills the group.
// cmd is passed single-quoted, so nothing in it is read by the outer shell.
func rawCommand(cmd string) string {
	// Once, in a variable: the whole line is one argument of the login
	// shell, which Linux limits to 128 KiB.
	q := "'" + strings.ReplaceAll(cmd, "'", `'\''`) + "'"
	return strings.Join([]string{
		`exec 3<&0`,
		`c=` + q,
		`if command -v setsid >/dev/null 2>&1; then setsid sh -c "$c" </dev/null 3<&- & else sh -c "$c" </dev/null 3<&- & fi`,
		`p=$!`,
		`(cat <&3 >/dev/null 2>&1; kill -KILL -$p 2>/dev/null || kill -KILL $p 2>/dev/null) >/dev/null 2>&1 &`,
		`exec 3<&-`,
		`wait $p`,
	}, "\n")
}

func (c *Client) upload(ctx context.Context, path, script string) error {
	sess, err := c.c.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	sess.Stdin = strings.NewReader(script)
	var stderr limitedBuffer
	sess.Stderr = &stderr
	err = sess.Run(fmt.Sprintf("umask 077 && cat > %s", path))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// run runs cmd in a new session, its output line by line into out, and
// returns its exit status. A canceled ctx returns at once; a connection that
// ends under it is a *LostError naming what (the script, the command).
func (c *Client) run(ctx context.Context, cmd, what string, out Output) (int, error) {
	s, err := c.start(cmd)
	if err != nil {
		if lost := c.lostDuring(what); lost != nil {
			return -1, lost
		}
		return -1, err
	}
	col := &collector{out: out, tail: newTail(TailLines)}
	done := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		wg.Go(func() { readLines(s.stdout, out.Redact, col.emit("stdout")) })
		wg.Go(func() { readLines(s.stderr, out.Redact, col.emit("stderr")) })
		wg.Wait()
		done <- s.sess.Wait()
	}()

	select {
	case err = <-done:
		s.stdin.Close()
		s.sess.Close()
	case <-ctx.Done():
		// Closing stdin fires the watchdog; the signal is for servers that
		// honour it; closing the session lets the reader goroutines end.
		// Return now: a server may hold the channel open until the
		// processes behind it exit.
		col.cancel()
		s.stdin.Close()
		_ = s.sess.Signal(ssh.SIGKILL)
		s.sess.Close()
		return -1, ctx.Err()
	}
	var ee *ssh.ExitError
	if err != nil && !errors.As(err, &ee) {
		if lost := c.lostDuring(what); lost != nil {
			return -1, lost
		}
	}
	return exitStatus(err, col)
}

// session is a started command: its SSH session and the pipes of its streams.
type session struct {
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr io.Reader
}

// start opens a session with a pipe for each stream and starts cmd in it.
func (c *Client) start(cmd string) (*session, error) {
	sess, err := c.c.NewSession()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*session, error) {
		sess.Close()
		return nil, err
	}
	s := &session{sess: sess}
	if s.stdin, err = sess.StdinPipe(); err != nil {
		return fail(err)
	}
	if s.stdout, err = sess.StdoutPipe(); err != nil {
		return fail(err)
	}
	if s.stderr, err = sess.StderrPipe(); err != nil {
		return fail(err)
	}
	if err := sess.Start(cmd); err != nil {
		return fail(err)
	}
	return s, nil
}

// collector takes the lines of both streams: into out, and the last
// TailLines of them into the tail an ExitError carries.
type collector struct {
	mu       sync.Mutex // serializes out and tail across the two streams
	out      Output
	tail     *tailRing
	canceled bool // set under mu: no line reaches out after run returns
}

// emit is readLines' callback for one stream.
func (c *collector) emit(stream string) func(time.Time, []string) {
	return func(t time.Time, lines []string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.canceled {
			return
		}
		// Only the last lines can end up in the tail.
		for _, s := range lines[max(0, len(lines)-TailLines):] {
			c.tail.add(s)
		}
		if c.out.Batch != nil {
			c.out.Batch(Batch{Time: t, Stream: stream, Lines: lines})
		}
	}
}

func (c *collector) cancel() {
	c.mu.Lock()
	c.canceled = true
	c.mu.Unlock()
}

// exitStatus turns the session's end into run's results: 0, the script's
// exit code or signal as an *ExitError with the output's tail, or why no
// exit status came.
func exitStatus(err error, col *collector) (int, error) {
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		col.mu.Lock()
		x := &ExitError{Code: ee.ExitStatus(), Tail: col.tail.lines()}
		col.mu.Unlock()
		if ee.Signal() != "" {
			x.Code, x.Signal = -1, ee.Signal()
		}
		return x.Code, x
	default:
		var missing *ssh.ExitMissingError
		if errors.As(err, &missing) {
			return -1, fmt.Errorf("the connection ended before the script reported its exit code (did the VM reboot?): %w", err)
		}
		return -1, err
	}
}

// readLines' buffer: room for an unfinished line of MaxLine bytes and more
// to read. A read fills it up to readChunk (and by at least minRead), so that
// each read's lines share a string of at most 32 KiB: a small object, which
// the heap reuses, where larger ones churn whole pages and raise the RSS.
const (
	readBuf   = MaxLine + readChunk
	readChunk = 32 << 10
	minRead   = 4 << 10
)

// readLines reads r to its end and calls emit, once per read, with the lines
// that read completed, stamped with one clock reading. Lines longer than
// MaxLine are cut into MaxLine pieces, at the same places however r's reads
// fall. With secrets to redact, the bytes read are redacted as a stream
// first, and lines are cut from what comes out. Each read's lines share one
// string. Memory is readBuf (and readChunk) plus what the callee keeps.
func readLines(r io.Reader, redact secret.Redactor, emit func(time.Time, []string)) {
	buf := make([]byte, readBuf)
	var st *secret.Stream
	var raw []byte // what a read brought, before it is redacted into buf
	if !redact.IsZero() {
		st, raw = redact.Stream(), make([]byte, readChunk)
	}
	var lines []string // reused: emit must not keep the slice
	n := 0             // bytes of buf not yet passed on: one unfinished line, at most MaxLine
	for {
		var m int
		var err error
		if st == nil {
			m, err = r.Read(buf[n:max(n+minRead, readChunk)])
			n += m
		} else {
			m, err = r.Read(raw[:max(minRead, readChunk-n)])
			out := st.Redact(buf[:n], raw[:m])
			if err != nil {
				out = st.Flush(out)
			}
			buf, n = out[:cap(out)], len(out)
		}
		if m > 0 || (err != nil && n > 0) {
			end := n // at the end, an unfinished last line goes too
			if err == nil {
				end = complete(buf[:n])
			}
			if end > 0 {
				t := time.Now()
				lines = splitLines(lines[:0], string(buf[:end]))
				if len(lines) > 0 {
					emit(t, lines)
				}
				clear(lines) // hold no chunk past its use
				n = copy(buf, buf[end:n])
			}
		}
		if err != nil {
			if err != io.EOF {
				// Drain so the remote side is never blocked on a full window.
				_, _ = io.Copy(io.Discard, r)
			}
			return
		}
	}
}

// complete returns how much of d can be passed on now: up to its last
// newline, and then whole MaxLine pieces of a line longer than MaxLine. What
// is left is at most MaxLine bytes of one line, which the next read may end.
func complete(d []byte) int {
	end := bytes.LastIndexByte(d, '\n') + 1
	if rest := len(d) - end; rest > MaxLine {
		end += (rest - 1) / MaxLine * MaxLine
	}
	return end
}

// splitLines appends chunk's lines to lines: split at newlines, with
// trailing carriage returns removed and lines longer than MaxLine cut. A
// chunk not ending in a newline (the end of the output, or pieces of a long
// line) gives its last part as a line when it is not empty.
func splitLines(lines []string, chunk string) []string {
	for len(chunk) > 0 {
		line, rest, ended := strings.Cut(chunk, "\n")
		chunk = rest
		for len(line) > MaxLine {
			lines = append(lines, strings.TrimRight(line[:MaxLine], "\r"))
			line = line[MaxLine:]
		}
		if line = strings.TrimRight(line, "\r"); ended || line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

type tailRing struct {
	buf  []string
	next int
	full bool
}

func newTail(n int) *tailRing { return &tailRing{buf: make([]string, n)} }

func (t *tailRing) add(s string) {
	t.buf[t.next] = s
	t.next = (t.next + 1) % len(t.buf)
	if t.next == 0 {
		t.full = true
	}
}

func (t *tailRing) lines() []string {
	if !t.full {
		return append([]string(nil), t.buf[:t.next]...)
	}
	return append(append([]string(nil), t.buf[t.next:]...), t.buf[:t.next]...)
}

// limitedBuffer keeps the first 4 KiB written: enough for an error message.
type limitedBuffer struct{ b bytes.Buffer }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return l.b.String() }

// safeName keeps a build id usable in a shell word and a file name.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "build"
	}
	return b.String()
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "the cloud"
	}
	return s
}
