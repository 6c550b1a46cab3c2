package simulated_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
)

// quick are delays long enough for the suite to cancel mid-wait, short enough to stay fast.
var quick = simulated.Options{LaunchDelay: 100 * time.Millisecond, SSHDelay: 20 * time.Millisecond, StopDelay: 10 * time.Millisecond, SnapshotDelay: 50 * time.Millisecond}

// fast keeps the per-op runs of the suite short.
var fast = simulated.Options{LaunchDelay: 30 * time.Millisecond, SSHDelay: 5 * time.Millisecond, StopDelay: 5 * time.Millisecond, SnapshotDelay: 10 * time.Millisecond}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func launchReq(build string) clouds.LaunchRequest {
	return clouds.LaunchRequest{Build: build, Name: "imagegen-" + build, Image: "base", User: "ubuntu",
		Tags: map[string]string{clouds.TagBuild: build}, Log: discard()}
}

// pipeline does what the builder does, cleanup included, and returns the
// first error and the image it made (nil if it was deleted on failure).
func pipeline(ctx context.Context, c *simulated.Cloud, build string) (*clouds.Image, error) {
	inst := &clouds.Instance{Build: build}
	img := &clouds.Image{}
	err := func() error {
		if err := c.Launch(ctx, launchReq(build), inst); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		if err := c.Stop(ctx, inst); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		tags := map[string]string{clouds.TagBuild: build, clouds.TagRepo: "o/r"}
		if err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + build, Tags: tags, Log: discard()}, img); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		return nil
	}()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var cerrs []error
	if err != nil && img.ID != "" {
		cerrs = append(cerrs, c.DeleteImage(cctx, img))
	}
	cerrs = append(cerrs, c.Terminate(cctx, inst))
	if cerr := errors.Join(cerrs...); cerr != nil {
		return nil, errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// sweep removes every leftover, as the sweeper does after a failed cleanup:
// a few rounds, since with permanent_fail_rate the sweep's calls fail too.
func sweep(t *testing.T, c *simulated.Cloud) {
	t.Helper()
	var err error
	for range 5 {
		var left []clouds.Resource
		if left, err = c.Leftovers(context.Background(), ""); err != nil {
			continue
		}
		for _, r := range left {
			err = errors.Join(err, c.Remove(context.Background(), r))
		}
		if err == nil {
			return
		}
	}
	t.Fatalf("sweep: %v", err)
}

// TestFaultAtEachOp injects one permanent fault at each op: the op's error
// reaches the caller classified, and cleanup (plus the sweep, when the fault
// hit cleanup itself) leaves nothing.
func TestFaultAtEachOp(t *testing.T) {
	boom := errors.New("boom")
	for _, op := range simulated.Ops {
		for _, f := range []struct {
			name string
			err  error
			kind clouds.Kind
		}{
			{"plain error", boom, clouds.KindFailed},
			{"quota", &clouds.Error{Kind: clouds.KindQuota, Op: string(op), Code: "QuotaExceeded", Err: boom}, clouds.KindQuota},
		} {
			t.Run(string(op)+"/"+f.name, func(t *testing.T) {
				c := simulated.New(fast)
				c.Inject(op, simulated.Fault{Err: f.err, Times: 1})
				img, err := pipeline(context.Background(), c, "b1")
				inPipeline := !slices.Contains([]simulated.Op{simulated.OpTerminate, simulated.OpDeleteKey, simulated.OpDeleteImage, simulated.OpLeftovers, simulated.OpRemove}, op)
				switch {
				case op == simulated.OpTerminate || op == simulated.OpDeleteKey:
					// The delete failed: the pipeline reports it, the sweep cleans.
					if err == nil || clouds.KindOf(err) != f.kind || !errors.Is(err, boom) {
						t.Fatalf("pipeline error = %v (kind %q), want the injected %q", err, clouds.KindOf(err), f.kind)
					}
					if len(c.Live()) == 0 {
						t.Fatal("a failed delete left nothing; the fault did not hit")
					}
					sweep(t, c)
				case inPipeline:
					if err == nil || clouds.KindOf(err) != f.kind || !errors.Is(err, boom) {
						t.Fatalf("pipeline error = %v (kind %q), want the injected %q", err, clouds.KindOf(err), f.kind)
					}
					if len(c.Images()) != 0 {
						t.Fatalf("images left after a failed build: %v", c.Images())
					}
				default:
					// DeleteImage, Leftovers, Remove are not in a successful build: it succeeds.
					if err != nil {
						t.Fatalf("pipeline: %v", err)
					}
					if img == nil || len(c.Images()) != 1 {
						t.Fatalf("want one image, have %v", c.Images())
					}
				}
				if live := c.Live(); len(live) > 0 {
					t.Fatalf("left behind: %v", live)
				}
			})
		}
	}
}

func TestInjectedTransientIsRetried(t *testing.T) {
	tests := []struct {
		name    string
		times   int
		wantErr bool
	}{
		{"twice: retried away", 2, false},
		{"always: gives up", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := simulated.New(simulated.Options{})
			c.Inject(simulated.OpLaunch, simulated.Fault{Err: &clouds.Error{Kind: clouds.KindTransient, Code: "503", Err: errors.New("busy")}, Times: tt.times})
			_, err := pipeline(context.Background(), c, "b1")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr && !clouds.IsTransient(err) {
				t.Fatalf("err = %v: not transient", err)
			}
			if len(c.Live()) != 0 {
				t.Fatalf("left behind: %v", c.Live())
			}
		})
	}
}

