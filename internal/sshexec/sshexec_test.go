package sshexec

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/internal/servicetest"
)

func connect(t *testing.T, s *servicetest.SSHD, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test", Timeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := Connect(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// collect gathers lines per stream, and both streams in arrival order.
type collect struct {
	mu     sync.Mutex
	stream map[string][]string
	all    []string
}

func (c *collect) add(l Line) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil {
		c.stream = map[string][]string{}
	}
	if l.Time.IsZero() {
		panic("line without a timestamp")
	}
	c.stream[l.Stream] = append(c.stream[l.Stream], l.Text)
	c.all = append(c.all, l.Text)
}

func TestRunScript(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)

	seq := func(prefix string, from, to int) []string {
		var out []string
		for i := from; i <= to; i++ {
			out = append(out, fmt.Sprintf("%s%d", prefix, i))
		}
		return out
	}
	tests := []struct {
		name       string
		script     string
		wantCode   int
		wantStdout []string
		wantStderr []string
		wantTail   []string // for a non-zero exit
	}{
		{
			name:       "both streams in order, exit 0",
			script:     "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done\nprintf 'no newline at end'",
			wantStdout: append(seq("out", 1, 200), "no newline at end"),
			wantStderr: seq("err", 1, 200),
		},
		{
			name:       "runs as the user, with bash -e semantics",
			script:     "id -un\nfalse || echo tolerated\necho \"$0\" | grep -q '^/tmp/imagegen-' && echo uploaded\nfalse\necho not reached",
			wantCode:   1,
			wantStdout: []string{s.User, "tolerated", "uploaded"},
			wantTail:   []string{s.User, "tolerated", "uploaded"},
		},
		{
			name:       "non-zero exit keeps the last 20 lines",
			script:     "for i in $(seq 1 30); do echo line$i; done\nexit 3",
			wantCode:   3,
			wantStdout: seq("line", 1, 30),
			wantTail:   seq("line", 11, 30),
		},
		{
			name:       "empty lines and carriage returns",
			script:     "printf 'a\\r\\n\\nb\\n'",
			wantStdout: []string{"a", "", "b"},
		},
		{
			name:       "stdin is empty, so reading input does not hang",
			script:     "read -r x || echo eof",
			wantStdout: []string{"eof"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got collect
			code, err := c.RunScript(context.Background(), fmt.Sprintf("t%d", i), tt.script, got.add)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (err %v)", code, tt.wantCode, err)
			}
			if tt.wantCode == 0 && err != nil {
				t.Fatalf("err %v", err)
			}
			if tt.wantCode != 0 {
				var ee *ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("err %v, want *ExitError", err)
				}
				if ee.Code != tt.wantCode || !equal(ee.Tail, tt.wantTail) {
					t.Errorf("ExitError code %d tail %q, want %d %q", ee.Code, ee.Tail, tt.wantCode, tt.wantTail)
				}
				if want := fmt.Sprintf("exited with code %d", tt.wantCode); !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
			if !equal(got.stream["stdout"], tt.wantStdout) {
				t.Errorf("stdout %q, want %q", got.stream["stdout"], tt.wantStdout)
			}
			if !equal(got.stream["stderr"], tt.wantStderr) {
				t.Errorf("stderr %q, want %q", got.stream["stderr"], tt.wantStderr)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLongLinesAreSplit(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)
	var got collect
	// 200,000 bytes without a newline, then a short line.
	code, err := c.RunScript(context.Background(), "long", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo short", got.add)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	lines := got.stream["stdout"]
	total := 0
	for _, l := range lines[:len(lines)-1] {
		if len(l) > MaxLine {
			t.Errorf("a line of %d bytes passed, max %d", len(l), MaxLine)
		}
		total += len(l)
	}
	if total != 200000 || lines[len(lines)-1] != "short" {
		t.Errorf("got %d bytes in %d lines, last %q; want 200000 bytes then \"short\"", total, len(lines), lines[len(lines)-1])
	}
}

func TestHugeOutputBoundedMemory(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)

	const size = 50 << 20
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	var bytesSeen, lines atomic.Int64
	start := time.Now()
	// 50 MiB as 100-byte lines (99 characters and a newline) on stdout, and
	// some long lines on stderr.
	script := fmt.Sprintf("yes %s | head -c %d\nhead -c 1000000 /dev/zero | tr '\\0' y >&2", strings.Repeat("z", 99), size)
	code, err := c.RunScript(context.Background(), "huge", script, func(l Line) {
		bytesSeen.Add(int64(len(l.Text)))
		lines.Add(1)
	})
	close(stop)
	wg.Wait()
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v", code, err)
	}
	wantBytes := int64(size/100*99 + 1000000)
	if got := bytesSeen.Load(); got != wantBytes {
		t.Errorf("saw %d bytes of text, want %d", got, wantBytes)
	}
	const limit = 64 << 20
	t.Logf("50 MiB in %d lines, %s, peak HeapInuse %.1f MiB", lines.Load(), time.Since(start).Round(time.Millisecond), float64(peak.Load())/(1<<20))
	if peak.Load() > limit {
		t.Errorf("peak HeapInuse %d bytes, want < %d", peak.Load(), limit)
	}
}

func TestHostKeys(t *testing.T) {
	s := servicetest.StartSSHD(t)
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := ssh.NewSignerFromKey(other)
	if err != nil {
		t.Fatal(err)
	}
	wrong := string(ssh.MarshalAuthorizedKey(otherSigner.PublicKey()))

	tests := []struct {
		name     string
		hostKeys []string
		firstUse bool
		wantErr  []string // substrings of the error; none for a success
		wantLog  string
	}{
		{"pinned key accepted", []string{s.HostKey}, false, nil, ""},
		{"one of several pinned keys", []string{wrong, s.HostKey}, false, nil, ""},
		{"wrong pinned key refused", []string{wrong}, false, []string{"host key mismatch", ssh.FingerprintSHA256(otherSigner.PublicKey()), ssh.FingerprintSHA256(s.HostPublic), "injected"}, ""},
		{"no key, first use asked for: trusted, and said", nil, true, nil, "trusting the SSH host key on first use"},
		{"no key, first use not asked for: refused", nil, false, []string{"ssh: no host key to pin for " + s.Addr + ", and trusting the first key seen was not asked for"}, ""},
		{"unparsable key", []string{"ssh-ed25519 notbase64!"}, false, []string{"host key"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			start := time.Now()
			c, err := Connect(context.Background(), Config{
				Addr: s.Addr, User: s.User, Signer: s.ClientSigner,
				HostKeys: tt.hostKeys, HostKeySource: "injected", TrustFirstUse: tt.firstUse,
				Timeout: 10 * time.Second,
				Log:     slog.New(slog.NewTextHandler(&logBuf, nil)),
			})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				defer c.Close()
				if _, err := c.Run(context.Background(), "true", nil); err != nil {
					t.Fatalf("run: %v", err)
				}
			} else {
				if err == nil {
					c.Close()
					t.Fatal("connected; want an error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				// A mismatch is not retried: it is the wrong machine.
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("took %s to refuse", d)
				}
			}
			if tt.wantErr == nil && !strings.Contains(logBuf.String(), `msg="SSH is up" addr=`+s.Addr+` user=`+s.User+` host_key="ssh-ed25519 `+ssh.FingerprintSHA256(s.HostPublic)+`"`) {
				t.Errorf("log %q does not say which host key the server presented", logBuf.String())
			}
			if tt.wantLog != "" {
				if !strings.Contains(logBuf.String(), tt.wantLog) || !strings.Contains(logBuf.String(), ssh.FingerprintSHA256(s.HostPublic)) {
					t.Errorf("log %q lacks %q and the fingerprint", logBuf.String(), tt.wantLog)
				}
			} else if strings.Contains(logBuf.String(), "first use") {
				t.Errorf("log mentions trust on first use with pinned keys: %q", logBuf.String())
			}
		})
	}
}

func TestConnectRetriesUntilSSHAnswers(t *testing.T) {
	s := servicetest.StartSSHD(t)
	// A proxy that refuses connections at first, then forwards to sshd: like
	// a VM whose sshd starts late.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var ready atomic.Bool
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			if !ready.Load() {
				conn.Close()
				continue
			}
			go proxy(conn, s.Addr)
		}
	}()
	var progress atomic.Int32
	time.AfterFunc(700*time.Millisecond, func() { ready.Store(true) })
	start := time.Now()
	c, err := Connect(context.Background(), Config{
		Addr: l.Addr().String(), User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey},
		Timeout: 10 * time.Second, RetryEvery: 200 * time.Millisecond,
		Progress: func(elapsed time.Duration, lastErr error) {
			if lastErr == nil || elapsed <= 0 {
				t.Errorf("progress(%s, %v)", elapsed, lastErr)
			}
			progress.Add(1)
		},
	})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	c.Close()
	if progress.Load() < 2 {
		t.Errorf("progress called %d times, want several", progress.Load())
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 5*time.Second {
		t.Errorf("connected after %s", d)
	}
}

