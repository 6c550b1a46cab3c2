package simulated_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
)

// TestStateFileSharedAcrossClouds: two clouds on one state_file behave as one
// cloud (what one launches the other lists and removes), and a cloud opened
// afresh on the file — a restarted worker — still sees it all.
func TestStateFileSharedAcrossClouds(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "sim.json")
	a := simulated.New(simulated.Options{StateFile: file})
	b := simulated.New(simulated.Options{StateFile: file})

	var wg sync.WaitGroup
	insts := make([]*clouds.Instance, 8)
	for i := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			insts[i] = &clouds.Instance{}
			if err := c.Launch(ctx, clouds.LaunchRequest{Build: "b" + string(rune('0'+i)), Image: "debian"}, insts[i]); err != nil {
				t.Errorf("launch %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, in := range insts {
		for _, r := range in.Resources {
			if ids[r.ID] {
				t.Errorf("resource id %s handed out twice across processes", r.ID)
			}
			ids[r.ID] = true
		}
	}
	fresh := simulated.New(simulated.Options{StateFile: file})
	left, err := fresh.Leftovers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 16 {
		t.Fatalf("a fresh cloud on the file lists %d leftovers; want 16 (8 key pairs, 8 servers)", len(left))
	}
	for _, r := range left {
		if err := fresh.Remove(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if live := a.Live(); len(live) != 0 {
		t.Errorf("after the fresh cloud removed everything, the first still sees %v", live)
	}
}

// TestStateFileImages: images live in the state file's images file, shared
// like the rest; calls that do not touch images neither read nor rewrite it
// (a long run piles up images, and every call used to decode and write them
// all under the shared lock).
func TestStateFileImages(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "sim.json")
	a := simulated.New(simulated.Options{StateFile: file})
	inst := &clouds.Instance{}
	if err := a.Launch(ctx, clouds.LaunchRequest{Build: "b1", Image: "debian"}, inst); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx, inst); err != nil {
		t.Fatal(err)
	}
	img := &clouds.Image{}
	if err := a.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "g-1", Tags: map[string]string{clouds.TagBuild: "b1"}}, img); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(file + ".images")
	if err != nil {
		t.Fatalf("no images file: %v", err)
	}
	// Resource calls from another process leave the images file alone.
	b := simulated.New(simulated.Options{StateFile: file})
	if err := b.Terminate(ctx, &clouds.Instance{Resources: inst.Resources[:1]}); err != nil { // the key pair
		t.Fatal(err)
	}
	if _, err := b.Leftovers(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(file + ".images"); !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the images file was rewritten by calls that do not change images")
	}
	if ims := b.Images(); len(ims) != 1 || ims[0].ID != img.ID {
		t.Fatalf("another process sees images %+v, want %s", ims, img.ID)
	}
	// Tags set by one process are what another describes.
	if err := b.TagImage(ctx, img.ID, map[string]string{"imagegen:tested": "passed"}); err != nil {
		t.Fatalf("tag the image from another process: %v", err)
	}
	if got, err := a.DescribeImage(ctx, img.ID); err != nil || got.Tags["imagegen:tested"] != "passed" || got.Tags[clouds.TagBuild] != "b1" {
		t.Fatalf("describe after another process tagged it: %+v, %v", got, err)
	}
	if err := b.DeleteImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if ims := a.Images(); len(ims) != 0 {
		t.Errorf("after the other process deleted it, images %+v", ims)
	}
}
