package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// recorder is an Observer keeping everything it saw.
type recorder struct {
	mu     sync.Mutex
	phases []Phase
	lines  []LogLine
}

func (r *recorder) Phase(_ string, p Phase, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phases = append(r.phases, p)
}

func (r *recorder) Line(l LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, l)
}

func (r *recorder) text(stream string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if stream == "" || l.Stream == stream {
			out = append(out, l.Text)
		}
	}
	return out
}

func testSpec(cloud, script string) *spec.Spec {
	return &spec.Spec{
		Name:   "hello",
		Script: script,
		Clouds: map[string]spec.CloudSpec{cloud: {Image: "debian-12", SSHUser: "debian"}},
		Digest: strings.Repeat("ab", 32),
	}
}

func testJob(cloud clouds.Cloud, script string, obs Observer) Job {
	return Job{
		Build:          "b1",
		CloudName:      "sim",
		Cloud:          cloud,
		Spec:           testSpec("sim", script),
		Repo:           "octo/gens",
		Commit:         "0123456789abcdef0123456789abcdef01234567",
		SSHTimeout:     10 * time.Second,
		CleanupTimeout: 10 * time.Second,
		Observer:       obs,
	}
}

// checkCleanedUp asserts the fake holds nothing the build made (the image
// excepted when keep is set) and that every deletion came in reverse order of creation.
func checkCleanedUp(t *testing.T, f *simulated.Cloud, keepImage bool) {
	t.Helper()
	if live := f.Live(); len(live) != 0 {
		t.Errorf("resources left behind: %v", live)
	}
	if imgs := f.Images(); !keepImage && len(imgs) != 0 {
		t.Errorf("images left behind: %v", imgs)
	}
	calls := f.Calls()
	var created, deleted []string
	for _, c := range calls {
		switch {
		case strings.HasPrefix(c, "create "):
			id := c[strings.LastIndex(c, " ")+1:]
			if keepImage && strings.HasPrefix(c, "create image ") {
				continue
			}
			created = append(created, id)
		case strings.HasPrefix(c, "delete "):
			deleted = append(deleted, c[strings.LastIndex(c, " ")+1:])
		}
	}
	slices.Reverse(created)
	if !slices.Equal(created, deleted) {
		t.Errorf("deletions %v, want the creations in reverse %v (calls %q)", deleted, created, calls)
	}
}

func TestRunSucceeds(t *testing.T) {
	f := simulated.New(simulated.Options{LaunchDelay: 5 * time.Millisecond, SnapshotDelay: 5 * time.Millisecond})
	rec := &recorder{}
	start := time.Now()
	r := Run(context.Background(), testJob(f, "true", rec))
	if r.State != StateSucceeded || r.Err != nil {
		t.Fatalf("state %s err %v", r.State, r.Err)
	}
	if r.Image == nil || r.Image.ID == "" {
		t.Fatalf("no image: %+v", r)
	}
	wantName := ImageName("hello", r.Started, "0123456789abcdef")
	if r.Image.Name != wantName || !strings.HasSuffix(wantName, "-0123456") {
		t.Errorf("image name %q, want %q", r.Image.Name, wantName)
	}
	imgs := f.Images()
	if len(imgs) != 1 || imgs[0].ID != r.Image.ID {
		t.Fatalf("cloud images %v, want only %s", imgs, r.Image.ID)
	}
	for k, v := range map[string]string{
		clouds.TagRepo: "octo/gens", clouds.TagCommit: "0123456789abcdef0123456789abcdef01234567",
		clouds.TagGenerator: "hello", clouds.TagScriptSHA: strings.Repeat("ab", 32),
		clouds.TagBaseImage: "debian-12", clouds.TagBuild: "b1",
	} {
		if imgs[0].Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, imgs[0].Tags[k], v)
		}
	}
	checkCleanedUp(t, f, true)
	if r.BaseImage != "debian-12" || r.Cloud != "sim" || r.Finished.Before(start) {
		t.Errorf("result %+v", r)
	}
	// No SSH endpoint: no script phase output, but every phase is reported.
	wantPhases := []Phase{PhaseKey, PhaseLaunch, PhaseSSH, PhaseScript, PhaseManifest, PhaseStop, PhaseSnapshot, PhaseCleanup, PhaseDone}
	if !slices.Equal(rec.phases, wantPhases) {
		t.Errorf("phases %v, want %v", rec.phases, wantPhases)
	}
	if len(r.Phases) != len(wantPhases)-1 {
		t.Errorf("timings %v", r.Phases)
	}
	// Driver messages (LaunchRequest.Log) reach the build log.
	if !slices.ContainsFunc(rec.text(StreamImagegen), func(s string) bool { return strings.Contains(s, "key pair created") }) {
		t.Errorf("driver log lines missing: %q", rec.text(""))
	}
}

