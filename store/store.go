// Package store keeps imagegen's records in Redis: builds and their clouds'
// records, build logs (and the LogSink that writes them as a build runs), the
// image lineage, short locks, and the pages of builds the browser lists. It
// implements builds.Store; its Redis keys and scripts are a compatibility
// contract (records written by one version are read by the next). It knows
// nothing of GitHub, the queue or HTTP.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
)

// Store keeps build records, logs and lineage in Redis. Every key expires
// after the retention, refreshed when written.
//
// A build is one hash: "meta" holds JSON and "specz" gzip'd JSON (older
// records: "spec", plain), and each cloud has its own field "cloud:<name>",
// so clouds finishing at once never overwrite each other.
// A cloud's manifest (gzipped CycloneDX JSON) is the field "manifest:<name>"
// of the same hash, so it lives exactly as long as the record; reading a
// build leaves the manifests in Redis. images.go lists the other fields and
// keys (provenance, the image index).
type Store struct {
	rdb       redis.UniversalClient
	cluster   bool // rdb is a Redis Cluster's: no key there has an old name (legacy)
	retention time.Duration
	logLimit  int
}

// New returns a Store; logLimit is the bytes of log kept per build × cloud (the tail).
func New(rdb redis.UniversalClient, retention time.Duration, logLimit int) *Store {
	if retention <= 0 {
		retention = 90 * 24 * time.Hour
	}
	if logLimit <= 0 {
		logLimit = 4 << 20
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Store{rdb: rdb, cluster: cluster, retention: retention, logLimit: logLimit}
}

const prefix = "imagegen:"

// A build's keys (its hash, and each cloud's log and log meta) share the
// hash tag {<build id>}: on a Redis Cluster they live in one hash slot, so
// the scripts and transactions that touch several of them (appendLog,
// LogSince) run there. Every other script or transaction touches one key:
// createBuild the build's hash (the index is written after it, alone),
// update a build's hash, AddImage a lineage, SetLastClouds a generator,
// unlock a lock, FirstSeen the sweep's sightings. A lineage, a generator's
// clouds and a lock are never touched together with a build, so they need no
// tag (and keep their names).
func buildKey(id string) string          { return prefix + "build:{" + id + "}" }
func logKey(id, cloud string) string     { return prefix + "log:{" + id + "}:" + cloud }
func logMetaKey(id, cloud string) string { return prefix + "logmeta:{" + id + "}:" + cloud }
func lineageKey(repo, gen string) string { return prefix + "lineage:" + repo + ":" + gen }
func generatorKey(repo, gen string) string {
	return prefix + "generator:" + repo + ":" + gen
}
func lockKey(name string) string { return prefix + "lock:" + name }

// Versions before the hash tags (up to issue 23) named a build's keys
// without them. Their records are still read, and the builds they left
// running are still updated, under those names until they expire (the
// retention after their last write): see legacy. Such keys exist only on a
// single Redis or behind Sentinel, as those versions could not create a
// build on a cluster.
func legacyBuildKey(id string) string          { return prefix + "build:" + id }
func legacyLogKey(id, cloud string) string     { return prefix + "log:" + id + ":" + cloud }
func legacyLogMetaKey(id, cloud string) string { return prefix + "logmeta:" + id + ":" + cloud }

// logKeys are the list and meta hash of a build × cloud log.
type logKeys struct{ list, meta string }

func logKeysOf(id, cloud string, legacy bool) logKeys {
	if legacy {
		return logKeys{legacyLogKey(id, cloud), legacyLogMetaKey(id, cloud)}
	}
	return logKeys{logKey(id, cloud), logMetaKey(id, cloud)}
}

const buildsIndex = prefix + "builds"

// sweepSeenKey remembers when the sweep first saw a resource of an unknown
// build, so it is removed only once it has been orphaned for a while.
const sweepSeenKey = prefix + "sweep:seen"

var _ builds.Store = (*Store)(nil)

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// createBuild writes a new build's hash unless the build exists, in one
// step: a plan retried after a crash never finds a build whose meta was
// written but not its clouds (it would look done, and stay so).
var createBuild = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'meta') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// Create stores a new build with its spec. It returns false, and changes
// nothing, when a build with that id exists (a retried plan). The build is
// indexed (List, BuildsSince) after its hash is written, on every call: the
// index is one key for all builds, in another hash slot of a cluster than
// the build, so a crash between the two leaves an unlisted build, which the
// retried plan lists.
func (s *Store) Create(ctx context.Context, b *builds.Build, sp *spec.Spec) (bool, error) {
	b.Summarize()
	meta, err := json.Marshal(metaOf(b))
	if err != nil {
		return false, fmt.Errorf("encode build: %w", err)
	}
	sj, err := json.Marshal(sp)
	if err == nil {
		sj, err = gzipped(sj)
	}
	if err != nil {
		return false, fmt.Errorf("encode spec: %w", err)
	}
	args := []any{s.retention.Milliseconds(), "meta", meta, specZField, sj}
	for name, c := range b.Clouds {
		cj, err := json.Marshal(c)
		if err != nil {
			return false, fmt.Errorf("encode cloud: %w", err)
		}
		args = append(args, "cloud:"+name, cj)
	}
	var legacy int64
	if !s.cluster {
		if legacy, err = s.rdb.Exists(ctx, legacyBuildKey(b.ID)).Result(); err != nil {
			return false, fmt.Errorf("create build %s: %w", b.ID, err)
		}
	}
	created := false
	if legacy == 0 {
		n, err := createBuild.Run(ctx, s.rdb, []string{buildKey(b.ID)}, args...).Int()
		if err != nil {
			return false, fmt.Errorf("create build %s: %w", b.ID, err)
		}
		created = n == 1
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, buildsIndex, redis.Z{Score: float64(b.Created.UnixNano()), Member: b.ID})
		p.ZRemRangeByScore(ctx, buildsIndex, "-inf", strconv.FormatInt(time.Now().Add(-s.retention).UnixNano(), 10))
		p.PExpire(ctx, buildsIndex, s.retention)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("index build %s: %w", b.ID, err)
	}
	return created, nil
}

