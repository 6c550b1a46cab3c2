package builder

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// The test stage over a real sshd, which plays both the build VM and the
// test VM: the script writes a marker, the test checks it.
func TestRunTestStage(t *testing.T) {
	s := servicetest.StartSSHD(t)
	ep := &clouds.Endpoint{Addr: s.Addr, User: s.User, Signer: s.ClientSigner, HostKeys: []string{s.HostKey}, HostKeySource: "test"}
	const password = "hunter2-test-secret"
	tests := []struct {
		name       string
		test       string
		timeout    time.Duration
		keepFailed bool
		wantState  State
		wantTested string // the image's imagegen:tested tag; "" when the image is gone
		wantErr    string
		wantTail   []string
	}{
		{name: "pass", test: "test -f \"$MARKER\" && grep -q built \"$MARKER\"\necho test ok", wantState: StateSucceeded, wantTested: clouds.TestedPassed},
		{name: "fail deletes the image", test: "echo checking\necho 'pw=" + password + "'\ntest -f /nonexistent/file || exit 3", wantState: StateFailed,
			wantErr: "testing: running test: the test exited with code 3", wantTail: []string{"checking", "pw=[redacted]"}},
		{name: "fail, keep_failed keeps it", test: "exit 4", keepFailed: true, wantState: StateFailed, wantTested: clouds.TestedFailed,
			wantErr: "testing: running test: the test exited with code 4"},
		{name: "timeout", test: "sleep 20", timeout: 500 * time.Millisecond, wantState: StateFailed,
			wantErr: "testing: running test: the test did not finish within 500ms (test_timeout)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "marker")
			f := simulated.New(simulated.Options{SSH: ep})
			rec := &recorder{}
			j := testJob(f, "echo built > "+marker, rec)
			j.Spec.Test = "MARKER=" + marker + "\n" + tt.test
			j.Spec.TestTimeout, j.Spec.KeepFailed = tt.timeout, tt.keepFailed
			j.Secrets = []secret.String{secret.New(password)}
			r := Run(context.Background(), j)
			if r.State != tt.wantState {
				t.Fatalf("state %s err %v\nlog %q", r.State, r.Err, rec.text(""))
			}
			if tt.wantErr != "" && !strings.HasPrefix(r.Error, tt.wantErr) {
				t.Errorf("error %q, want %q", r.Error, tt.wantErr)
			}
			if tt.wantTail != nil && !slices.Equal(r.LogTail, tt.wantTail) {
				t.Errorf("tail %q, want %q", r.LogTail, tt.wantTail)
			}
			for _, l := range append(rec.text(""), r.Error) {
				if strings.Contains(l, password) {
					t.Errorf("secret in %q", l)
				}
			}
			// Two VMs, both gone; the image kept only when it counts or keep_failed.
			checkCleanedUp(t, f, tt.wantTested != "")
			imgs := f.Images()
			switch {
			case tt.wantTested == "" && len(imgs) != 0:
				t.Errorf("images left: %v", imgs)
			case tt.wantTested != "" && (len(imgs) != 1 || imgs[0].Tags[clouds.TagTested] != tt.wantTested):
				t.Errorf("images %v, want one tagged %s=%s", imgs, clouds.TagTested, tt.wantTested)
			case tt.wantTested != "" && (r.Image == nil || r.Image.ID != imgs[0].ID):
				t.Errorf("result image %+v, want %s (the record must name a kept image)", r.Image, imgs[0].ID)
			}
			servers := 0
			for _, c := range f.Calls() {
				if strings.HasPrefix(c, "create server") {
					servers++
				}
			}
			if servers != 2 {
				t.Errorf("%d servers created, want the build's and the test's: %q", servers, f.Calls())
			}
			if r.Test == nil || (tt.wantState == StateSucceeded) != (r.Test.Result == clouds.TestedPassed) {
				t.Errorf("test result %+v", r.Test)
			}
			if tt.name == "pass" {
				want := []Phase{PhaseKey, PhaseLaunch, PhaseSSH, PhaseScript, PhaseManifest, PhaseStop, PhaseSnapshot, PhaseTestLaunch, PhaseTestSSH, PhaseTest, PhaseCleanup, PhaseDone}
				if !slices.Equal(rec.phases, want) {
					t.Errorf("phases %v, want %v", rec.phases, want)
				}
				if !slices.Contains(rec.text(StreamStdout), "test ok") {
					t.Errorf("the test's output is not in the build log: %q", rec.text(StreamStdout))
				}
			}
		})
	}
}

// Without SSH (the simulated cloud alone) the test cannot run: the image
// is tagged skipped, and the test VM still comes and goes.
func TestRunTestStageWithoutSSH(t *testing.T) {
	f := simulated.New(simulated.Options{})
	rec := &recorder{}
	j := testJob(f, "true", rec)
	j.Spec.Test = "true"
	r := Run(context.Background(), j)
	if r.State != StateSucceeded || r.Test == nil || r.Test.Result != clouds.TestedSkipped || !r.Test.Tagged {
		t.Fatalf("state %s test %+v err %v", r.State, r.Test, r.Err)
	}
	if imgs := f.Images(); len(imgs) != 1 || imgs[0].Tags[clouds.TagTested] != clouds.TestedSkipped {
		t.Errorf("images %v", imgs)
	}
	checkCleanedUp(t, f, true)
}

