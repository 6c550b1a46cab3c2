package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestStoredLogHoldsNoSecret: along the worker's path (a script on a real
// sshd, sshexec, the builder, the log sink, Redis), every kind of secret the
// service holds, printed by the script whole, in two writes a moment apart,
// across the 64 KiB cut of a long line, and with newlines in it (a key),
// is not in the stored log, whether its lines are read apart, joined with
// newlines, or joined as the cut pieces they are; other lines are as printed.
func TestStoredLogHoldsNoSecret(t *testing.T) {
	secrets := map[string]string{
		"api token":      "tok_Z2l2ZW1lYWxsdGhlc2VjcmV0cw",
		"webhook secret": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
		"github token":   "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
		"redis password": "S3cr3t-pw-xyz",
		"cloud password": "hunter2-very-secret",
		"key":            "-----BEGIN KEY-----\nMIIE0123\n-----END KEY-----",
	}
	var all []secret.String
	var script strings.Builder
	for name, s := range secrets {
		all = append(all, secret.New(s))
		half := len(s) / 2
		// Whole; in two writes; across the 64 KiB cut (at half its first
		// half), the rest and the newline later.
		fmt.Fprintf(&script, "printf '%%s: %%s\\n' '%s' '%s'\n", name, s)
		fmt.Fprintf(&script, "printf '%%s' '%s'; sleep 0.2; printf '%%s\\n' '%s'\n", s[:half], s[half:])
		fmt.Fprintf(&script, "head -c %d /dev/zero | tr '\\0' .; printf '%%s' '%s'; sleep 0.2; printf '%%s\\n' '%s'\n", 64<<10-half/2, s[:half], s[half:])
	}
	script.WriteString("echo a clean line\n")

	sshd := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: sshd.Addr, User: sshd.User, Signer: sshd.ClientSigner, HostKeys: []string{sshd.HostKey}, HostKeySource: "test"}
	s, _ := newStore(t, time.Hour, 4<<20)
	sink := s.newLogSink(context.Background(), "b1", "sim", nil, secret.NewRedactor(all...))
	r := builder.Run(context.Background(), builder.Job{
		Build: "b1", CloudName: "sim", Cloud: simulated.New(simulated.Options{SSH: ep}), Repo: "octo/gens",
		Spec: &spec.Spec{Name: "leak", Script: script.String(),
			Clouds: map[string]spec.CloudSpec{"sim": {Image: "debian-12", SSHUser: sshd.User}}, Digest: strings.Repeat("ab", 32)},
		SSHTimeout: 10 * time.Second, Secrets: all, Observer: phaseless{sink},
	})
	sink.Close()
	if r.State != builder.StateSucceeded {
		t.Fatalf("state %s: %v", r.State, r.Err)
	}
	lines, dropped, err := s.Log(context.Background(), "b1", "sim")
	if err != nil || dropped != 0 {
		t.Fatalf("%d lines, %d dropped, err %v", len(lines), dropped, err)
	}
	var stdout []string
	for _, l := range lines {
		if l.Stream == builder.StreamStdout {
			stdout = append(stdout, l.Text)
		}
	}
	joined := strings.Join(stdout, "\n")
	for name, s := range secrets {
		if strings.Contains(joined, s) || strings.Contains(strings.Join(stdout, ""), s) {
			t.Errorf("the %s is in the stored log", name)
		}
		if n := strings.Count(joined, name+": [redacted]"); n != 1 {
			t.Errorf("%q is in the log %d times, want once", name+": [redacted]", n)
		}
	}
	// Counted in the lines joined as they were cut: the cut may split a [redacted].
	if n := strings.Count(strings.Join(stdout, ""), "[redacted]"); n != 3*len(secrets) {
		t.Errorf("%d [redacted] in the log, want %d", n, 3*len(secrets))
	}
	if stdout[len(stdout)-1] != "a clean line" {
		t.Errorf("the last line is %q", stdout[len(stdout)-1])
	}
}

// phaseless is the worker's build observer without the progress reports.
type phaseless struct{ *LogSink }

func (phaseless) Phase(string, builder.Phase, time.Time) {}
