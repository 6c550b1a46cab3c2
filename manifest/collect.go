package manifest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Runner runs one command on the machine a manifest describes. The caller
// adapts its SSH client (or anything else) to it.
type Runner interface {
	// Run runs cmd, a POSIX sh script of several lines, the way an SSH exec
	// request does (the login shell's -c, which must be Bourne-compatible:
	// sh, bash, dash, ash), with no standard input. It copies the command's
	// standard output and standard error to stdout and stderr as they
	// arrive, byte for byte: no line splitting, no trimming, no redaction.
	// Writes to one writer are sequential; the two may be concurrent.
	//
	// Run returns when the command has ended and its output is copied, or
	// soon after ctx ends (then the command is stopped as well as the runner
	// can, and err is ctx's error or wraps it). Collect ends ctx itself when
	// the output passes its cap. code is the exit status, -1 when unknown;
	// a non-zero status is not an error.
	Run(ctx context.Context, cmd string, stdout, stderr io.Writer) (code int, err error)
}

// Defaults for Options' zero values.
const (
	DefaultTimeout     = 2 * time.Minute
	DefaultMaxOutput   = 16 << 20 // bytes of standard output read
	DefaultMaxPackages = 200_000
	DefaultMaxFiles    = 10_000
	// MaxFilePatterns is the most patterns Options.Files may hold.
	MaxFilePatterns = 100
	// maxPatternBytes bounds the patterns together: they go into the
	// command line of one SSH exec request.
	maxPatternBytes = 64 << 10
)

// Options bound one collection.
type Options struct {
	// Files are absolute paths or globs (*, ?, [...]) expanded on the
	// machine: /etc/ssh/sshd_config, /usr/local/bin/*. Each regular file they
	// match is hashed with sha256. See CheckFilePattern.
	Files []string

	Timeout     time.Duration // the whole collection; default DefaultTimeout
	MaxOutput   int64         // bytes of output read; default DefaultMaxOutput
	MaxPackages int           // packages kept; default DefaultMaxPackages
	MaxFiles    int           // files hashed; default DefaultMaxFiles

	Now func() time.Time // the Collected time; default time.Now
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = DefaultMaxOutput
	}
	if o.MaxPackages <= 0 {
		o.MaxPackages = DefaultMaxPackages
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// CheckFilePattern says whether p can be a Files entry: an absolute path of
// at most 4096 bytes made of letters, digits and . _ / + @ % : , = ~ -, with
// the glob characters * ? [ ]. No spaces, quotes, $ or other characters the
// shell would read: the pattern is written into the script unquoted so that
// the machine's shell expands it. Spec validation should call it.
func CheckFilePattern(p string) error {
	if p == "" || p[0] != '/' {
		return fmt.Errorf("manifest file %q: not an absolute path", p)
	}
	if len(p) > 4096 {
		return fmt.Errorf("manifest file %.40q...: longer than 4096 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !isPatternByte(c) {
			return fmt.Errorf("manifest file %q: character %q is not allowed (letters, digits, . _ / + @ %% : , = ~ - and the globs * ? [ ])", p, rune(c))
		}
	}
	return nil
}

func isPatternByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._/+@%:,=~-*?[]", c) >= 0
}