// legacy reports whether build id is kept under the keys of a version
// before the hash tags: when it has no hash under the new name but has one
// under the old.
func (s *Store) legacy(ctx context.Context, id string) (bool, error) {
	if s.cluster {
		return false, nil
	}
	n, err := s.rdb.Exists(ctx, buildKey(id)).Result()
	if err != nil || n == 1 {
		return false, err
	}
	n, err = s.rdb.Exists(ctx, legacyBuildKey(id)).Result()
	return n == 1, err
}

// metaOf is b without its clouds (they have their own fields).
func metaOf(b *builds.Build) *builds.Build {
	m := *b
	m.Clouds = nil
	return &m
}

// Get returns the build and its spec.
func (s *Store) Get(ctx context.Context, id string) (*builds.Build, *spec.Spec, error) {
	if id == "" || strings.ContainsAny(id, ":*{} ") {
		return nil, nil, builds.ErrNotFound
	}
	raw, err := getBuild.Run(ctx, s.rdb, []string{buildKey(id)}).StringSlice()
	if err == nil && len(raw) == 0 && !s.cluster {
		raw, err = getBuild.Run(ctx, s.rdb, []string{legacyBuildKey(id)}).StringSlice()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read build %s: %w", id, err)
	}
	h := make(map[string]string, len(raw)/2)
	for i := 0; i+1 < len(raw); i += 2 {
		h[raw[i]] = raw[i+1]
	}
	return decodeBuild(id, h)
}

// getBuild is HGETALL without the manifests: they can be megabytes each,
// and only the manifest and drift routes read them.
var getBuild = redis.NewScript(`
local want = {}
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, 9) ~= 'manifest:' then want[#want + 1] = k end
end
if #want == 0 then return {} end
local vals = redis.call('HMGET', KEYS[1], unpack(want))
local out = {}
for i, k in ipairs(want) do
  out[2 * i - 1] = k
  out[2 * i] = vals[i]
end
return out
`)

func manifestField(cloud string) string { return "manifest:" + cloud }

// saveManifest sets a manifest field of a build that exists, refreshing the
// record's expiry: a manifest never outlives, nor makes, a record.
var saveManifest = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'meta') == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// SaveManifest stores a cloud's manifest, gzipped CycloneDX JSON
// (builder/manifest's Compress), with the build's record.
func (s *Store) SaveManifest(ctx context.Context, id, cloud string, gz []byte) error {
	n, err := saveManifest.Run(ctx, s.rdb, []string{buildKey(id)}, manifestField(cloud), gz, s.retention.Milliseconds()).Int()
	if err == nil && n == 0 {
		if legacy, lerr := s.legacy(ctx, id); lerr == nil && legacy {
			n, err = saveManifest.Run(ctx, s.rdb, []string{legacyBuildKey(id)}, manifestField(cloud), gz, s.retention.Milliseconds()).Int()
		}
	}
	if err != nil {
		return fmt.Errorf("store manifest %s/%s: %w", id, cloud, err)
	}
	if n == 0 {
		return fmt.Errorf("store manifest %s/%s: build %w", id, cloud, builds.ErrNotFound)
	}
	return nil
}

