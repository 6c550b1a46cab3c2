package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
)

// The image lifecycle's keys, beside the records (builds.LifecycleStore):
//
//	imagegen:basewatch     hash: repo \x00 generator \x00 branch → BaseWatch JSON,
//	                       the generators whose base image filters the base check resolves
//	imagegen:prune:pending hash: cloud \x00 repo \x00 generator \x00 branch → PendingPrune JSON,
//	                       retentions whose deletes failed, for the sweep
//
// Both expire with the records' retention, refreshed on every write: a
// watch names a build, useless once that build's record is gone.
const (
	baseWatchKey    = prefix + "basewatch"
	pendingPruneKey = prefix + "prune:pending"
)

var _ builds.LifecycleStore = (*Store)(nil)

func watchField(repo, generator, branch string) string {
	return repo + "\x00" + generator + "\x00" + branch
}

// WatchBase records w, keeping the Tried of the watch it replaces when
// w.Tried is empty.
func (s *Store) WatchBase(ctx context.Context, w builds.BaseWatch) error {
	field := watchField(w.Repo, w.Generator, w.Branch)
	if w.Tried == "" {
		raw, err := s.rdb.HGet(ctx, baseWatchKey, field).Result()
		switch {
		case err == nil:
			var old builds.BaseWatch
			if json.Unmarshal([]byte(raw), &old) == nil {
				w.Tried = old.Tried
			}
		case !errors.Is(err, redis.Nil):
			return fmt.Errorf("read base watch: %w", err)
		}
	}
	return s.hsetJSON(ctx, baseWatchKey, field, w)
}

// BaseWatches returns every watch, in no order.
func (s *Store) BaseWatches(ctx context.Context) ([]builds.BaseWatch, error) {
	raw, err := s.rdb.HGetAll(ctx, baseWatchKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read base watches: %w", err)
	}
	out := make([]builds.BaseWatch, 0, len(raw))
	for _, v := range raw {
		var w builds.BaseWatch
		if err := json.Unmarshal([]byte(v), &w); err != nil {
			return nil, fmt.Errorf("decode base watch: %w", err)
		}
		out = append(out, w)
	}
	return out, nil
}

// DropBaseWatch removes a watch; one that does not exist is no error.
func (s *Store) DropBaseWatch(ctx context.Context, repo, generator, branch string) error {
	if err := s.rdb.HDel(ctx, baseWatchKey, watchField(repo, generator, branch)).Err(); err != nil {
		return fmt.Errorf("drop base watch: %w", err)
	}
	return nil
}

func pruneField(p builds.PendingPrune) string {
	return p.Cloud + "\x00" + p.Repo + "\x00" + p.Generator + "\x00" + p.Branch
}

// AddPendingPrune records a retention for the sweep to run again.
func (s *Store) AddPendingPrune(ctx context.Context, p builds.PendingPrune) error {
	return s.hsetJSON(ctx, pendingPruneKey, pruneField(p), p)
}

// PendingPrunes returns the retentions to run again, in no order.
func (s *Store) PendingPrunes(ctx context.Context) ([]builds.PendingPrune, error) {
	raw, err := s.rdb.HGetAll(ctx, pendingPruneKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read pending prunes: %w", err)
	}
	out := make([]builds.PendingPrune, 0, len(raw))
	for _, v := range raw {
		var p builds.PendingPrune
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("decode pending prune: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// DropPendingPrune forgets a retention that went through.
func (s *Store) DropPendingPrune(ctx context.Context, p builds.PendingPrune) error {
	if err := s.rdb.HDel(ctx, pendingPruneKey, pruneField(p)).Err(); err != nil {
		return fmt.Errorf("drop pending prune: %w", err)
	}
	return nil
}

// hsetJSON sets a hash field to v's JSON and refreshes the hash's expiry.
func (s *Store) hsetJSON(ctx context.Context, key, field string, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, field, j)
		p.Expire(ctx, key, s.retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	return nil
}