// A fault at each step of the test stage: the test VM is removed, the image
// deleted, and the error says where it failed.
func TestRunTestStageFaults(t *testing.T) {
	boom := clouds.Errorf(clouds.KindQuota, "test", "injected failure")
	for _, tt := range []struct {
		op   simulated.Op
		skip int // calls of op let through first (the build VM's)
		want string
	}{
		{simulated.OpImportKey, 1, "testing: launching: "},
		{simulated.OpLaunch, 1, "testing: launching: "},
		{simulated.OpWaitRunning, 2, "testing: launching: "},
	} {
		t.Run(string(tt.op), func(t *testing.T) {
			f := simulated.New(simulated.Options{})
			// Let the build VM's calls through, fail the test VM's.
			f.Inject(tt.op, simulated.Fault{Times: tt.skip})
			f.Inject(tt.op, simulated.Fault{Err: boom})
			j := testJob(f, "true", nil)
			j.Spec.Test = "true"
			r := Run(context.Background(), j)
			if r.State != StateFailed || !strings.HasPrefix(r.Error, tt.want) {
				t.Fatalf("state %s error %q, want %q", r.State, r.Error, tt.want)
			}
			checkCleanedUp(t, f, false)
		})
	}
}

// A canceled build during the test: both VMs and the image are removed.
func TestRunTestStageCanceled(t *testing.T) {
	f := simulated.New(simulated.Options{})
	f.Inject(simulated.OpWaitRunning, simulated.Fault{Times: 2})
	f.Inject(simulated.OpWaitRunning, simulated.Fault{Block: true})
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{}
	j := testJob(f, "true", rec)
	j.Spec.Test = "true"
	go func() {
		for !slices.Contains(rec.snapshotPhases(), PhaseTestLaunch) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	r := Run(ctx, j)
	if r.State != StateCanceled || r.Image != nil {
		t.Fatalf("state %s image %v err %v", r.State, r.Image, r.Err)
	}
	checkCleanedUp(t, f, false)
}

func (r *recorder) snapshotPhases() []Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.phases)
}

// A base image filter: the newest of the matches is launched, recorded
// and tagged; no match, or several without most_recent, fail with a clear message.
func TestRunBaseFilter(t *testing.T) {
	day := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	bases := []simulated.BaseImage{
		{ID: "img-old", Name: "debian-12-genericcloud-amd64-20250501", Created: day.AddDate(0, -1, 0), Owner: "136693071363"},
		{ID: "img-new", Name: "debian-12-genericcloud-amd64-20250601", Created: day, Owner: "136693071363"},
		{ID: "img-other", Name: "debian-12-genericcloud-amd64-20250701", Created: day.AddDate(0, 1, 0), Owner: "someone-else"},
		{ID: "img-ubuntu", Name: "ubuntu-24.04-20250701", Created: day.AddDate(0, 1, 0), Owner: "136693071363"},
	}
	tests := []struct {
		filter  spec.ImageFilter
		want    string
		wantErr string
	}{
		{filter: spec.ImageFilter{Name: "debian-12-genericcloud-amd64-*", Owner: "136693071363", MostRecent: true}, want: "img-new"},
		{filter: spec.ImageFilter{Name: "debian-12-*", Owner: "136693071363"},
			wantErr: `finding base image: invalid: the image filter {name: "debian-12-*", owner: "136693071363"} matches 2 images: img-new (debian-12-genericcloud-amd64-20250601), img-old (debian-12-genericcloud-amd64-20250501) (add most_recent: true to take the newest, or narrow the filter)`},
		{filter: spec.ImageFilter{Name: "debian-13-*", MostRecent: true},
			wantErr: `finding base image: not-found: the image filter {name: "debian-13-*", most_recent: true} matches no image (check the name glob, owner and tags in the generator spec against the cloud's images)`},
	}
	for _, tt := range tests {
		t.Run(tt.filter.Name, func(t *testing.T) {
			f := simulated.New(simulated.Options{BaseImages: []string{"none"}, BaseImageList: bases})
			j := testJob(f, "true", nil)
			flt := tt.filter
			j.Spec.Clouds["sim"] = spec.CloudSpec{Filter: &flt, SSHUser: "debian"}
			r := Run(context.Background(), j)
			if tt.wantErr != "" {
				if r.State != StateFailed || r.Error != tt.wantErr {
					t.Fatalf("state %s error\n %s\nwant\n %s", r.State, r.Error, tt.wantErr)
				}
				if len(f.Calls()) != 0 {
					t.Errorf("a build whose filter failed made %q", f.Calls())
				}
				return
			}
			if r.State != StateSucceeded || r.BaseImage != tt.want || r.Image.Tags[clouds.TagBaseImage] != tt.want {
				t.Fatalf("state %s base %q tags %v err %v", r.State, r.BaseImage, r.Image, r.Err)
			}
		})
	}
	// A cloud that cannot filter says so.
	j := testJob(noFinder{simulated.New(simulated.Options{})}, "true", nil)
	j.Spec.Clouds["sim"] = spec.CloudSpec{Filter: &spec.ImageFilter{Name: "x"}, SSHUser: "u"}
	if r := Run(context.Background(), j); !strings.Contains(r.Error, clouds.ErrNoFilter.Error()) {
		t.Errorf("error %q", r.Error)
	}
}

// noFinder hides the simulated cloud's ImageFinder.
type noFinder struct{ clouds.Cloud }

func TestTestErrorMessages(t *testing.T) {
	e := &TestError{Err: fmt.Errorf("connection lost")}
	if e.Error() != "the test failed: connection lost" {
		t.Error(e.Error())
	}
}
