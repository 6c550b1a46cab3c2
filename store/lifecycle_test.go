package store

import (
	"context"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
)

func TestBaseWatchesAndPendingPrunes(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	w := builds.BaseWatch{Repo: "o/r", Generator: "web", Branch: "main", Build: "b1", Tried: "k1"}
	if err := s.WatchBase(ctx, w); err != nil {
		t.Fatal(err)
	}
	// A later build's watch keeps what a rebuild was started for.
	if err := s.WatchBase(ctx, builds.BaseWatch{Repo: "o/r", Generator: "web", Branch: "main", Build: "b2"}); err != nil {
		t.Fatal(err)
	}
	_ = s.WatchBase(ctx, builds.BaseWatch{Repo: "o/r", Generator: "web", Branch: "dev", Build: "b3"})
	ws, err := s.BaseWatches(ctx)
	if err != nil || len(ws) != 2 {
		t.Fatalf("watches %+v, %v", ws, err)
	}
	for _, got := range ws {
		if got.Branch == "main" && (got.Build != "b2" || got.Tried != "k1") {
			t.Errorf("main's watch %+v: want build b2, tried k1", got)
		}
	}
	if ttl := rdb.TTL(ctx, baseWatchKey).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("%s expires in %s", baseWatchKey, ttl)
	}
	if err := s.DropBaseWatch(ctx, "o/r", "web", "main"); err != nil {
		t.Fatal(err)
	}
	if ws, _ := s.BaseWatches(ctx); len(ws) != 1 || ws[0].Branch != "dev" {
		t.Errorf("after the drop: %+v", ws)
	}

	p := builds.PendingPrune{Cloud: "sim", Repo: "o/r", Generator: "web", Branch: "main", Keep: 2, Errors: []string{"busy"}}
	if err := s.AddPendingPrune(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Errors = []string{"still busy"}
	_ = s.AddPendingPrune(ctx, p)
	ps, err := s.PendingPrunes(ctx)
	if err != nil || len(ps) != 1 || ps[0].Errors[0] != "still busy" {
		t.Fatalf("pending %+v, %v", ps, err)
	}
	if err := s.DropPendingPrune(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.PendingPrunes(ctx); len(ps) != 0 {
		t.Errorf("after the drop: %+v", ps)
	}
}