// Collect runs the collection script through r, in one command, and parses
// what it printed. It always returns within about opts.Timeout, reads at most
// opts.MaxOutput bytes and never panics on what the machine prints.
//
// The contract with the caller:
//   - a non-nil error means there is no manifest (the runner failed before
//     the script printed anything, the output was not the script's, or ctx
//     ended). The build goes on: the caller reports it as a warning, or
//     fails the build when the spec says manifest: {required: true}.
//   - a manifest with Partial set is usable but incomplete (output over the
//     cap, the timeout, a package manager that failed, lines dropped as
//     garbage): its Notes say what is missing. Treat it like an error for
//     required manifests if that is the policy; drift marks it.
//   - Provenance is left empty for the caller to fill in.
func Collect(ctx context.Context, r Runner, opts Options) (*Manifest, error) {
	opts = opts.withDefaults()
	if len(opts.Files) > MaxFilePatterns {
		return nil, fmt.Errorf("manifest: %d file patterns, at most %d", len(opts.Files), MaxFilePatterns)
	}
	total := 0
	for _, p := range opts.Files {
		if err := CheckFilePattern(p); err != nil {
			return nil, err
		}
		total += len(p)
	}
	if total > maxPatternBytes {
		return nil, fmt.Errorf("manifest: the file patterns add up to %d bytes, at most %d", total, maxPatternBytes)
	}
	marker, err := newMarker()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	script := buildScript(marker, opts)

	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	stdout := &capWriter{max: opts.MaxOutput, full: cancel}
	stderr := &capWriter{max: 4 << 10}
	code, runErr := runSafely(runCtx, r, script, stdout, stderr)
	out, overflow := stdout.close()
	errOut, _ := stderr.close()

	if ctx.Err() != nil {
		return nil, fmt.Errorf("manifest: %w", ctx.Err())
	}
	m, st := parse(out, marker, opts)
	if !st.begun {
		return nil, collectError(runErr, code, errOut, runCtx.Err(), opts.Timeout)
	}
	m.Collected = opts.Now().UTC().Truncate(time.Second)
	if !st.done {
		m.Partial = true
		switch {
		case overflow:
			m.note(fmt.Sprintf("the output passed the limit of %s and was cut: what came after it is missing", sizeString(opts.MaxOutput)))
		case errors.Is(runCtx.Err(), context.DeadlineExceeded):
			m.note(fmt.Sprintf("the collection did not finish within %s: what came after is missing", opts.Timeout))
		case runErr != nil:
			m.note("the collection ended early: " + quoteSnippet(runErr.Error()))
		default:
			m.note(fmt.Sprintf("the collection script ended early (exit code %d)", code))
		}
		if first := firstLine(errOut); first != "" {
			m.note("its standard error began with " + quoteSnippet(first))
		}
	} else if st.failed && len(errOut) > 0 {
		m.note("standard error began with " + quoteSnippet(firstLine(errOut)))
	}
	return m, nil
}

// runSafely calls r.Run, turning a panic in the runner into an error.
func runSafely(ctx context.Context, r Runner, script string, stdout, stderr io.Writer) (code int, err error) {
	defer func() {
		if v := recover(); v != nil {
			code, err = -1, fmt.Errorf("runner panicked: %v", v)
		}
	}()
	return r.Run(ctx, script, stdout, stderr)
}

func collectError(runErr error, code int, errOut []byte, runCtxErr error, timeout time.Duration) error {
	var why string
	switch {
	case errors.Is(runCtxErr, context.DeadlineExceeded):
		why = fmt.Sprintf("nothing was printed within %s", timeout)
	case runErr != nil:
		return fmt.Errorf("manifest: running the collection script: %w", runErr)
	default:
		why = fmt.Sprintf("the collection script printed no manifest (exit code %d)", code)
	}
	if first := firstLine(errOut); first != "" {
		why += "; standard error: " + quoteSnippet(first)
	}
	return errors.New("manifest: " + why)
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(s)
}

func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// newMarker is the prefix of the script's section lines. It is random so
// that no package name, file or stray output can end a section by accident.
// (A machine bent on lying can still read its own script: a manifest is what
// the machine says.)
func newMarker() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "@@imagegen-manifest-" + hex.EncodeToString(b[:]) + "@@", nil
}

// capWriter keeps the first max bytes written to it and calls full, once,
// when more arrive. Writes after close are dropped: a runner that goes on
// writing after Run returned cannot race with the parser.
type capWriter struct {
	mu       sync.Mutex
	max      int64
	buf      []byte
	overflow bool
	closed   bool
	full     func()
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.overflow {
		return len(p), nil
	}
	room := w.max - int64(len(w.buf))
	if int64(len(p)) > room {
		w.buf = append(w.buf, p[:room]...)
		w.overflow = true
		if w.full != nil {
			w.full()
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *capWriter) close() ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return w.buf, w.overflow
}
