package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

// PageOptions filter and page Store.Page, for the build list in the browser.
type PageOptions struct {
	Repo      string
	Generator string
	State     builder.State // "" for any
	Offset    int           // matching builds to skip (newest first)
	Limit     int           // default 25, at most 500
	// Match, when set, keeps only the builds of the repositories it
	// accepts (those a signed-in API token is limited to).
	Match func(repo string) bool
}

// Page returns one page of builds matching o, newest first, and whether more
// match after it. Filtering reads records in index order, so a deep page costs
// the reads of every page before it: fine for people clicking "older".
func (s *Store) Page(ctx context.Context, o PageOptions) ([]*builds.Build, bool, error) {
	if o.Limit <= 0 || o.Limit > 500 {
		o.Limit = 25
	}
	if o.Offset < 0 {
		o.Offset = 0
	}
	var out []*builds.Build
	skip := o.Offset
	const batch = 100
	for start := int64(0); ; start += batch {
		ids, err := s.rdb.ZRevRange(ctx, buildsIndex, start, start+batch-1).Result()
		if err != nil {
			return nil, false, fmt.Errorf("list builds: %w", err)
		}
		for _, id := range ids {
			b, _, err := s.Get(ctx, id)
			if errors.Is(err, builds.ErrNotFound) {
				continue // expired
			}
			if err != nil {
				return nil, false, err
			}
			if (o.Repo != "" && b.Repo != o.Repo) || (o.Generator != "" && b.Generator != o.Generator) ||
				(o.State != "" && b.State != o.State) || (o.Match != nil && !o.Match(b.Repo)) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			if len(out) == o.Limit {
				return out, true, nil // one more matches: there is a next page
			}
			out = append(out, b)
		}
		if len(ids) < batch {
			return out, false, nil
		}
	}
}

// LogSince returns the lines of a build × cloud log from line number from on,
// counted from the log's first line ever written (lines dropped to keep the
// log under its limit still count), and the number to ask from next time. A
// from that points into the dropped part starts at the oldest line kept.
func (s *Store) LogSince(ctx context.Context, id, cloud string, from int) ([]builds.LogEntry, int, error) {
	if from < 0 {
		from = 0
	}
	d, raw, err := s.readLog(ctx, logKeysOf(id, cloud, false))
	if err == nil && d == 0 && len(raw) == 0 && !s.cluster {
		// Nothing under the new keys: a log a version before the hash tags wrote?
		d, raw, err = s.readLog(ctx, logKeysOf(id, cloud, true))
	}
	if err != nil {
		return nil, from, fmt.Errorf("read log %s/%s: %w", id, cloud, err)
	}
	skip := max(from-d, 0)
	if skip >= len(raw) {
		return nil, max(from, d+len(raw)), nil
	}
	out := make([]builds.LogEntry, 0, len(raw)-skip)
	for _, r := range raw[skip:] {
		var l builds.LogEntry
		if err := json.Unmarshal([]byte(r), &l); err != nil {
			return nil, from, fmt.Errorf("decode log line: %w", err)
		}
		out = append(out, l)
	}
	return out, d + len(raw), nil
}

// readLog reads a log's dropped count and its lines in one transaction, so a
// trim between the two reads cannot shift the numbering.
func (s *Store) readLog(ctx context.Context, k logKeys) (int, []string, error) {
	var dropped *redis.StringCmd
	var lines *redis.StringSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		dropped = p.HGet(ctx, k.meta, "dropped")
		lines = p.LRange(ctx, k.list, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, err
	}
	d, err := dropped.Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, err
	}
	raw, err := lines.Result()
	return d, raw, err
}
