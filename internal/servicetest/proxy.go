// This file is a TCP proxy that breaks the network between a client under test
// and a real service, the ways real networks break. (The package doc comment is
// in redis.go.)

package servicetest

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards the TCP connections made to Addr (on 127.0.0.1) to Upstream,
// and breaks them on demand: a partition (Partition), resets (Reset),
// half-open connections (HalfOpen), latency and limited bandwidth (Shape).
// Every fault applies to the connections already open as well as to new ones,
// which is where clients hang: a pooled connection, an SSH session mid-script.
//
// It is written here rather than taken from toxiproxy because toxiproxy's
// faults are not these: its reset_peer sends a clean FIN on a connection that
// was open before the toxic was added (SO_LINGER 0 is set only when a
// connection starts), and its timeout toxic drops the bytes it holds, so a
// connection that outlives the black hole carries a stream with a hole in it.
type Proxy struct {
	Addr     string // 127.0.0.1:port: what the client connects to
	Upstream string // host:port of the real service

	ln     net.Listener
	closed chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	shape  Shape
	healed chan struct{} // closed when the partition ends; nil: no partition
	conns  map[*proxyConn]struct{}

	accepted, resets, halfOpened atomic.Int64
}

// Shape is what every byte through the proxy goes through, each way.
type Shape struct {
	// Latency delays every chunk read from one side before it is written to
	// the other.
	Latency time.Duration
	// Bandwidth caps each direction of each connection, in bytes per second;
	// 0 is unlimited.
	Bandwidth int
}

// ProxyStats counts what a Proxy did.
type ProxyStats struct {
	Accepted   int64 // connections accepted
	Resets     int64 // connections reset by Reset
	HalfOpened int64 // connections abandoned by HalfOpen
}

// StartProxy listens on a free port of 127.0.0.1 and forwards to upstream,
// until the test ends.
func StartProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := NewProxy(upstream)
	if err != nil {
		t.Fatalf("servicetest: proxy to %s: %v", upstream, err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy is StartProxy for callers that close the proxy themselves.
func NewProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), Upstream: upstream, ln: ln, closed: make(chan struct{}), conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Close stops listening and resets every connection. Idempotent.
func (p *Proxy) Close() {
	select {
	case <-p.closed:
		return
	default:
	}
	close(p.closed)
	p.ln.Close()
	p.Reset()
	p.wg.Wait()
}

// Shape sets the latency and bandwidth of every connection, open or new;
// the zero Shape removes them.
func (p *Proxy) Shape(s Shape) {
	p.mu.Lock()
	p.shape = s
	p.mu.Unlock()
}

// Partition cuts the network as a partition does, until heal is called:
// nothing passes either way on open connections, and new connections are
// accepted (the kernel completes the handshake) but reach nothing. Bytes sent
// meanwhile are held, not dropped, as TCP retransmits them: when the partition
// heals, a connection that neither side gave up on carries on where it was.
// A client learns of the partition only from its own timeouts.
func (p *Proxy) Partition() (heal func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healed == nil {
		p.healed = make(chan struct{})
	}
	ch := p.healed
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.healed == ch {
			close(ch)
			p.healed = nil
		}
	}
}

// Reset resets every open connection, both sides (a TCP RST: SO_LINGER 0),
// as a middlebox losing its state or a peer crashing does. It returns how
// many it reset. New connections are not affected.
func (p *Proxy) Reset() int {
	n := 0
	for _, c := range p.open() {
		if c.reset() {
			n++
		}
	}
	p.resets.Add(int64(n))
	return n
}

// HalfOpen abandons every open connection the way a server that vanished
// does (its host powered off, a NAT that forgot the flow): the upstream side
// is reset, and the client's side stays open and silent. What the client
// sends is swallowed and nothing ever comes back, until the client gives up
// and closes it. It returns how many connections it abandoned.
func (p *Proxy) HalfOpen() int {
	n := 0
	for _, c := range p.open() {
		if c.abandon() {
			n++
		}
	}
	p.halfOpened.Add(int64(n))
	return n
}

// Open counts the connections open now (half-open ones included).
func (p *Proxy) Open() int { return len(p.open()) }

// Stats returns what the proxy did so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Accepted: p.accepted.Load(), Resets: p.resets.Load(), HalfOpened: p.halfOpened.Load()}
}

func (p *Proxy) open() []*proxyConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *Proxy) currentShape() Shape {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shape
}

// waitHealed waits while the network is partitioned; false when c ended meanwhile.
func (p *Proxy) waitHealed(c *proxyConn) bool {
	for {
		p.mu.Lock()
		ch := p.healed
		p.mu.Unlock()
		if ch == nil {
			return !c.isDone()
		}
		select {
		case <-ch:
		case <-c.done:
			return false
		}
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepted.Add(1)
		c := &proxyConn{p: p, client: client.(*net.TCPConn), done: make(chan struct{})}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		select {
		case <-p.closed: // Close's Reset may have run before c was known
			c.reset()
			return
		default:
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c.serve()
		}()
	}
}

