package ec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestHostKeyPolicy: each host_key policy with the build's key injected,
// only a key on the console, and no key at all. Only first-use ever leaves
// the endpoint without a key, and then says so; the others pin a key or fail
// with a message that says what to set.
func TestHostKeyPolicy(t *testing.T) {
	no := false
	const (
		consoleTimeout = 200 * time.Millisecond // what first-use waits
		sshTimeout     = time.Second            // what console waits
	)
	type scenario int
	const (
		injected  scenario = iota // inject_host_key: true (the default), the build brings a key
		onConsole                 // inject_host_key: false, cloud-init prints the image's key
		noKey                     // inject_host_key: false, nothing on the console
	)
	tests := []struct {
		name     string
		policy   clouds.HostKeyPolicy // "" is the default
		scenario scenario
		// wantSource is where the pinned keys come from; "" wants the launch to fail with wantErr.
		wantSource string
		wantErr    string // with {id} for the instance id
		wantLog    string // in the launch's log
	}{
		{name: "require, injected", policy: clouds.HostKeyRequire, scenario: injected, wantSource: "injected"},
		{name: "console, injected", policy: clouds.HostKeyConsole, scenario: injected, wantSource: "injected"},
		{name: "default is console, injected", scenario: injected, wantSource: "injected"},
		{name: "first-use, injected", policy: clouds.HostKeyFirstUse, scenario: injected, wantSource: "injected"},

		{name: "console, on the console", policy: clouds.HostKeyConsole, scenario: onConsole, wantSource: "console"},
		{name: "first-use, on the console", policy: clouds.HostKeyFirstUse, scenario: onConsole, wantSource: "console"},

		{name: "console, no key", policy: clouds.HostKeyConsole, scenario: noKey,
			wantErr: "no SSH host key for instance {id} on the console after 1s; set host_key: first-use to trust the first key seen (not recommended) or inject_host_key: true"},
		{name: "default is console, no key", scenario: noKey,
			wantErr: "no SSH host key for instance {id} on the console after 1s; set host_key: first-use to trust the first key seen (not recommended) or inject_host_key: true"},
		{name: "first-use, no key", policy: clouds.HostKeyFirstUse, scenario: noKey, wantSource: "first-use",
			wantLog: `level=WARN msg="no SSH host key for instance {id} on the console after 200ms; host_key: first-use, so the first key the server presents will be trusted (not recommended)"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := ec2test.Options{}
			if tc.scenario != noKey {
				opts.ConsoleHostKey = authorizedKey(t)
			}
			f := newFake(t, opts)
			cfg := ec2.Config{HostKey: tc.policy, ConsoleTimeout: consoleTimeout}
			if tc.scenario != injected {
				cfg.InjectHostKey = &no
			}
			c := open(t, f, cfg)
			id := "hk-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			req, logs := launchReq(t, id)
			req.SSHTimeout = sshTimeout
			inst := &clouds.Instance{Build: id}
			defer func() {
				terminate(t, c, inst)
				assertClean(t, f, id)
			}()
			err := c.Launch(context.Background(), req, inst)
			expand := func(s string) string { return strings.ReplaceAll(s, "{id}", inst.ID) }
			if tc.wantSource == "" {
				if err == nil || err.Error() != expand(tc.wantErr) {
					t.Fatalf("Launch = %v\nwant %q", err, expand(tc.wantErr))
				}
				if !errors.Is(err, clouds.ErrNoHostKey) {
					t.Errorf("the error is not ErrNoHostKey: %v", err)
				}
				if inst.SSH != nil {
					t.Errorf("a failed launch left an endpoint: %+v", inst.SSH)
				}
				return
			}
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			checkUserData(t, f.UserData(inst.ID), map[bool]clouds.LaunchRequest{true: req, false: withoutHostKey(req)}[tc.scenario == injected])
			ep := inst.SSH
			wantPolicy := tc.policy
			if wantPolicy == "" {
				wantPolicy = clouds.HostKeyConsole
			}
			var wantKeys []string
			switch tc.scenario {
			case injected:
				wantKeys = []string{req.HostKey.Public}
			case onConsole:
				wantKeys = []string{opts.ConsoleHostKey}
			}
			if ep.HostKeySource != tc.wantSource || ep.HostKeyPolicy != wantPolicy || strings.Join(ep.HostKeys, "\n") != strings.Join(wantKeys, "\n") {
				t.Errorf("endpoint keys %q from %q under %q; want %q from %q under %q", ep.HostKeys, ep.HostKeySource, ep.HostKeyPolicy, wantKeys, tc.wantSource, wantPolicy)
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), expand(tc.wantLog)) {
				t.Errorf("log lacks %q:\n%s", expand(tc.wantLog), logs)
			}
			if tc.wantLog == "" && strings.Contains(logs.String(), "first key") {
				t.Errorf("log speaks of trusting the first key with a key pinned:\n%s", logs)
			}
		})
	}
}

func withoutHostKey(req clouds.LaunchRequest) clouds.LaunchRequest {
	req.HostKey = clouds.HostKey{}
	return req
}

// TestHostKeyRequire: host_key: require with nothing to inject is refused at
// launch, before anything is created, when the build brings no key.
func TestHostKeyRequire(t *testing.T) {
	f := newFake(t, ec2test.Options{})
	c := open(t, f, ec2.Config{HostKey: clouds.HostKeyRequire})
	req, _ := launchReq(t, "require-none")
	req.HostKey = clouds.HostKey{}
	inst := &clouds.Instance{Build: "require-none"}
	err := c.Launch(context.Background(), req, inst)
	want := "host_key: require needs the build's host key injected, and the build brought none"
	if err == nil || err.Error() != want || !errors.Is(err, clouds.ErrNoHostKey) {
		t.Errorf("Launch = %v\nwant %q", err, want)
	}
	if len(inst.Resources) != 0 || len(f.Requests()) != 0 {
		t.Errorf("a refused launch created %+v, asked %d things of EC2", inst.Resources, len(f.Requests()))
	}
}

// TestHostKeyBuild runs the pipeline with inject_host_key: false on an image
// whose console shows no key: under console the build fails with the message
// a user sees; under first-use it trusts the sshd's key, and the build log
// says which key and why.
func TestHostKeyBuild(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	fp := "ssh-ed25519 " + ssh.FingerprintSHA256(sshd.HostPublic)
	for _, tc := range []struct {
		policy  clouds.HostKeyPolicy
		state   builder.State
		wantErr string
		wantLog []string
	}{
		{policy: clouds.HostKeyConsole, state: builder.StateFailed,
			wantErr: "launching: no SSH host key for instance {id} on the console after 2s; set host_key: first-use to trust the first key seen (not recommended) or inject_host_key: true",
			wantLog: []string{"reading the SSH host keys cloud-init prints on the console driver=ec2-test instance={id} host_key=console up_to=2s"}},
		{policy: clouds.HostKeyFirstUse, state: builder.StateSucceeded, wantLog: []string{
			"reading the SSH host keys cloud-init prints on the console driver=ec2-test instance={id} host_key=first-use up_to=300ms",
			"WARN no SSH host key for instance {id} on the console after 300ms; host_key: first-use, so the first key the server presents will be trusted (not recommended) driver=ec2-test",
			"WARN no SSH host key is known for this instance: the first key the server presents will be trusted (host_key: first-use; not recommended) source=first-use",
			`WARN trusting the SSH host key on first use: nothing known to pin it against addr=` + sshd.Addr + ` host_key="` + fp + `"`,
		}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			f := newFake(t, ec2test.Options{PublicIP: "127.0.0.1", BootDelay: 30 * time.Millisecond, ImageDelay: 30 * time.Millisecond})
			no := false
			c := open(t, f, ec2.Config{SSHPort: port, InjectHostKey: &no, HostKey: tc.policy, ConsoleTimeout: 300 * time.Millisecond})
			build := "hkb-" + string(tc.policy)
			rec := &lines{}
			res := builder.Run(context.Background(), builder.Job{Build: build, CloudName: "ec2-test", Cloud: cloudInit{Cloud: c, t: t, sshd: sshd},
				Spec: &spec.Spec{Name: "dstat", Script: "true", Digest: strings.Repeat("ef", 32),
					Clouds: map[string]spec.CloudSpec{"ec2-test": {Image: ec2test.BaseImage, SSHUser: sshd.User}}},
				Repo: "lab/images", Commit: strings.Repeat("d", 40), SSHTimeout: 2 * time.Second, CleanupTimeout: 30 * time.Second, Observer: rec})
			if res.Image != nil {
				deleteImage(t, c, res.Image)
			}
			assertClean(t, f, build)
			var id string
			for _, l := range rec.all() {
				if m := ranInstance.FindStringSubmatch(l); m != nil {
					id = m[1]
				}
			}
			expand := func(s string) string { return strings.ReplaceAll(s, "{id}", id) }
			if res.State != tc.state || res.Error != expand(tc.wantErr) {
				t.Fatalf("state %s, error %q\nwant %s, %q\nlog:\n%s", res.State, res.Error, tc.state, expand(tc.wantErr), strings.Join(rec.all(), "\n"))
			}
			for _, w := range tc.wantLog {
				if !strings.Contains(strings.Join(rec.all(), "\n"), expand(w)) {
					t.Errorf("build log lacks %q:\n%s", expand(w), strings.Join(rec.all(), "\n"))
				}
			}
		})
	}
}

var ranInstance = regexp.MustCompile(`^ran instance, waiting for running .*instance=(\S+)`)

// lines is a builder.Observer keeping the build log's imagegen lines.
type lines struct {
	mu  sync.Mutex
	got []string
}

func (l *lines) Phase(string, builder.Phase, time.Time) {}

func (l *lines) Line(ln builder.LogLine) {
	if ln.Stream != builder.StreamImagegen {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, ln.Text)
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

// authorizedKey is a fresh ed25519 public key, as cloud-init would print one.
func authorizedKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}