func proxy(a net.Conn, addr string) {
	defer a.Close()
	b, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = copyConn(b, a); done <- struct{}{} }()
	go func() { _, _ = copyConn(a, b); done <- struct{}{} }()
	<-done
}

func copyConn(dst, src net.Conn) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if err != nil {
			return n, err
		}
	}
}

func TestConnectGivesUp(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	_, signer, _ := func() (any, ssh.Signer, error) {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		s, err := ssh.NewSignerFromKey(k)
		return nil, s, err
	}()
	tests := []struct {
		name    string
		timeout time.Duration
		cancel  time.Duration
		wantErr string
	}{
		{"timeout", 600 * time.Millisecond, 0, "did not answer within"},
		{"canceled", 10 * time.Second, 300 * time.Millisecond, "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel > 0 {
				time.AfterFunc(tt.cancel, cancel)
			}
			start := time.Now()
			_, err := Connect(ctx, Config{Addr: addr, User: "u", Signer: signer, TrustFirstUse: true, Timeout: tt.timeout, RetryEvery: 100 * time.Millisecond})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestCancelStopsScriptPromptly(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var got collect
	started := make(chan struct{})
	var once sync.Once
	var canceledAt atomic.Int64
	go func() {
		<-started
		canceledAt.Store(time.Now().UnixNano())
		cancel()
	}()
	code, err := c.RunScript(ctx, "cancel", "echo started\nsleep 61.25\necho not reached", func(l Line) {
		got.add(l)
		once.Do(func() { close(started) })
	})
	if !errors.Is(err, context.Canceled) || code != -1 {
		t.Fatalf("code %d err %v, want -1 and context.Canceled", code, err)
	}
	if d := time.Since(time.Unix(0, canceledAt.Load())); d > 2*time.Second {
		t.Errorf("took %s to return after cancel", d)
	}
	// The script's processes are gone, and the connection still works.
	deadline := time.Now().Add(3 * time.Second)
	for {
		// /proc rather than pgrep: procps may be absent on a CI machine.
		code, err := c.Run(context.Background(), `for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -q '^sleep 61[.]25'`, nil)
		if code == 1 {
			break
		}
		if code != 0 {
			t.Fatalf("looking for the process: code %d err %v", code, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the canceled script's sleep still runs on the server")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunRaw: output arrives byte for byte (no line handling: NULs, invalid
// UTF-8, no final newline, quotes in the command), the exit code is not an
// error, and a canceled command's processes are killed.
func TestRunRaw(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, nil)
	var out, errOut bytes.Buffer
	code, err := c.RunRaw(context.Background(), `printf 'a\000b\377c'; printf "it's" >&2; exit 3`, &out, &errOut)
	if err != nil || code != 3 {
		t.Fatalf("code %d, err %v; want 3, nil", code, err)
	}
	if out.String() != "a\x00b\xffc" || errOut.String() != "it's" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}

	// Canceled: it returns at once, and the command's sleep is gone.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	code, err = c.RunRaw(ctx, "echo started; sleep 61.75; echo not reached", io.Discard, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) || code != -1 {
		t.Fatalf("code %d err %v, want -1 and the deadline", code, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s to return", d)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, err := c.Run(context.Background(), `for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -q '^sleep 61[.]75'`, nil)
		if code == 1 {
			break
		}
		if code != 0 {
			t.Fatalf("looking for the process: code %d err %v", code, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the canceled command's sleep still runs on the server")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