func TestRunFaultAtEachStep(t *testing.T) {
	boom := clouds.Errorf(clouds.KindQuota, "test", "injected failure")
	tests := []struct {
		op        simulated.Op
		wantPhase Phase
	}{
		{simulated.OpImportKey, PhaseLaunch},
		{simulated.OpLaunch, PhaseLaunch},
		{simulated.OpWaitRunning, PhaseLaunch},
		{simulated.OpStop, PhaseStop},
		{simulated.OpSnapshot, PhaseSnapshot},
		{simulated.OpWaitImage, PhaseSnapshot},
	}
	for _, tt := range tests {
		t.Run(string(tt.op), func(t *testing.T) {
			f := simulated.New(simulated.Options{})
			f.Inject(tt.op, simulated.Fault{Err: boom, Times: 1})
			r := Run(context.Background(), testJob(f, "true", nil))
			if r.State != StateFailed {
				t.Fatalf("state %s, want failed", r.State)
			}
			if !strings.Contains(r.Error, "injected failure") || !strings.HasPrefix(r.Error, string(tt.wantPhase)+": ") {
				t.Errorf("error %q, want it to start with %q and name the cloud's error", r.Error, tt.wantPhase)
			}
			if clouds.KindOf(r.Err) != clouds.KindQuota {
				t.Errorf("kind %q, want quota (the error chain is kept)", clouds.KindOf(r.Err))
			}
			if r.Image != nil || len(r.Leftovers) != 0 {
				t.Errorf("image %v leftovers %v", r.Image, r.Leftovers)
			}
			checkCleanedUp(t, f, false)
		})
	}
}

func TestRunCleanupFailureReportsLeftovers(t *testing.T) {
	tests := []struct {
		name      string
		failAt    simulated.Op // "" : the build itself succeeds
		wantState State
		wantErr   []string
	}{
		// The image is made: the build succeeded; the server is reported for the sweep.
		{"after success", "", StateSucceeded, nil},
		{"after a failure", simulated.OpStop, StateFailed, []string{"stopping: ", "injected stop failure", "clean up after launching", "token expired"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := simulated.New(simulated.Options{})
			f.Inject(simulated.OpTerminate, simulated.Fault{Err: clouds.Errorf(clouds.KindAuth, "delete server", "token expired")})
			if tt.failAt != "" {
				f.Inject(tt.failAt, simulated.Fault{Err: clouds.Errorf(clouds.KindFailed, "stop", "injected stop failure")})
			}
			r := Run(context.Background(), testJob(f, "true", nil))
			if r.State != tt.wantState {
				t.Fatalf("state %s err %v", r.State, r.Err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.Error, w) {
					t.Errorf("error %q lacks %q", r.Error, w)
				}
			}
			if len(r.Leftovers) != 1 || r.Leftovers[0].Kind != clouds.KindServer || r.Leftovers[0].Build != "b1" {
				t.Errorf("leftovers %v, want the server", r.Leftovers)
			}
		})
	}
}

func TestRunCanceledDuringLongStep(t *testing.T) {
	tests := []struct {
		op simulated.Op
	}{{simulated.OpWaitRunning}, {simulated.OpWaitImage}, {simulated.OpStop}}
	for _, tt := range tests {
		t.Run(string(tt.op), func(t *testing.T) {
			f := simulated.New(simulated.Options{})
			f.Inject(tt.op, simulated.Fault{Block: true, Times: 1})
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			rec := &recorder{}
			start := time.Now()
			r := Run(ctx, testJob(f, "true", rec))
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s after cancel", d)
			}
			if r.State != StateCanceled || !errors.Is(r.Err, context.Canceled) {
				t.Fatalf("state %s err %v, want canceled", r.State, r.Err)
			}
			checkCleanedUp(t, f, false)
			if !slices.ContainsFunc(rec.text(StreamImagegen), func(s string) bool { return strings.Contains(s, "canceled: cleaning up") }) {
				t.Errorf("the log does not say cleanup runs after cancel: %q", rec.text(""))
			}
		})
	}
}