// Manifest returns a cloud's manifest as SaveManifest stored it;
// builds.ErrNotFound when the build or the manifest does not exist.
func (s *Store) Manifest(ctx context.Context, id, cloud string) ([]byte, error) {
	if id == "" || strings.ContainsAny(id, ":*{} ") {
		return nil, builds.ErrNotFound
	}
	b, err := s.rdb.HGet(ctx, buildKey(id), manifestField(cloud)).Bytes()
	if errors.Is(err, redis.Nil) && !s.cluster {
		b, err = s.rdb.HGet(ctx, legacyBuildKey(id), manifestField(cloud)).Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("manifest %s/%s: %w", id, cloud, builds.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %s/%s: %w", id, cloud, err)
	}
	return b, nil
}

func decodeBuild(id string, h map[string]string) (*builds.Build, *spec.Spec, error) {
	if h["meta"] == "" {
		return nil, nil, fmt.Errorf("build %s: %w", id, builds.ErrNotFound)
	}
	var b builds.Build
	if err := json.Unmarshal([]byte(h["meta"]), &b); err != nil {
		return nil, nil, fmt.Errorf("decode build %s: %w", id, err)
	}
	b.Clouds = map[string]*builds.CloudRecord{}
	for k, v := range h {
		name, ok := strings.CutPrefix(k, "cloud:")
		if !ok {
			continue
		}
		var c builds.CloudRecord
		if err := json.Unmarshal([]byte(v), &c); err != nil {
			return nil, nil, fmt.Errorf("decode build %s cloud %s: %w", id, name, err)
		}
		b.Clouds[name] = &c
	}
	b.Summarize()
	var sp *spec.Spec
	sj, err := specJSON(h)
	if err != nil {
		return nil, nil, fmt.Errorf("decode build %s spec: %w", id, err)
	}
	if len(sj) > 0 {
		sp = new(spec.Spec)
		if err := json.Unmarshal(sj, sp); err != nil {
			return nil, nil, fmt.Errorf("decode build %s spec: %w", id, err)
		}
	}
	return &b, sp, nil
}

// UpdateMeta changes the build's own fields (not its clouds) atomically.
func (s *Store) UpdateMeta(ctx context.Context, id string, fn func(*builds.Build)) error {
	return s.update(ctx, id, "meta", func(raw string) (any, error) {
		var b builds.Build
		if err := json.Unmarshal([]byte(raw), &b); err != nil {
			return nil, err
		}
		fn(&b)
		return metaOf(&b), nil
	})
}

// UpdateCloud changes one cloud's record atomically and returns it as written.
func (s *Store) UpdateCloud(ctx context.Context, id, cloud string, fn func(*builds.CloudRecord)) (*builds.CloudRecord, error) {
	var out builds.CloudRecord
	err := s.update(ctx, id, "cloud:"+cloud, func(raw string) (any, error) {
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			return nil, err
		}
		fn(&out)
		return &out, nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// update is a WATCH/MULTI read-modify-write of one hash field, retried when
// another writer got there first. A build kept under the old keys (legacy)
// is updated there.
func (s *Store) update(ctx context.Context, id, field string, fn func(raw string) (any, error)) error {
	err := s.updateKey(ctx, buildKey(id), id, field, fn)
	if errors.Is(err, builds.ErrNotFound) {
		if legacy, lerr := s.legacy(ctx, id); lerr == nil && legacy {
			err = s.updateKey(ctx, legacyBuildKey(id), id, field, fn)
		}
	}
	return err
}

func (s *Store) updateKey(ctx context.Context, key, id, field string, fn func(raw string) (any, error)) error {
	for try := 0; try < 50; try++ {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			raw, err := tx.HGet(ctx, key, field).Result()
			if errors.Is(err, redis.Nil) {
				return fmt.Errorf("build %s %s: %w", id, field, builds.ErrNotFound)
			}
			if err != nil {
				return err
			}
			v, err := fn(raw)
			if err != nil {
				return fmt.Errorf("build %s %s: %w", id, field, err)
			}
			j, err := json.Marshal(v)
			if err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, field, j)
				p.Expire(ctx, key, s.retention)
				return nil
			})
			return err
		}, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update build %s: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("update build %s: too much contention", id)
}

