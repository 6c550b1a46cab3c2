package configtest

import (
	"runtime"
	"testing"
)

func TestConfig(t *testing.T) {
	cfg := Config(t, "redis: redis://127.0.0.1:1/0\ngithub: {token: t, webhook_secret: whsec-0123456789}\nclouds:\n  sim: {type: simulated, launch_delay: 1s}\n")
	if cfg.Clouds["sim"] == nil || cfg.Clouds["sim"].Type != "simulated" {
		t.Errorf("clouds: %+v", cfg.Clouds)
	}
}

// A config the service cannot run on fails the test that asked for it.
func TestConfigRefuses(t *testing.T) {
	for name, yml := range map[string]string{
		"unknown key":       "redis: redis://127.0.0.1:1/0\ngithub: {token: t, webhook_secret: whsec-0123456789}\nclouds:\n  sim: {type: simulated, colour: blue}\n",
		"no webhook secret": "redis: redis://127.0.0.1:1/0\ngithub: {token: t}\nclouds:\n  sim: {type: simulated}\n",
	} {
		t.Run(name, func(t *testing.T) {
			ft := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() { // Fatalf ends the goroutine it runs in
				defer close(done)
				Config(ft, yml)
			}()
			<-done
			if ft.msg == "" {
				t.Errorf("Config accepted %q", yml)
			}
		})
	}
}

type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}