func TestRunAll(t *testing.T) {
	ok := simulated.New(simulated.Options{LaunchDelay: 50 * time.Millisecond})
	bad := simulated.New(simulated.Options{LaunchDelay: 50 * time.Millisecond})
	bad.Inject(simulated.OpLaunch, simulated.Fault{Err: clouds.Errorf(clouds.KindCapacity, "create server", "no room"), Times: 1})
	j1 := testJob(bad, "true", nil)
	j2 := testJob(ok, "true", nil)
	j2.CloudName = "other"
	j2.Spec = testSpec("other", "true")
	start := time.Now()
	rs := RunAll(context.Background(), []Job{j1, j2})
	if len(rs) != 2 || rs[0].Cloud != "sim" || rs[1].Cloud != "other" {
		t.Fatalf("results %+v", rs)
	}
	if rs[0].State != StateFailed || !strings.Contains(rs[0].Error, "no room") {
		t.Errorf("first: %s %q", rs[0].State, rs[0].Error)
	}
	if rs[1].State != StateSucceeded || rs[1].Image == nil {
		t.Errorf("second: %s %q", rs[1].State, rs[1].Error)
	}
	checkCleanedUp(t, bad, false)
	checkCleanedUp(t, ok, true)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestRunBadJobs(t *testing.T) {
	f := simulated.New(simulated.Options{})
	tests := []struct {
		name    string
		mod     func(*Job)
		wantErr string
	}{
		{"no cloud", func(j *Job) { j.Cloud = nil }, "no cloud"},
		{"no spec", func(j *Job) { j.Spec = nil }, "no generator spec"},
		{"spec lacks the cloud", func(j *Job) { j.CloudName = "elsewhere" }, `no settings for cloud "elsewhere"`},
		{"driver panics", func(j *Job) { j.Cloud = panicky{f} }, "internal error: panic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := testJob(f, "true", nil)
			tt.mod(&j)
			r := Run(context.Background(), j)
			if r.State != StateFailed || !strings.Contains(r.Error, tt.wantErr) {
				t.Errorf("state %s error %q, want failed with %q", r.State, r.Error, tt.wantErr)
			}
		})
	}
	checkCleanedUp(t, f, false)
}

// panicky is a driver whose Stop panics after Launch made things.
type panicky struct{ *simulated.Cloud }

func (panicky) Stop(context.Context, *clouds.Instance) error { panic("driver bug") }

func TestRunScriptOverSSH(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	const password = "hunter2-very-secret"
	tests := []struct {
		name      string
		script    string
		poweroff  bool
		wantState State
		wantCode  int
		wantOut   []string
		wantTail  []string
	}{
		{
			name:      "success streams output, secrets redacted",
			script:    "echo one\necho two\necho 'pw=" + password + "'\necho err >&2",
			wantState: StateSucceeded,
			wantOut:   []string{"one", "two", "pw=[redacted]"},
		},
		{
			name:      "failure keeps exit code and tail",
			script:    "for i in $(seq 1 25); do echo l$i; done\necho " + password + "\nexit 7",
			wantState: StateFailed,
			wantCode:  7,
			wantTail:  append(seqLines(7, 25), "[redacted]"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := simulated.New(simulated.Options{SSH: ep, PoweroffOverSSH: tt.poweroff})
			rec := &recorder{}
			j := testJob(f, tt.script, rec)
			j.Secrets = []secret.String{secret.New(password)}
			r := Run(context.Background(), j)
			if r.State != tt.wantState || r.ExitCode != tt.wantCode {
				t.Fatalf("state %s exit %d err %v, want %s %d", r.State, r.ExitCode, r.Err, tt.wantState, tt.wantCode)
			}
			if tt.wantOut != nil && !slices.Equal(rec.text(StreamStdout), tt.wantOut) {
				t.Errorf("stdout %q, want %q", rec.text(StreamStdout), tt.wantOut)
			}
			if tt.wantTail != nil {
				if !slices.Equal(r.LogTail, tt.wantTail) {
					t.Errorf("tail %q, want %q", r.LogTail, tt.wantTail)
				}
				if !strings.Contains(r.Error, fmt.Sprintf("exited with code %d", tt.wantCode)) || strings.Contains(r.Error, password) || strings.Contains(r.Err.Error(), password) {
					t.Errorf("error %q", r.Error)
				}
			}
			for _, l := range rec.text("") {
				if strings.Contains(l, password) {
					t.Errorf("secret in log line %q", l)
				}
			}
			checkCleanedUp(t, f, tt.wantState == StateSucceeded)
		})
	}
}

