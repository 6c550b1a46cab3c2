// Package cloudtest is the conformance suite every driver runs against its fake or emulator: the contract's edges, no leaks.
// It knows clouds.Cloud through a Harness, never a particular driver or cloud API; tests import it, production code never.
package cloudtest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/sshexec"
)

// Harness is how the suite drives one driver.
type Harness struct {
	// Open returns a fresh cloud against the driver's fake or emulator.
	Open func(t *testing.T) clouds.Cloud
	// Image, User and Size make a LaunchRequest the backing fake accepts.
	Image, User, Size string
	// Live returns what the backing fake holds now, read from the fake itself,
	// not through the driver: the resources a driver could create, each with
	// Build set from its imagegen:build tag ("" when untagged). Images excluded.
	Live func(t *testing.T) []clouds.Resource
	// Images, when set, returns the images the backing fake holds, with their
	// tags, so the suite checks the tags the cloud really stored.
	Images func(t *testing.T) []clouds.Image
	// Backing, when set, returns what backs the images the fake holds (EBS
	// snapshots), each with Build from its tag, so the suite checks that
	// deleting an image removes them too.
	Backing func(t *testing.T) []clouds.Resource
	// BadImage, when set, is a base image the backing fake does not know:
	// Launch must fail with clouds.KindNotFound and leave nothing behind.
	BadImage string
	// SkipSSH says instances are not reachable by SSH in this harness, so
	// Launch may leave inst.SSH nil.
	SkipSSH bool
	// FailWithin is how long a Launch that must fail (an unknown image) may
	// take: the time of its few requests, none retried; default Prompt. A
	// harness on real services, a second a request on a busy machine, gives more.
	FailWithin time.Duration
}

// Prompt is how soon an operation must return once its context is canceled.
const Prompt = 2 * time.Second

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil || h.Live == nil || h.Image == "" {
		t.Fatal("cloudtest: Harness needs Open, Live and Image")
	}
	tests := []suiteTest{
		{"LaunchRecordsBeforeWait", testLaunchRecordsBeforeWait},
		{"HappyPath", testHappyPath},
		{"TerminateTwice", testTerminateTwice},
		{"TerminateAfterFailedLaunch", testTerminateAfterFailedLaunch},
		{"TerminateEmpty", testTerminateEmpty},
		{"DeleteImageIdempotent", testDeleteImageIdempotent},
		{"LeftoversAndRemove", testLeftoversAndRemove},
		{"EveryResourceCarriesBuild", testEveryResourceCarriesBuild},
		{"CanceledContextReturnsPromptly", testCanceledPromptly},
	}
	// ImageLister is optional: the suite checks it where a driver has it.
	if c := h.Open(t); c.Features().Images {
		if _, ok := c.(clouds.ImageLister); ok {
			tests = append(tests, suiteTest{"BuildImages", testBuildImages})
		}
		_, describes := c.(clouds.ImageDescriber)
		_, tags := c.(clouds.ImageTagger)
		if describes || tags {
			tests = append(tests, suiteTest{"DescribeAndTagImage", testDescribeAndTag})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, h) })
	}
}

type suiteTest struct {
	name string
	run  func(t *testing.T, h Harness)
}

// build is one build's view of the cloud under test.
type build struct {
	h     Harness
	cloud clouds.Cloud
	id    string
	req   clouds.LaunchRequest
}

func newBuild(t *testing.T, h Harness, c clouds.Cloud) *build {
	t.Helper()
	id := "ct-" + randHex(t, 6)
	return &build{h: h, cloud: c, id: id, req: request(t, h, id)}
}