func TestBlockAndDelayHonourContext(t *testing.T) {
	for _, op := range []simulated.Op{simulated.OpImportKey, simulated.OpLaunch, simulated.OpWaitRunning, simulated.OpStop, simulated.OpSnapshot, simulated.OpWaitImage} {
		for _, f := range []simulated.Fault{{Block: true}, {Delay: time.Hour}} {
			t.Run(fmt.Sprintf("%s/block=%v", op, f.Block), func(t *testing.T) {
				c := simulated.New(simulated.Options{})
				c.Inject(op, f)
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				start := time.Now()
				_, err := pipeline(ctx, c, "b1")
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want deadline exceeded", err)
				}
				if took := time.Since(start); took > time.Second {
					t.Fatalf("took %v", took)
				}
				if len(c.Live()) != 0 || len(c.Images()) != 0 {
					t.Fatalf("left behind: %v %v", c.Live(), c.Images())
				}
			})
		}
	}
}

func TestCallsAndImages(t *testing.T) {
	c := simulated.New(simulated.Options{Seed: 1})
	img, err := pipeline(context.Background(), c, "b1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"create key-pair kp-1",
		"create server srv-2",
		"stop server srv-2",
		"create image " + img.ID,
		"delete server srv-2",
		"delete key-pair kp-1",
	}
	if got := c.Calls(); !slices.Equal(got, want) {
		t.Fatalf("Calls() =\n%q\nwant\n%q", got, want)
	}
	imgs := c.Images()
	if len(imgs) != 1 || imgs[0].ID != img.ID || imgs[0].Name != "img-b1" {
		t.Fatalf("Images() = %+v", imgs)
	}
	if imgs[0].Tags[clouds.TagBuild] != "b1" || imgs[0].Tags[clouds.TagRepo] != "o/r" {
		t.Fatalf("image tags = %v", imgs[0].Tags)
	}
	if state, ok := c.ImageState(img.ID); !ok || state != "active" {
		t.Fatalf("ImageState = %q, %v", state, ok)
	}
	if img.ID[:4] != "sim-" {
		t.Fatalf("image id %q does not start with sim-", img.ID)
	}
	// The new image is a base image the cloud now knows.
	c2 := simulated.New(simulated.Options{BaseImages: []string{"base"}})
	if _, err := pipeline(context.Background(), c2, "b2"); err != nil {
		t.Fatal(err)
	}
	inst := &clouds.Instance{}
	req := launchReq("b3")
	req.Image = c2.Images()[0].ID
	if err := c2.Launch(context.Background(), req, inst); err != nil {
		t.Fatalf("Launch from the fake's own image: %v", err)
	}
	if err := c2.Terminate(context.Background(), inst); err != nil {
		t.Fatal(err)
	}
}

// TestContractViolations: the fake catches a pipeline that skips Stop or
// terminates before the image is usable.
func TestContractViolations(t *testing.T) {
	ctx := context.Background()
	t.Run("snapshot without stop", func(t *testing.T) {
		c := simulated.New(simulated.Options{})
		inst := &clouds.Instance{}
		if err := c.Launch(ctx, launchReq("b1"), inst); err != nil {
			t.Fatal(err)
		}
		defer c.Terminate(ctx, inst)
		img := &clouds.Image{}
		err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "x", Log: discard()}, img)
		if clouds.KindOf(err) != clouds.KindInvalid {
			t.Fatalf("err = %v, want invalid", err)
		}
		if img.ID != "" {
			t.Fatalf("img.ID = %q", img.ID)
		}
	})
	t.Run("terminate before the image is usable", func(t *testing.T) {
		c := simulated.New(simulated.Options{SnapshotDelay: time.Second})
		inst := &clouds.Instance{}
		if err := c.Launch(ctx, launchReq("b1"), inst); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(ctx, inst); err != nil {
			t.Fatal(err)
		}
		img := &clouds.Image{}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Snapshot(sctx, inst, clouds.SnapshotRequest{Name: "x", Log: discard()}, img) }()
		for len(c.Images()) == 0 {
			time.Sleep(time.Millisecond)
		}
		if err := c.Terminate(ctx, inst); err != nil {
			t.Fatal(err)
		}
		id := c.Images()[0].ID
		if state, _ := c.ImageState(id); state != "error" {
			t.Fatalf("image state = %q, want error", state)
		}
		cancel()
		<-done
		if err := c.DeleteImage(ctx, &clouds.Image{ID: id}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConcurrentBuilds runs many builds at once on one cloud, with random
// transient and a few permanent failures; run with -race.
func TestConcurrentBuilds(t *testing.T) {
	c := simulated.New(simulated.Options{LaunchDelay: 5 * time.Millisecond, SnapshotDelay: 5 * time.Millisecond,
		FailRate: 0.1, PermanentFailRate: 0.02, Seed: 42})
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = pipeline(context.Background(), c, fmt.Sprintf("b%d", i)) })
	}
	wg.Wait()
	ok, permanent := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case clouds.KindOf(err) == clouds.KindFailed:
			permanent++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok == 0 || ok+permanent != n {
		t.Fatalf("%d ok, %d permanent failures of %d", ok, permanent, n)
	}
	// Each successful build has its image; a failed build has one only when
	// its cleanup failed (the image was made, or deleting it failed too).
	byBuild := map[string]int{}
	for _, im := range c.Images() {
		byBuild[im.Tags[clouds.TagBuild]]++
	}
	for i, err := range errs {
		b := fmt.Sprintf("b%d", i)
		switch {
		case err == nil && byBuild[b] != 1:
			t.Errorf("build %s succeeded with %d images", b, byBuild[b])
		case err != nil && byBuild[b] != 0 && !strings.Contains(err.Error(), "cleanup: "):
			t.Errorf("failed build %s left %d images, error %v", b, byBuild[b], err)
		}
	}
	// Cleanup itself may have hit a permanent failure: the sweep finishes it.
	sweep(t, c)
	if live := c.Live(); len(live) != 0 {
		t.Fatalf("left behind: %v", live)
	}
	t.Logf("%d of %d builds succeeded, %d failed permanently", ok, n, permanent)
}

