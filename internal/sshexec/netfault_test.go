package sshexec

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestConnectionLost breaks the network under a running script, through a
// fault-injecting proxy in front of a real sshd: a reset, a server that
// vanishes (half-open: only keepalives can tell), a reset before the upload.
// Each ends the script at once with an error that says "connection lost"
// and where; a partition shorter than the keepalive timeout is ridden out.
func TestConnectionLost(t *testing.T) {
	s := servicetest.StartSSHD(t)
	tests := []struct {
		name   string
		before func(*servicetest.Proxy) // breaks the connection before the script
		during func(*servicetest.Proxy) // breaks it once the script has printed
		// want is in the error; "" wants the script to succeed.
		want   []string
		within time.Duration // the script's end after the fault
	}{
		{
			name:   "reset during the script",
			during: func(p *servicetest.Proxy) { p.Reset() },
			want:   []string{"connection lost to ", " during the script", "connection reset by peer"},
			within: 3 * time.Second,
		},
		{
			name:   "server gone silent during the script",
			during: func(p *servicetest.Proxy) { p.HalfOpen() },
			want:   []string{"connection lost to ", " during the script", "answered no keepalive for 600ms"},
			within: 3 * time.Second,
		},
		{
			name:   "reset before the upload",
			before: func(p *servicetest.Proxy) { p.Reset() },
			want:   []string{"connection lost to ", " during the upload of the script"},
			within: 3 * time.Second,
		},
		{
			name: "partition shorter than the keepalive timeout",
			during: func(p *servicetest.Proxy) {
				heal := p.Partition()
				time.Sleep(300 * time.Millisecond)
				heal()
			},
			within: 3 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := servicetest.StartProxy(t, s.Addr)
			c := connect(t, s, func(c *Config) {
				c.Addr = p.Addr
				c.KeepAlive, c.KeepAliveTimeout = 150*time.Millisecond, 600*time.Millisecond
			})
			if tc.before != nil {
				tc.before(p)
			}
			var faultAt time.Time
			var once sync.Once
			var mu sync.Mutex
			script := "echo started\nsleep 1.5\necho finished"
			code, err := c.RunScript(context.Background(), "lost", script, func(l Line) {
				once.Do(func() {
					mu.Lock()
					faultAt = time.Now()
					mu.Unlock()
					if tc.during != nil {
						go tc.during(p)
					}
				})
			})
			mu.Lock()
			if faultAt.IsZero() {
				faultAt = time.Now()
			}
			took := time.Since(faultAt)
			mu.Unlock()
			if len(tc.want) == 0 {
				if err != nil || code != 0 {
					t.Fatalf("code %d, err %v; want the script to succeed", code, err)
				}
				return
			}
			if !errors.Is(err, ErrConnectionLost) || code != -1 {
				t.Fatalf("code %d, err %v; want -1 and a lost connection", code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), p.Addr) {
				t.Errorf("error %q does not name the address %s", err, p.Addr)
			}
			if took > tc.within {
				t.Errorf("the script ended %s after the fault, want within %s", took, tc.within)
			}
		})
	}
}

// TestKeepAliveQuiet: keepalives do not disturb a long quiet script.
func TestKeepAliveQuiet(t *testing.T) {
	s := servicetest.StartSSHD(t)
	c := connect(t, s, func(c *Config) { c.KeepAlive, c.KeepAliveTimeout = 50*time.Millisecond, 500*time.Millisecond })
	if code, err := c.RunScript(context.Background(), "quiet", "sleep 1\necho done", nil); code != 0 || err != nil {
		t.Fatalf("code %d, err %v", code, err)
	}
}