// proxyConn is one client connection and its upstream.
type proxyConn struct {
	p      *Proxy
	client *net.TCPConn

	mu       sync.Mutex
	upstream *net.TCPConn // nil until dialed
	halfOpen bool
	finished bool
	done     chan struct{} // closed when the connection is over
}

func (c *proxyConn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *proxyConn) serve() {
	defer c.finish()
	// A partition reaches the connection before it reaches upstream.
	if !c.p.waitHealed(c) {
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.Dial("tcp", c.p.Upstream)
	if err != nil {
		// Nothing listens upstream: the client sees its connection reset.
		_ = c.client.SetLinger(0)
		return
	}
	c.mu.Lock()
	if c.finished || c.halfOpen {
		c.mu.Unlock()
		_ = up.(*net.TCPConn).SetLinger(0)
		up.Close()
		if c.halfOpen {
			c.swallow()
		}
		return
	}
	c.upstream = up.(*net.TCPConn)
	c.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { c.pump(c.client, c.upstream, true) })
	wg.Go(func() { c.pump(c.upstream, c.client, false) })
	wg.Wait()
}

// pump copies src to dst through the faults: held during a partition,
// delayed by the latency, paced by the bandwidth. fromClient says which way.
func (c *proxyConn) pump(src, dst *net.TCPConn, fromClient bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		read := time.Now()
		// What was read (and an end of stream) waits out a partition.
		if !c.p.waitHealed(c) {
			return
		}
		if c.abandoned() {
			if fromClient {
				c.swallow()
			}
			return
		}
		if n > 0 {
			if !c.send(dst, buf[:n], read) {
				if c.abandoned() && fromClient {
					c.swallow()
				}
				return
			}
		}
		if err != nil {
			if c.abandoned() {
				if fromClient {
					c.swallow()
				}
				return
			}
			if errors.Is(err, io.EOF) {
				_ = dst.CloseWrite() // pass the half-close on
				return
			}
			// src was reset (or closed by Reset): reset the other side too.
			c.reset()
			return
		}
	}
}

// send writes b to dst after the latency and at the bandwidth of the moment.
func (c *proxyConn) send(dst *net.TCPConn, b []byte, read time.Time) bool {
	sh := c.p.currentShape()
	if wait := time.Until(read.Add(sh.Latency)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-c.done:
			return false
		}
		// A partition may have begun meanwhile.
		if !c.p.waitHealed(c) {
			return false
		}
	}
	for len(b) > 0 {
		chunk := b
		var pause time.Duration
		if sh.Bandwidth > 0 {
			// Tenths of a second's worth at a time keep the pace smooth.
			step := max(1, sh.Bandwidth/10)
			chunk = b[:min(len(b), step)]
			pause = time.Duration(len(chunk)) * time.Second / time.Duration(sh.Bandwidth)
		}
		if _, err := dst.Write(chunk); err != nil {
			if !c.abandoned() {
				c.reset()
			}
			return false
		}
		b = b[len(chunk):]
		if pause > 0 {
			select {
			case <-time.After(pause):
			case <-c.done:
				return false
			}
		}
	}
	return true
}

func (c *proxyConn) abandoned() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.halfOpen
}

// swallow reads and drops what the client sends until it closes the
// connection or the proxy ends it: the client side of a half-open connection.
func (c *proxyConn) swallow() {
	_, _ = io.Copy(io.Discard, c.client)
	c.finish()
}

// reset ends the connection with a TCP RST on both sides; false when it was
// over already.
func (c *proxyConn) reset() bool {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return false
	}
	c.finished = true
	up := c.upstream
	c.mu.Unlock()
	_ = c.client.SetLinger(0)
	c.client.Close()
	if up != nil {
		_ = up.SetLinger(0)
		up.Close()
	}
	c.end()
	return true
}

// abandon resets the upstream side and leaves the client's open and silent.
func (c *proxyConn) abandon() bool {
	c.mu.Lock()
	if c.finished || c.halfOpen {
		c.mu.Unlock()
		return false
	}
	c.halfOpen = true
	up := c.upstream
	c.mu.Unlock()
	if up != nil {
		_ = up.SetLinger(0)
		up.Close()
	}
	return true
}

// finish closes both sides (gracefully, unless reset already did) and
// forgets the connection.
func (c *proxyConn) finish() {
	c.mu.Lock()
	already := c.finished
	c.finished = true
	up := c.upstream
	c.mu.Unlock()
	if !already {
		c.client.Close()
		if up != nil {
			up.Close()
		}
	}
	c.end()
}

func (c *proxyConn) end() {
	c.p.mu.Lock()
	if _, ok := c.p.conns[c]; ok {
		delete(c.p.conns, c)
		close(c.done)
	}
	c.p.mu.Unlock()
}