func slogTo(w *strings.Builder) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// OnLaunch sees every Launch request as it arrives, before its first API
// call: even one that a fault at that call fails.
func TestOnLaunch(t *testing.T) {
	ctx := context.Background()
	c := simulated.New(fast)
	var mu sync.Mutex
	seen := map[string]time.Time{}
	c.OnLaunch(func(build string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		seen[build] = at
	})
	before := time.Now()
	c.Inject(simulated.OpImportKey, simulated.Fault{Err: errors.New("no"), Times: 1})
	if err := c.Launch(ctx, launchReq("b-1"), &clouds.Instance{}); err == nil {
		t.Fatal("the injected fault did not fail the launch")
	}
	if err := c.Launch(ctx, launchReq("b-2"), &clouds.Instance{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, b := range []string{"b-1", "b-2"} {
		if at, ok := seen[b]; !ok || at.Before(before) {
			t.Errorf("launch of %s: seen %v at %v", b, ok, at)
		}
	}
	mu.Unlock()
	c.OnLaunch(nil)
	if err := c.Launch(ctx, launchReq("b-3"), &clouds.Instance{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := seen["b-3"]; ok {
		t.Error("seen after OnLaunch(nil)")
	}
}

// Leftovers of one build finds that build's resources among many, in
// creation order, after others were removed, and as another process sees
// them through a state file; Count counts each kind.
func TestLeftoversOfOneBuildAmongMany(t *testing.T) {
	ctx := context.Background()
	for _, file := range []string{"", t.TempDir() + "/state.json"} {
		c := simulated.New(simulated.Options{StateFile: file})
		insts := map[string]*clouds.Instance{}
		for i := range 50 {
			b := fmt.Sprintf("b%02d", i)
			insts[b] = &clouds.Instance{Build: b}
			if err := c.Launch(ctx, launchReq(b), insts[b]); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 50; i += 2 {
			if err := c.Terminate(ctx, insts[fmt.Sprintf("b%02d", i)]); err != nil {
				t.Fatal(err)
			}
		}
		if got := c.Count(clouds.KindServer); got != 25 {
			t.Errorf("state file %q: %d servers, want 25", file, got)
		}
		if got := c.Count(clouds.KindKeyPair); got != 25 {
			t.Errorf("state file %q: %d key pairs, want 25", file, got)
		}
		readers := []*simulated.Cloud{c}
		if file != "" {
			readers = append(readers, simulated.New(simulated.Options{StateFile: file}))
		}
		for _, r := range readers {
			for _, b := range []string{"b07", "b08"} {
				got, err := r.Leftovers(ctx, b)
				if err != nil {
					t.Fatal(err)
				}
				var want []clouds.Resource
				if b == "b07" {
					want = insts[b].Resources
				}
				if !slices.Equal(got, want) {
					t.Errorf("state file %q: Leftovers(%s) = %v, want %v", file, b, got, want)
				}
			}
			all, err := r.Leftovers(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 50 || !slices.IsSortedFunc(all, func(a, b clouds.Resource) int { return strings.Compare(a.Build, b.Build) }) {
				t.Errorf("state file %q: Leftovers of every build: %d resources, want 50 in creation order: %v", file, len(all), all)
			}
		}
		if err := c.Remove(ctx, insts["b07"].Resources[1]); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Leftovers(ctx, "b07"); !slices.Equal(got, insts["b07"].Resources[:1]) {
			t.Errorf("state file %q: Leftovers after Remove = %v, want %v", file, got, insts["b07"].Resources[:1])
		}
	}
}