func seqLines(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("l%d", i))
	}
	return out
}

func TestImageName(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("x", 3600))
	tests := []struct {
		commit, want string
	}{
		{"0123456789abcdef", "dstat-20260304-0406-0123456"},
		{"", "dstat-20260304-0406-local"},
		{"abc", "dstat-20260304-0406-abc"},
	}
	for _, tt := range tests {
		if got := ImageName("dstat", at, tt.commit); got != tt.want {
			t.Errorf("ImageName(%q) = %q, want %q", tt.commit, got, tt.want)
		}
	}
}

func TestRunSSHWait(t *testing.T) {
	s := servicetest.StartSSHD(t)
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	fp := "ssh-ed25519 " + ssh.FingerprintSHA256(s.HostPublic)
	// Where refused endpoints point: it counts the connections a refusal must not make.
	trap, dials := countingListener(t)
	refused := "waiting for SSH: no SSH host key to pin for instance srv-2 at " + trap +
		": the cloud gave none, and the first key seen is trusted only under host_key: first-use"
	tests := []struct {
		name      string
		ep        clouds.Endpoint
		wantState State
		wantErr   string
		wantLog   []string
	}{
		{
			name:      "pinned key: the log says which, and from where",
			ep:        clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "injected", HostKeyPolicy: clouds.HostKeyConsole},
			wantState: StateSucceeded,
			wantLog:   []string{`pinning the SSH host key source=injected host_key="` + fp + `"`, `SSH is up addr=` + s.Addr + ` user=` + s.User + ` host_key="` + fp + `"`},
		},
		{
			name: "several console keys: all named, the one presented too",
			ep: clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{otherHostKey(t), s.HostKey},
				HostKeySource: "console", HostKeyPolicy: clouds.HostKeyConsole},
			wantState: StateSucceeded,
			wantLog:   []string{`pinning 2 SSH host keys (the server must present one) source=console host_key="ssh-ed25519 SHA256:`, `, ` + fp + `"`, `SSH is up addr=` + s.Addr + ` user=` + s.User + ` host_key="` + fp + `"`},
		},
		{
			name:      "no host key, host_key: first-use: trusted, with warnings naming the key",
			ep:        clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeySource: clouds.SourceFirstUse, HostKeyPolicy: clouds.HostKeyFirstUse},
			wantState: StateSucceeded,
			wantLog: []string{
				"WARN no SSH host key is known for this instance: the first key the server presents will be trusted (host_key: first-use; not recommended) source=first-use",
				"WARN trusting the SSH host key on first use: nothing known to pin it against addr=" + s.Addr + ` host_key="` + fp + `"`,
			},
		},
		{
			name:      "no host key and no policy: refused, not trusted on first use",
			ep:        clouds.Endpoint{Addr: trap, User: s.User, Signer: s.ClientSigner},
			wantState: StateFailed,
			wantErr:   refused,
		},
		{
			name:      "no host key under host_key: console: refused",
			ep:        clouds.Endpoint{Addr: trap, User: s.User, Signer: s.ClientSigner, HostKeyPolicy: clouds.HostKeyConsole},
			wantState: StateFailed,
			wantErr:   refused,
		},
		{
			name:      "no host key under host_key: require: refused",
			ep:        clouds.Endpoint{Addr: trap, User: s.User, Signer: s.ClientSigner, HostKeyPolicy: clouds.HostKeyRequire},
			wantState: StateFailed,
			wantErr:   refused,
		},
		{
			name:      "host_key: require with a key from the console: refused",
			ep:        clouds.Endpoint{Addr: trap, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "console", HostKeyPolicy: clouds.HostKeyRequire},
			wantState: StateFailed,
			wantErr:   "waiting for SSH: no SSH host key known before first contact for instance srv-2: host_key: require, but the key came from console",
		},
		{
			name:      "SSH never answers: fails after the timeout and cleans up",
			ep:        clouds.Endpoint{Addr: closed, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "injected"},
			wantState: StateFailed,
			wantErr:   "waiting for SSH: SSH on " + closed + " did not answer within 1.5s",
		},
		{
			name:      "wrong host key: refused at once",
			ep:        clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{otherHostKey(t)}, HostKeySource: "injected"},
			wantState: StateFailed,
			wantErr:   "host key mismatch",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := simulated.New(simulated.Options{SSH: &tt.ep})
			rec := &recorder{}
			j := testJob(f, "echo ran", rec)
			j.SSHTimeout = 1500 * time.Millisecond
			r := Run(context.Background(), j)
			if r.State != tt.wantState || !strings.Contains(r.Error, tt.wantErr) {
				t.Fatalf("state %s error %q, want %s %q", r.State, r.Error, tt.wantState, tt.wantErr)
			}
			for _, want := range tt.wantLog {
				if !slices.ContainsFunc(rec.text(StreamImagegen), func(s string) bool { return strings.Contains(s, want) }) {
					t.Errorf("log lacks %q:\n%s", want, strings.Join(rec.text(""), "\n"))
				}
			}
			if tt.ep.Addr == trap && dials() > 0 {
				t.Errorf("%d connections to the instance; a refused endpoint must not be dialled", dials())
			}
			if tt.wantState == StateSucceeded && !slices.Equal(rec.text(StreamStdout), []string{"ran"}) {
				t.Errorf("stdout %q", rec.text(StreamStdout))
			}
			checkCleanedUp(t, f, tt.wantState == StateSucceeded)
		})
	}
}

