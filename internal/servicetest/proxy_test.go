package servicetest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads, and reports on
// ended how each connection ended.
func echoServer(t *testing.T) (addr string, ended <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, err := io.Copy(c, c)
				ch <- err
			}()
		}
	}()
	return ln.Addr().String(), ch
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within d.
func roundTrip(c net.Conn, msg []byte, d time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(d))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func TestProxyForwards(t *testing.T) {
	up, ended := echoServer(t)
	p := StartProxy(t, up)
	c := dialProxy(t, p)
	msg := bytes.Repeat([]byte("0123456789"), 20000)
	if err := roundTrip(c, msg, 5*time.Second); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	// A half-close reaches upstream, and upstream's close comes back.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("upstream saw %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the half-close did not reach upstream")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("after upstream closed: read %d, %v; want EOF", n, err)
	}
	if s := p.Stats(); s.Accepted != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestProxyPartition: nothing passes during a partition, on open and new
// connections alike, and the bytes held come through intact after it.
func TestProxyPartition(t *testing.T) {
	up, _ := echoServer(t)
	p := StartProxy(t, up)
	old := dialProxy(t, p)
	if err := roundTrip(old, []byte("before"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	heal := p.Partition()
	fresh := dialProxy(t, p) // the handshake completes; nothing else does
	for name, c := range map[string]net.Conn{"open": old, "new": fresh} {
		if err := roundTrip(c, []byte("during "+name), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s connection during the partition: %v, want a timeout", name, err)
		}
	}
	heal()
	for name, c := range map[string]net.Conn{"open": old, "new": fresh} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len("during "+name))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "during "+name {
			t.Errorf("%s connection after the partition: %q, %v; want the held bytes", name, got, err)
		}
		if err := roundTrip(c, []byte("after"), 5*time.Second); err != nil {
			t.Errorf("%s connection after the partition: %v", name, err)
		}
	}
}

func TestProxyReset(t *testing.T) {
	up, ended := echoServer(t)
	p := StartProxy(t, up)
	c := dialProxy(t, p)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset reset %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after Reset: %v, want connection reset by peer", err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("upstream saw %v, want connection reset by peer", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never saw the reset")
	}
	// New connections are not affected.
	if err := roundTrip(dialProxy(t, p), []byte("again"), 5*time.Second); err != nil {
		t.Errorf("new connection after Reset: %v", err)
	}
}

func TestProxyHalfOpen(t *testing.T) {
	up, ended := echoServer(t)
	p := StartProxy(t, up)
	c := dialProxy(t, p)
	if err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.HalfOpen(); n != 1 {
		t.Fatalf("HalfOpen abandoned %d connections, want 1", n)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream's side was not closed")
	}
	// The client can still write, and hears nothing: not even an end.
	if err := roundTrip(c, []byte("anyone?"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("half-open connection: %v, want a timeout", err)
	}
	if p.Open() != 1 {
		t.Errorf("%d connections open, want the half-open one", p.Open())
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.Open() != 0 {
		t.Errorf("the half-open connection outlived its client's close")
	}
	if err := roundTrip(dialProxy(t, p), []byte("again"), 5*time.Second); err != nil {
		t.Errorf("new connection after HalfOpen: %v", err)
	}
}

func TestProxyShape(t *testing.T) {
	up, _ := echoServer(t)
	p := StartProxy(t, up)
	c := dialProxy(t, p)
	p.Shape(Shape{Latency: 100 * time.Millisecond})
	start := time.Now()
	if err := roundTrip(c, []byte("ping"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Errorf("round trip took %s with 100ms latency each way", rtt)
	}
	p.Shape(Shape{Bandwidth: 20 << 10})
	start = time.Now()
	if err := roundTrip(c, bytes.Repeat([]byte("b"), 10<<10), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// 10 KiB each way at 20 KiB/s: at least a quarter of a second one way.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("10 KiB took %s at 20 KiB/s", d)
	}
	p.Shape(Shape{})
	start = time.Now()
	if err := roundTrip(c, bytes.Repeat([]byte("c"), 10<<10), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("unshaped, 10 KiB took %s", d)
	}
}