// List returns builds, newest first.
func (s *Store) List(ctx context.Context, o builds.ListOptions) ([]*builds.Build, error) {
	if o.Limit <= 0 || o.Limit > 500 {
		o.Limit = 50
	}
	var out []*builds.Build
	const page = 100
	for start := int64(0); len(out) < o.Limit; start += page {
		ids, err := s.rdb.ZRevRange(ctx, buildsIndex, start, start+page-1).Result()
		if err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		for _, id := range ids {
			b, _, err := s.Get(ctx, id)
			if errors.Is(err, builds.ErrNotFound) {
				continue // expired
			}
			if err != nil {
				return nil, err
			}
			if (o.Repo != "" && b.Repo != o.Repo) || (o.Generator != "" && b.Generator != o.Generator) ||
				(o.Match != nil && !o.Match(b.Repo)) {
				continue
			}
			out = append(out, b)
			if len(out) == o.Limit {
				break
			}
		}
	}
	return out, nil
}

// BuildsSince returns the ids of the builds created since t, oldest first.
func (s *Store) BuildsSince(ctx context.Context, t time.Time) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, buildsIndex, &redis.ZRangeBy{Min: strconv.FormatInt(t.UnixNano(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	return ids, nil
}

// appendLog pushes a line and drops the oldest lines while the log is over
// its byte limit, in one step, so concurrent writers cannot overshoot.
// appendLog adds lines to a log and trims it to its limit from the start.
// KEYS: the list, its meta hash. ARGV: the limit in bytes, the retention in
// ms, how many lines just before these were skipped (never sent, being
// beyond the tail), then the lines. Lines skipped mean nothing stored before
// them can be part of the tail: they are dropped too, so the log stays one
// run of lines whose first is number "dropped".
var appendLog = redis.NewScript(`
local skipped = tonumber(ARGV[3])
if skipped > 0 then
  local old = redis.call('LLEN', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'bytes', 0)
  redis.call('HINCRBY', KEYS[2], 'dropped', old + skipped)
end
local n, add = redis.call('LLEN', KEYS[1]), 0
for i = 4, #ARGV, 512 do
  local j = math.min(i + 511, #ARGV)
  for k = i, j do add = add + string.len(ARGV[k]) end
  n = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
end
local size = redis.call('HINCRBY', KEYS[2], 'bytes', add)
local limit, dropped = tonumber(ARGV[1]), 0
while size > limit and n > 1 do
  size = size - string.len(redis.call('LPOP', KEYS[1]))
  dropped = dropped + 1
  n = n - 1
end
if dropped > 0 then
  redis.call('HSET', KEYS[2], 'bytes', size)
  redis.call('HINCRBY', KEYS[2], 'dropped', dropped)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return n
`)

// AppendLog adds one (already redacted) line to a build × cloud log.
func (s *Store) AppendLog(ctx context.Context, id, cloud string, l builds.LogEntry) error {
	return s.AppendLogs(ctx, id, cloud, []builds.LogEntry{l}, 0)
}

// AppendLogs adds (already redacted) lines to a build × cloud log in one
// round trip, keeping the tail within the log limit. skipped counts the lines
// that came just before ls and were never sent, being beyond the tail anyway
// (LogSink drops them in memory): they and every line stored before them
// count as dropped.
func (s *Store) AppendLogs(ctx context.Context, id, cloud string, ls []builds.LogEntry, skipped int) error {
	if len(ls) == 0 && skipped == 0 {
		return nil
	}
	legacy, err := s.legacy(ctx, id)
	if err != nil {
		return fmt.Errorf("append log %s/%s: %w", id, cloud, err)
	}
	return s.appendLogs(ctx, logKeysOf(id, cloud, legacy), ls, skipped)
}

func (s *Store) appendLogs(ctx context.Context, k logKeys, ls []builds.LogEntry, skipped int) error {
	args := make([]any, 0, 3+len(ls))
	args = append(args, s.logLimit, s.retention.Milliseconds(), skipped)
	for _, l := range ls {
		j, err := json.Marshal(l)
		if err != nil {
			return err
		}
		args = append(args, j)
	}
	if err := appendLog.Run(ctx, s.rdb, []string{k.list, k.meta}, args...).Err(); err != nil {
		return fmt.Errorf("append log %s: %w", k.list, err)
	}
	return nil
}

// Log returns a build × cloud log and how many lines were dropped from its start.
func (s *Store) Log(ctx context.Context, id, cloud string) ([]builds.LogEntry, int, error) {
	lines, next, err := s.LogSince(ctx, id, cloud, 0)
	if err != nil {
		return nil, 0, err
	}
	return lines, next - len(lines), nil
}

// AddImage records a new image in its generator's lineage.
func (s *Store) AddImage(ctx context.Context, e builds.LineageEntry) error {
	j, err := json.Marshal(e)
	if err != nil {
		return err
	}
	key := lineageKey(e.Repo, e.Generator)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, key, redis.Z{Score: float64(e.Created.UnixNano()), Member: j})
		p.ZRemRangeByScore(ctx, key, "-inf", fmt.Sprint(time.Now().Add(-s.retention).UnixNano()))
		p.Expire(ctx, key, s.retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record image: %w", err)
	}
	return s.indexImage(ctx, e, j)
}

// Images returns the lineage of a generator, newest first.
func (s *Store) Images(ctx context.Context, repo, generator string) ([]builds.LineageEntry, error) {
	raw, err := s.rdb.ZRevRange(ctx, lineageKey(repo, generator), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read lineage: %w", err)
	}
	out := make([]builds.LineageEntry, 0, len(raw))
	for _, r := range raw {
		var e builds.LineageEntry
		if err := json.Unmarshal([]byte(r), &e); err != nil {
			return nil, fmt.Errorf("decode lineage: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// LastClouds returns the cloud list of the generator's last planned build.
func (s *Store) LastClouds(ctx context.Context, repo, generator string) ([]string, bool, error) {
	raw, err := s.rdb.HGet(ctx, generatorKey(repo, generator), "clouds").Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read generator %s: %w", generator, err)
	}
	var names []string
	if err := json.Unmarshal([]byte(raw), &names); err != nil {
		return nil, false, fmt.Errorf("decode generator %s: %w", generator, err)
	}
	return names, true, nil
}

// SetLastClouds records the cloud list a generator was last planned with.
func (s *Store) SetLastClouds(ctx context.Context, repo, generator string, names []string) error {
	j, _ := json.Marshal(names)
	key := generatorKey(repo, generator)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "clouds", j)
		p.Expire(ctx, key, s.retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record generator %s: %w", generator, err)
	}
	return nil
}

// unlock deletes the lock only when it is still ours.
var unlock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Lock takes a short Redis lock (expiring after ttl, so a dead holder cannot
// block forever), polling until ctx ends. It serializes the read-then-report
// of a build's statuses and check run across workers.
func (s *Store) Lock(ctx context.Context, name string, ttl time.Duration) (func(), error) {
	token := builds.NewID()
	key := lockKey(name)
	// Held for a few GitHub calls at most: poll briskly, as the waiter is
	// usually a build's final report, which the commit's status waits for.
	for wait := 2 * time.Millisecond; ; {
		ok, err := s.rdb.SetNX(ctx, key, token, ttl).Result()
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if ok {
			return func() {
				_ = unlock.Run(context.WithoutCancel(ctx), s.rdb, []string{key}, token).Err()
			}, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// TryLock takes the lock name for ttl when it is free, and does not release
// it: held, it says "done by someone" until it expires.
func (s *Store) TryLock(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, lockKey(name), builds.NewID(), ttl).Result()
	if err != nil {
		return false, fmt.Errorf("lock %s: %w", name, err)
	}
	return ok, nil
}

// FirstSeen returns when key was first seen, recording now (to the second)
// if it was not seen before; every sighting is forgotten keep after the
// latest first sighting was recorded.
func (s *Store) FirstSeen(ctx context.Context, key string, now time.Time, keep time.Duration) (time.Time, error) {
	if err := s.rdb.HSetNX(ctx, sweepSeenKey, key, now.Unix()).Err(); err != nil {
		return time.Time{}, fmt.Errorf("remember %s: %w", key, err)
	}
	s.rdb.Expire(ctx, sweepSeenKey, keep)
	v, err := s.rdb.HGet(ctx, sweepSeenKey, key).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", key, err)
	}
	first, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", key, err)
	}
	return time.Unix(first, 0), nil
}

// ForgetSeen forgets key's sighting, best effort.
func (s *Store) ForgetSeen(ctx context.Context, key string) {
	s.rdb.HDel(ctx, sweepSeenKey, key)
}