// countingListener accepts and closes connections on a local port, counting them.
func countingListener(t *testing.T) (string, func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), func() int { return int(n.Load()) }
}

func otherHostKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(k))
}

// TestRunPoweroffOverSSH: a cloud like qemu gets "poweroff" in the guest
// before Stop. The test sshd's stubs record it instead of stopping this machine.
func TestRunPoweroffOverSSH(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}}
	f := simulated.New(simulated.Options{SSH: ep, PoweroffOverSSH: true})
	r := Run(context.Background(), testJob(f, "sudo echo script", nil))
	if r.State != StateSucceeded {
		t.Fatalf("state %s err %v", r.State, r.Err)
	}
	if got := s.StopRequests(); !slices.Equal(got, []string{"poweroff"}) {
		t.Errorf("stop requests in the guest %q, want one poweroff", got)
	}
	checkCleanedUp(t, f, true)
}

// Two clouds of one build that reach the same host (two ssh clouds naming one
// machine) must not share the uploaded script: the first to finish would
// remove the other's file.
func TestRunAllSameHost(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	const script = "echo \"path=$0\"\nsleep 1\ntest -f \"$0\""
	var jobs []Job
	recs := map[string]*recorder{}
	for _, name := range []string{"box-a", "box-b"} {
		rec := &recorder{}
		recs[name] = rec
		j := testJob(simulated.New(simulated.Options{SSH: ep, NoImages: true}), script, rec)
		j.CloudName = name
		j.Spec = testSpec(name, script)
		jobs = append(jobs, j)
	}
	rs := RunAll(context.Background(), jobs)
	paths := map[string]bool{}
	for i, r := range rs {
		if r.State != StateSucceeded {
			t.Errorf("%s: %s (%s)", jobs[i].CloudName, r.State, r.Error)
		}
		out := recs[jobs[i].CloudName].text(StreamStdout)
		if len(out) != 1 || !strings.Contains(out[0], jobs[i].CloudName) {
			t.Errorf("%s printed %q, want its script path to name the cloud", jobs[i].CloudName, out)
		}
		if len(out) == 1 {
			paths[out[0]] = true
		}
	}
	if len(paths) != 2 {
		t.Errorf("the clouds shared a script path: %v", paths)
	}
}

