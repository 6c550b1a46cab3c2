package simulated_test

import (
	"context"
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