// request makes a LaunchRequest with a fresh key pair and host key.
func request(t *testing.T, h Harness, id string) clouds.LaunchRequest {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	hpub, hpriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(hpriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hspub, err := ssh.NewPublicKey(hpub)
	if err != nil {
		t.Fatal(err)
	}
	return clouds.LaunchRequest{
		Build:         id,
		Name:          "imagegen-" + id,
		Image:         h.Image,
		Size:          h.Size,
		User:          h.User,
		AuthorizedKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))),
		HostKey: clouds.HostKey{
			PrivatePEM: secret.New(string(pem.EncodeToMemory(block))),
			Public:     strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hspub))),
		},
		Tags: map[string]string{
			clouds.TagBuild:     id,
			clouds.TagGenerator: "conformance",
			clouds.TagImageName: "conformance-" + id,
		},
		Log: testLogger(t),
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testLogger logs to t; lines logged after the test ended are dropped
// rather than panicking, since a driver's goroutine may outlive a wait.
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// launch launches and fails the test on error; Terminate is registered as cleanup.
func (b *build) launch(t *testing.T) *clouds.Instance {
	t.Helper()
	inst := &clouds.Instance{Build: b.id}
	t.Cleanup(func() { _ = b.cloud.Terminate(context.Background(), inst) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.cloud.Launch(ctx, b.req, inst); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if inst.ID == "" {
		t.Fatal("Launch succeeded but left inst.ID empty")
	}
	if !b.h.SkipSSH && inst.SSH == nil {
		t.Fatal("Launch succeeded but left inst.SSH nil")
	}
	if inst.SSH != nil && inst.SSH.Addr == "" {
		t.Fatal("Launch set inst.SSH without an address")
	}
	if ep := inst.SSH; ep != nil && len(ep.HostKeys) == 0 && !ep.HostKeyPolicy.TrustsFirstUse() {
		// The request carries a host key to inject: a driver that returns
		// nothing to pin would leave the pipeline nothing but a refusal.
		t.Fatalf("Launch returned an endpoint with no host key to pin (source %q, host_key %q)", ep.HostKeySource, ep.HostKeyPolicy)
	}
	return inst
}

// live is what the backing fake holds for this build.
func (b *build) live(t *testing.T) []clouds.Resource {
	t.Helper()
	var out []clouds.Resource
	for _, r := range b.h.Live(t) {
		if r.Build == b.id {
			out = append(out, r)
		}
	}
	return out
}

// terminate calls Terminate on a fresh context and checks nothing of the build is left.
func (b *build) terminate(t *testing.T, inst *clouds.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.cloud.Terminate(ctx, inst); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	b.noLeaks(t)
}

func (b *build) noLeaks(t *testing.T) {
	t.Helper()
	if left := b.live(t); len(left) > 0 {
		t.Fatalf("build %s left resources behind: %v", b.id, left)
	}
}

func (b *build) stopAndSnapshot(t *testing.T, inst *clouds.Instance) *clouds.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.cloud.Stop(ctx, inst); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	img := &clouds.Image{}
	t.Cleanup(func() { _ = b.cloud.DeleteImage(context.Background(), img) })
	req := clouds.SnapshotRequest{
		Name: "conformance-" + b.id,
		Tags: map[string]string{
			clouds.TagBuild:     b.id,
			clouds.TagRepo:      "imagegen/conformance",
			clouds.TagCommit:    "0123456789abcdef0123456789abcdef01234567",
			clouds.TagGenerator: "conformance",
			clouds.TagScriptSHA: strings.Repeat("ab", 32),
			clouds.TagBaseImage: b.h.Image,
			// Every driver that tags images carries the manifest's digest too.
			clouds.TagManifestSHA: strings.Repeat("cd", 32),
		},
		Log: b.req.Log,
	}
	if err := b.cloud.Snapshot(ctx, inst, req, img); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if img.ID == "" {
		t.Fatal("Snapshot succeeded but left img.ID empty")
	}
	if b.h.Images != nil {
		stored, ok := findImage(b.h.Images(t), img.ID)
		if !ok {
			t.Fatalf("image %s is not in the cloud", img.ID)
		}
		for k, v := range req.Tags {
			if stored.Tags[k] != v {
				t.Errorf("image %s: tag %s = %q, want %q (stored tags: %v)", img.ID, k, stored.Tags[k], v, stored.Tags)
			}
		}
	}
	return img
}

func findImage(imgs []clouds.Image, id string) (clouds.Image, bool) {
	for _, im := range imgs {
		if im.ID == id {
			return im, true
		}
	}
	return clouds.Image{}, false
}

func resourceKey(r clouds.Resource) string { return r.Kind + "/" + r.ID }

func keys(rs []clouds.Resource) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = resourceKey(r)
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond every 5 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// testLaunchRecordsBeforeWait cancels Launch once the cloud holds a server and
// checks that inst already names it, so Terminate removes everything.
func testLaunchRecordsBeforeWait(t *testing.T, h Harness) {
	b := newBuild(t, h, h.Open(t))
	inst := &clouds.Instance{Build: b.id}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.cloud.Launch(ctx, b.req, inst) }()

	hasServer := func() bool {
		return slices.ContainsFunc(b.live(t), func(r clouds.Resource) bool { return r.Kind == clouds.KindServer })
	}
	var err error
	finished := false
	if !waitFor(30*time.Second, func() bool {
		select {
		case err = <-done:
			finished = true
			return true
		default:
			return hasServer()
		}
	}) {
		cancel()
		t.Fatal("no server appeared in the cloud within 30s of Launch")
	}
	if finished && err != nil {
		t.Fatalf("Launch failed before it was canceled: %v", err)
	}
	if !finished {
		cancel()
		canceledAt := time.Now()
		select {
		case err = <-done:
		case <-time.After(Prompt):
			t.Fatalf("Launch did not return within %v of its context's cancellation", Prompt)
		}
		if took := time.Since(canceledAt); took > Prompt {
			t.Fatalf("Launch took %v to return after cancellation", took)
		}
		// A driver may finish the instant before it sees the cancellation;
		// any error it returns must say the context ended.
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("canceled Launch returned %v, want an error wrapping context.Canceled", err)
		}
	} else {
		t.Log("Launch finished before the server was seen: the backing fake boots at once; checking records only")
	}
	if inst.ID == "" {
		t.Error("inst.ID is empty although the cloud created a server")
	}
	recorded := keys(inst.Resources)
	for _, r := range b.live(t) {
		if !slices.Contains(recorded, resourceKey(r)) {
			t.Errorf("the cloud holds %s %s for the build but inst.Resources does not record it (recorded: %v)", r.Kind, r.ID, recorded)
		}
	}
	b.terminate(t, inst)
}