// batchRecorder is a recorder that also takes lines in batches (LineBatcher).
type batchRecorder struct {
	recorder
	batches int
	sizes   []int
}

func (r *batchRecorder) Lines(ls []LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	r.sizes = append(r.sizes, len(ls))
	r.lines = append(r.lines, ls...) // copies the LogLines: the slice is reused
}

// TestRunScriptLinesInBatches: an observer implementing LineBatcher gets the
// script's output in batches (in order, complete, each line stamped and
// named), imagegen's own lines one by one, and a secret the script prints in
// two writes a moment apart (two reads) redacted; an Observer without Lines
// gets the same lines one by one.
func TestRunScriptLinesInBatches(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	const password = "hunter2-very-secret"
	script := "seq 1 5000\nprintf 'pw=hunter2'; sleep 0.3; printf -- '-very-secret!\\n'\necho to-stderr >&2"
	want := seqNumbers(1, 5000)
	want = append(want, "pw=[redacted]!")

	br, lr := &batchRecorder{}, &recorder{}
	tests := []struct {
		name    string
		obs     Observer
		rec     *recorder // what obs saw
		batched bool
	}{
		{"LineBatcher", br, &br.recorder, true},
		{"Line only", lr, lr, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := testJob(simulated.New(simulated.Options{SSH: ep}), script, tt.obs)
			j.Secrets = []secret.String{secret.New(password)}
			if r := Run(context.Background(), j); r.State != StateSucceeded {
				t.Fatalf("state %s err %v", r.State, r.Err)
			}
			rec := tt.rec
			if got := rec.text(StreamStdout); !slices.Equal(got, want) {
				t.Errorf("stdout: %d lines, last %q; want %d, last %q", len(got), got[max(0, len(got)-1):], len(want), want[len(want)-1])
			}
			if got := rec.text(StreamStderr); !slices.Equal(got, []string{"to-stderr"}) {
				t.Errorf("stderr %q", got)
			}
			if len(rec.text(StreamImagegen)) == 0 {
				t.Error("no imagegen lines")
			}
			rec.mu.Lock()
			for _, l := range rec.lines {
				if l.Cloud != "sim" || l.Time.IsZero() || strings.Contains(l.Text, password) {
					t.Errorf("line %+v", l)
				}
			}
			rec.mu.Unlock()
			if tt.batched {
				br.mu.Lock()
				if br.batches == 0 || br.batches > 5002/10 {
					t.Errorf("%d batches (sizes %v) for 5002 lines", br.batches, br.sizes)
				}
				br.mu.Unlock()
			}
		})
	}
}

func seqNumbers(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// BenchmarkScriptLines is the builder's share of streaming: a read's worth of
// 100-byte lines (327) through the build log into an observer that locks
// and looks at every line, batched (LineBatcher) or line by line.
func BenchmarkScriptLines(b *testing.B) {
	texts := slices.Repeat([]string{strings.Repeat("x", 99)}, 327)
	for _, tt := range []struct {
		name string
		obs  Observer
	}{
		{"batches", &countObserver{}},
		{"line by line", &countLineObserver{}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			l := &buildLog{cloud: "sim", observer: tt.obs, now: time.Now}
			b.SetBytes(int64(len(texts) * 100))
			b.ReportAllocs()
			for b.Loop() {
				l.redactedLines(time.Now(), StreamStdout, texts)
			}
		})
	}
}

// countLineObserver counts bytes under a lock, as a build log does.
type countLineObserver struct {
	mu sync.Mutex
	n  int
}

func (o *countLineObserver) Phase(string, Phase, time.Time) {}
func (o *countLineObserver) Line(l LogLine) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n += len(l.Text)
}

// countObserver is countLineObserver taking batches too.
type countObserver struct{ countLineObserver }

func (o *countObserver) Lines(ls []LogLine) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range ls {
		o.n += len(l.Text)
	}
}