func testHappyPath(t *testing.T, h Harness) {
	b := newBuild(t, h, h.Open(t))
	inst := b.launch(t)
	if len(b.live(t)) == 0 {
		t.Fatal("after Launch the cloud holds nothing tagged with the build")
	}
	if !b.cloud.Features().Images {
		b.terminate(t, inst)
		return
	}
	img := b.stopAndSnapshot(t, inst)
	b.terminate(t, inst)
	if h.Images != nil {
		if _, ok := findImage(h.Images(t), img.ID); !ok {
			t.Fatalf("image %s vanished when its instance was terminated", img.ID)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.cloud.DeleteImage(ctx, img); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if h.Images != nil {
		if _, ok := findImage(h.Images(t), img.ID); ok {
			t.Fatalf("image %s still exists after DeleteImage", img.ID)
		}
	}
}

func testTerminateTwice(t *testing.T, h Harness) {
	b := newBuild(t, h, h.Open(t))
	inst := b.launch(t)
	b.terminate(t, inst)
	b.terminate(t, inst)
}

func testTerminateAfterFailedLaunch(t *testing.T, h Harness) {
	cases := []struct {
		name  string
		skip  bool
		setup func(b *build) context.Context
		check func(t *testing.T, err error)
	}{
		{
			name: "context already canceled",
			setup: func(b *build) context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			check: func(t *testing.T, err error) {
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Launch on a canceled context returned %v, want context.Canceled", err)
				}
			},
		},
		{
			name: "unknown base image",
			skip: h.BadImage == "",
			setup: func(b *build) context.Context {
				b.req.Image = h.BadImage
				return context.Background()
			},
			check: func(t *testing.T, err error) {
				if k := clouds.KindOf(err); k != clouds.KindNotFound {
					t.Errorf("Launch of unknown image %q returned %v (kind %q), want kind %q", h.BadImage, err, k, clouds.KindNotFound)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip {
				t.Skip("the harness names no BadImage")
			}
			b := newBuild(t, h, h.Open(t))
			inst := &clouds.Instance{Build: b.id}
			ctx, cancel := context.WithTimeout(tc.setup(b), time.Minute)
			defer cancel()
			start := time.Now()
			err := b.cloud.Launch(ctx, b.req, inst)
			if err == nil {
				t.Fatal("Launch succeeded; want it to fail")
			}
			within := h.FailWithin
			if within == 0 {
				within = Prompt
			}
			if took := time.Since(start); took > within {
				t.Errorf("failing Launch took %v, more than %v", took, within)
			}
			tc.check(t, err)
			b.terminate(t, inst)
			b.terminate(t, inst)
		})
	}
}

func testTerminateEmpty(t *testing.T, h Harness) {
	c := h.Open(t)
	for _, inst := range []*clouds.Instance{{}, {Build: "ct-empty"}} {
		if err := c.Terminate(context.Background(), inst); err != nil {
			t.Errorf("Terminate(%+v): %v", *inst, err)
		}
	}
}

func testDeleteImageIdempotent(t *testing.T, h Harness) {
	b := newBuild(t, h, h.Open(t))
	ctx := context.Background()
	if err := b.cloud.DeleteImage(ctx, &clouds.Image{}); err != nil {
		t.Errorf("DeleteImage of an image with no id: %v", err)
	}
	if !b.cloud.Features().Images {
		return
	}
	inst := b.launch(t)
	img := b.stopAndSnapshot(t, inst)
	b.terminate(t, inst)
	for i := range 2 {
		if err := b.cloud.DeleteImage(ctx, img); err != nil {
			t.Fatalf("DeleteImage #%d: %v", i+1, err)
		}
	}
	if h.Images != nil {
		if _, ok := findImage(h.Images(t), img.ID); ok {
			t.Fatalf("image %s still exists after DeleteImage", img.ID)
		}
	}
}

func testLeftoversAndRemove(t *testing.T, h Harness) {
	c := h.Open(t)
	a, other := newBuild(t, h, c), newBuild(t, h, c)
	instA := a.launch(t)
	instO := other.launch(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	found, err := c.Leftovers(ctx, a.id)
	if err != nil {
		t.Fatalf("Leftovers(%s): %v", a.id, err)
	}
	if got, want := keys(found), keys(instA.Resources); !slices.Equal(got, want) {
		t.Errorf("Leftovers(%s) = %v, want what Launch recorded: %v", a.id, got, want)
	}
	for _, r := range found {
		if r.Build != a.id {
			t.Errorf("Leftovers(%s) returned %s %s with Build %q", a.id, r.Kind, r.ID, r.Build)
		}
	}
	all, err := c.Leftovers(ctx, "")
	if err != nil {
		t.Fatalf(`Leftovers(""): %v`, err)
	}
	for _, r := range slices.Concat(instA.Resources, instO.Resources) {
		if !slices.Contains(keys(all), resourceKey(r)) {
			t.Errorf(`Leftovers("") misses %s %s`, r.Kind, r.ID)
		}
	}
	for _, r := range found {
		if err := c.Remove(ctx, r); err != nil {
			t.Fatalf("Remove(%s %s): %v", r.Kind, r.ID, err)
		}
	}
	a.noLeaks(t)
	if again, err := c.Leftovers(ctx, a.id); err != nil || len(again) > 0 {
		t.Fatalf("after Remove, Leftovers(%s) = %v, %v; want nothing", a.id, again, err)
	}
	for _, r := range found {
		if err := c.Remove(ctx, r); err != nil {
			t.Errorf("Remove(%s %s) a second time: %v", r.Kind, r.ID, err)
		}
	}
	if got, want := keys(other.live(t)), keys(instO.Resources); !slices.Equal(got, want) {
		t.Errorf("removing build %s's leftovers touched build %s: it holds %v, want %v", a.id, other.id, got, want)
	}
	other.terminate(t, instO)
}

// testBuildImages checks a clouds.ImageLister as the sweep uses it: a build's
// snapshot is listed under its build id (and among every build's), and the
// listed image, handed to DeleteImage, removes it and what backs it.
func testBuildImages(t *testing.T, h Harness) {
	c := h.Open(t)
	l := c.(clouds.ImageLister)
	b := newBuild(t, h, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if imgs, err := l.BuildImages(ctx, b.id); err != nil || len(imgs) > 0 {
		t.Fatalf("BuildImages(%s) before any snapshot = %v, %v; want nothing", b.id, imgs, err)
	}
	inst := b.launch(t)
	img := b.stopAndSnapshot(t, inst)
	b.terminate(t, inst)
	var backing []string
	if h.Backing != nil {
		for _, r := range h.Backing(t) {
			if r.Build == b.id {
				backing = append(backing, resourceKey(r))
			}
		}
		if len(backing) == 0 {
			t.Errorf("nothing backing image %s carries its build %s", img.ID, b.id)
		}
	}

	mine, err := l.BuildImages(ctx, b.id)
	if err != nil {
		t.Fatalf("BuildImages(%s): %v", b.id, err)
	}
	listed, ok := findImage(mine, img.ID)
	if !ok {
		t.Fatalf("BuildImages(%s) = %v; want it to list the build's image %s", b.id, mine, img.ID)
	}
	for _, im := range mine {
		if got := im.Tags[clouds.TagBuild]; got != b.id {
			t.Errorf("BuildImages(%s) listed image %s tagged %s=%q", b.id, im.ID, clouds.TagBuild, got)
		}
	}
	if listed.Tags[clouds.TagGenerator] != "conformance" {
		t.Errorf("listed image %s carries tags %v; want the provenance Snapshot gave it", listed.ID, listed.Tags)
	}
	all, err := l.BuildImages(ctx, "")
	if err != nil {
		t.Fatalf(`BuildImages(""): %v`, err)
	}
	if _, ok := findImage(all, img.ID); !ok {
		t.Errorf(`BuildImages("") = %v; want it to list image %s of build %s`, all, img.ID, b.id)
	}
	other := "ct-" + randHex(t, 6)
	if imgs, err := l.BuildImages(ctx, other); err != nil || len(imgs) > 0 {
		t.Errorf("BuildImages(%s), a build with no image, = %v, %v; want nothing", other, imgs, err)
	}

	// The sweep has only the listing: deleting what it lists must remove it all.
	if err := c.DeleteImage(ctx, &listed); err != nil {
		t.Fatalf("DeleteImage of the listed image: %v", err)
	}
	if h.Images != nil {
		if _, ok := findImage(h.Images(t), img.ID); ok {
			t.Fatalf("image %s still exists after DeleteImage of its listing", img.ID)
		}
	}
	b.noLeaks(t)
	if h.Backing != nil {
		for _, r := range h.Backing(t) {
			if slices.Contains(backing, resourceKey(r)) {
				t.Errorf("%s %s backed image %s and outlived DeleteImage of its listing", r.Kind, r.ID, img.ID)
			}
		}
	}
	if imgs, err := l.BuildImages(ctx, b.id); err != nil || len(imgs) > 0 {
		t.Fatalf("after DeleteImage, BuildImages(%s) = %v, %v; want nothing", b.id, imgs, err)
	}
}

// testEveryResourceCarriesBuild checks that whatever appeared in the cloud
// during Launch is tagged with the build and recorded in inst.
func testEveryResourceCarriesBuild(t *testing.T, h Harness) {
	b := newBuild(t, h, h.Open(t))
	before := map[string]bool{}
	for _, r := range h.Live(t) {
		before[resourceKey(r)] = true
	}
	inst := b.launch(t)
	recorded := keys(inst.Resources)
	if len(recorded) == 0 {
		t.Fatal("Launch recorded no resources")
	}
	for _, r := range inst.Resources {
		if r.Build != b.id {
			t.Errorf("inst.Resources has %s %s with Build %q, want %q", r.Kind, r.ID, r.Build, b.id)
		}
	}
	for _, r := range h.Live(t) {
		k := resourceKey(r)
		if before[k] {
			continue
		}
		if r.Build != b.id {
			t.Errorf("Launch created %s %s tagged %s=%q, want %q", r.Kind, r.ID, clouds.TagBuild, r.Build, b.id)
		}
		if !slices.Contains(recorded, k) {
			t.Errorf("Launch created %s %s but did not record it in inst.Resources", r.Kind, r.ID)
		}
	}
	b.terminate(t, inst)
}

// testCanceledPromptly cancels each long call shortly after it starts.
func testCanceledPromptly(t *testing.T, h Harness) {
	for _, after := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(fmt.Sprintf("after %v", after), func(t *testing.T) {
			b := newBuild(t, h, h.Open(t))

			inst := &clouds.Instance{Build: b.id}
			err := cancelAfter(t, "Launch", after, func(ctx context.Context) error { return b.cloud.Launch(ctx, b.req, inst) })
			if err != nil {
				b.terminate(t, inst)
				return
			}
			// Launch beat the cancellation: try the calls after it.
			if b.cloud.Features().Images {
				err = cancelAfter(t, "Stop", after, func(ctx context.Context) error { return b.cloud.Stop(ctx, inst) })
				if err == nil {
					img := &clouds.Image{}
					req := clouds.SnapshotRequest{Name: "conformance-" + b.id, Tags: map[string]string{clouds.TagBuild: b.id}, Log: b.req.Log}
					err = cancelAfter(t, "Snapshot", after, func(ctx context.Context) error { return b.cloud.Snapshot(ctx, inst, req, img) })
					if derr := b.cloud.DeleteImage(context.Background(), img); derr != nil {
						t.Errorf("DeleteImage after Snapshot (which returned %v): %v", err, derr)
					}
				}
			}
			b.terminate(t, inst)
		})
	}
}

// cancelAfter runs call with a context canceled after d and checks it returns
// within Prompt of the cancellation, with nil (it finished first) or ctx's error.
func cancelAfter(t *testing.T, name string, d time.Duration, call func(context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(ctx) }()
	if d > 0 {
		select {
		case err := <-done:
			return err
		case <-time.After(d):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s canceled after %v returned %v, want an error wrapping context.Canceled", name, d, err)
		}
		return err
	case <-time.After(Prompt):
		t.Fatalf("%s did not return within %v of cancellation", name, Prompt)
		return nil
	}
}

// CheckListed checks what an ImageLister returned for build ("" for every
// build): exactly the images named want, in any order, each carrying build's
// imagegen:build tag when build is not "", and each passing check (nil: none),
// a driver's own expectations (ids, locations, resources).
func CheckListed(t testing.TB, imgs []clouds.Image, build string, want []string, check func(t testing.TB, im clouds.Image)) {
	t.Helper()
	var names []string
	for _, im := range imgs {
		names = append(names, im.Name)
		if build != "" && im.Tags[clouds.TagBuild] != build {
			t.Errorf("image %s of build %q listed for build %q", im.Name, im.Tags[clouds.TagBuild], build)
		}
		if check != nil {
			check(t, im)
		}
	}
	slices.Sort(names)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(names, want) {
		t.Errorf("BuildImages(%q) = %v, want %v", build, names, want)
	}
}

// DeleteListed deletes every image imgs lists through c, as the sweep does
// with what an ImageLister returned, failing t at the first error.
func DeleteListed(t testing.TB, c clouds.Cloud, imgs []clouds.Image) {
	t.Helper()
	for _, im := range imgs {
		if err := c.DeleteImage(context.Background(), &im); err != nil {
			t.Fatalf("DeleteImage(%s): %v", im.Name, err)
		}
	}
}

// CheckSSH logs in to a launched instance's endpoint the way a build does
// (sshexec, trusting only the host keys the driver pinned, or the first key
// seen only under host_key: first-use) with signer as
// user, and runs a command on it. With wantErr, the login must fail instead,
// saying so (a pinned key the server does not have). serverLog, if not nil,
// is shown when the login fails unexpectedly.
func CheckSSH(t testing.TB, ep clouds.Endpoint, user string, signer ssh.Signer, wantErr string, serverLog func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := sshexec.Connect(ctx, sshexec.Config{Addr: ep.Addr, User: user, Signer: signer,
		HostKeys: ep.HostKeys, HostKeySource: ep.HostKeySource, TrustFirstUse: len(ep.HostKeys) == 0 && ep.HostKeyPolicy.TrustsFirstUse(),
		Timeout: 10 * time.Second})
	if wantErr != "" {
		if err == nil {
			c.Close()
			t.Fatal("login succeeded with a pinned key the server does not have")
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("login: %v, want %q", err, wantErr)
		}
		return
	}
	if err != nil {
		msg := ""
		if serverLog != nil {
			msg = "\nsshd log:\n" + serverLog()
		}
		t.Fatalf("login to %s: %v%s", ep.Addr, err, msg)
	}
	defer c.Close()
	var out []string
	code, err := c.Run(ctx, "echo built-on-$((6*7))", func(l sshexec.Line) { out = append(out, l.Text) })
	if err != nil || code != 0 || !slices.Equal(out, []string{"built-on-42"}) {
		t.Fatalf("run: %q, exit %d, %v", out, code, err)
	}
}
