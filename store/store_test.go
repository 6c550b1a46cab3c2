package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// onCluster, while TestStoreOnCluster runs, makes newStore hand out a store
// on its (flushed) Redis Cluster instead of a redis-server of its own.
var onCluster *servicetest.RedisCluster

func newStore(t *testing.T, retention time.Duration, logLimit int) (*Store, redis.UniversalClient) {
	t.Helper()
	if onCluster != nil {
		cc := onCluster.Client(t)
		err := cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() })
		if err != nil {
			t.Fatal(err)
		}
		return New(cc, retention, logLimit), cc
	}
	r := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, retention, logLimit), rdb
}

// TestStoreOnCluster runs the store's tests on a real Redis Cluster of three
// masters, where every script and transaction must keep to one hash slot
// (before the hash tags, Create failed with "CROSSSLOT Keys in request don't
// hash to the same slot"). The tests counting script calls on one server
// are left out.
func TestStoreOnCluster(t *testing.T) {
	c := servicetest.StartRedisCluster(t, 3, 0)
	onCluster = c
	defer func() { onCluster = nil }()
	for name, test := range map[string]func(*testing.T){
		"CreateGetRetention":      TestStoreCreateGetRetention,
		"ConcurrentCloudUpdates":  TestStoreConcurrentCloudUpdates,
		"LogKeepsTail":            TestStoreLogKeepsTail,
		"ListAndLineage":          TestStoreListAndLineage,
		"LockSerializes":          TestLockSerializes,
		"ObserverStoresQuiet":     TestObserverStoresAQuietLine,
		"SweepSupport":            TestSweepSupport,
		"StoredLogHoldsNoSecret":  TestStoredLogHoldsNoSecret,
		"Manifests":               TestManifests,
		"SpecStoredCompressed":    TestSpecStoredCompressed,
		"ImageIndex":              TestImageIndex,
		"ProvenanceStoredExactly": TestProvenanceStoredExactly,
		"KeysSpreadOverSlots":     testKeysSpreadOverSlots,
		"BaseWatchesAndPrunes":    TestBaseWatchesAndPendingPrunes,
	} {
		t.Run(name, test)
	}
}

// testKeysSpreadOverSlots: on a cluster, builds land on different masters
// (the hash tag is the build, not imagegen), each build's keys on one, and
// the log of a build is read and trimmed there.
func testKeysSpreadOverSlots(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 300)
	ctx := context.Background()
	slots := map[int64]bool{}
	for i := range 20 {
		id := fmt.Sprintf("spread%02d", i)
		b, sp := twoCloudBuild(id)
		if _, err := s.Create(ctx, b, sp); err != nil {
			t.Fatal(err)
		}
		for j := range 20 {
			if err := s.AppendLog(ctx, id, "a", builds.LogEntry{Cloud: "a", Text: fmt.Sprintf("line %d", j)}); err != nil {
				t.Fatal(err)
			}
		}
		slot, _ := rdb.ClusterKeySlot(ctx, buildKey(id)).Result()
		for _, k := range []string{logKey(id, "a"), logMetaKey(id, "a")} {
			if ks, _ := rdb.ClusterKeySlot(ctx, k).Result(); ks != slot {
				t.Errorf("%s in slot %d, its build in %d", k, ks, slot)
			}
		}
		slots[slot] = true
		lines, next, err := s.LogSince(ctx, id, "a", 0)
		if err != nil || len(lines) == 0 || next != 20 || lines[len(lines)-1].Text != "line 19" {
			t.Errorf("LogSince(%s): %d lines, next %d, %v", id, len(lines), next, err)
		}
	}
	if len(slots) < 10 {
		t.Errorf("20 builds in %d slots", len(slots))
	}
	page, more, err := s.Page(ctx, PageOptions{Limit: 5})
	if err != nil || len(page) != 5 || !more {
		t.Errorf("Page: %d builds, more %v, %v", len(page), more, err)
	}
}

// A build written by a version before the hash tags (keys imagegen:build:<id>,
// imagegen:log:<id>:<cloud>, imagegen:logmeta:<id>:<cloud>) is still read,
// listed, updated and logged to under those keys; Create does not make a
// second record for it; new builds get the tagged keys.
func TestStoreReadsLegacyKeys(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("legacy1")
	meta, _ := json.Marshal(metaOf(b))
	sj, _ := json.Marshal(sp)
	ca, _ := json.Marshal(b.Clouds["a"])
	// As the old createBuild and appendLog scripts left them.
	rdb.HSet(ctx, "imagegen:build:legacy1", "meta", meta, "spec", sj, "cloud:a", ca)
	rdb.ZAdd(ctx, "imagegen:builds", redis.Z{Score: float64(b.Created.UnixNano()), Member: "legacy1"})
	rdb.RPush(ctx, "imagegen:log:legacy1:a", `{"cloud":"a","stream":"stdout","text":"old line 1"}`, `{"cloud":"a","stream":"stdout","text":"old line 2"}`)
	rdb.HSet(ctx, "imagegen:logmeta:legacy1:a", "bytes", 100, "dropped", 3)

	got, gsp, err := s.Get(ctx, "legacy1")
	if err != nil || got.Generator != "dstat" || gsp.Script != "echo hi" || got.Clouds["a"].State != builder.StateQueued {
		t.Fatalf("Get of an old record: %+v %+v %v", got, gsp, err)
	}
	if bs, err := s.List(ctx, builds.ListOptions{}); err != nil || len(bs) != 1 || bs[0].ID != "legacy1" {
		t.Errorf("List: %v %v", bs, err)
	}
	lines, next, err := s.LogSince(ctx, "legacy1", "a", 0)
	if err != nil || len(lines) != 2 || next != 5 || lines[0].Text != "old line 1" {
		t.Errorf("LogSince of an old log: %+v next %d %v", lines, next, err)
	}
	// The build an old version left running goes on under its keys.
	if _, err := s.UpdateCloud(ctx, "legacy1", "a", func(c *builds.CloudRecord) { c.State = builder.StateSucceeded }); err != nil {
		t.Fatalf("UpdateCloud of an old record: %v", err)
	}
	if err := s.UpdateMeta(ctx, "legacy1", func(m *builds.Build) { m.CheckRunID = 42 }); err != nil {
		t.Fatalf("UpdateMeta of an old record: %v", err)
	}
	if _, err := s.UpdateCloud(ctx, "legacy1", "nope", func(*builds.CloudRecord) {}); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("UpdateCloud of a cloud the old record lacks: %v", err)
	}
	if err := s.AppendLog(ctx, "legacy1", "a", builds.LogEntry{Cloud: "a", Text: "new line"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveManifest(ctx, "legacy1", "a", []byte("manifest of an old build")); err != nil {
		t.Fatalf("SaveManifest of an old record: %v", err)
	}
	if m, err := s.Manifest(ctx, "legacy1", "a"); err != nil || string(m) != "manifest of an old build" {
		t.Errorf("Manifest of an old record: %q %v", m, err)
	}
	o := s.newLogSink(ctx, "legacy1", "a", nil, secret.Redactor{})
	o.Line(builder.LogLine{Stream: builder.StreamStdout, Text: "sink line"})
	o.Close()
	if ok, err := s.Create(ctx, b, sp); ok || err != nil {
		t.Errorf("Create of a build kept under the old keys: %v %v; want false, nil", ok, err)
	}
	got, _, _ = s.Get(ctx, "legacy1")
	lines, dropped, err := s.Log(ctx, "legacy1", "a")
	if err != nil || got.Clouds["a"].State != builder.StateSucceeded || got.CheckRunID != 42 || len(lines) != 4 || dropped != 3 || lines[3].Text != "sink line" {
		t.Errorf("after the updates: %+v, %d lines (%v) %d dropped, %v", got, len(lines), lines, dropped, err)
	}
	for _, k := range []string{buildKey("legacy1"), logKey("legacy1", "a"), logMetaKey("legacy1", "a")} {
		if n, _ := rdb.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s was written: the old build has two records", k)
		}
	}

	nb, _ := twoCloudBuild("fresh1")
	if ok, err := s.Create(ctx, nb, sp); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := s.AppendLog(ctx, "fresh1", "a", builds.LogEntry{Cloud: "a", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"imagegen:build:{fresh1}", "imagegen:log:{fresh1}:a", "imagegen:logmeta:{fresh1}:a"} {
		if n, _ := rdb.Exists(ctx, k).Result(); n != 1 {
			t.Errorf("%s missing: a new build's keys carry the hash tag", k)
		}
	}
	if _, _, err := s.Get(ctx, "{fresh1}"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("id with braces: %v", err)
	}
}

func twoCloudBuild(id string) (*builds.Build, *spec.Spec) {
	now := time.Now().UTC()
	b := &builds.Build{ID: id, Repo: "octo/images", Commit: "abc", Generator: "dstat", Created: now, Installation: 7,
		Clouds: map[string]*builds.CloudRecord{
			"a": {Cloud: "a", State: builder.StateQueued, Queued: now},
			"b": {Cloud: "b", State: builder.StateQueued, Queued: now},
		}}
	sp := &spec.Spec{Name: "dstat", Script: "echo hi", Clouds: map[string]spec.CloudSpec{"a": {Image: "x"}, "b": {Image: "y"}}, File: ".imagegen/dstat.yaml", Digest: "d1"}
	return b, sp
}

func TestStoreCreateGetRetention(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("b1")
	if ok, err := s.Create(ctx, b, sp); !ok || err != nil {
		t.Fatalf("create: %v %v", ok, err)
	}
	if ok, err := s.Create(ctx, b, sp); ok || err != nil {
		t.Fatalf("second create: %v %v; want false, nil", ok, err)
	}
	got, gsp, err := s.Get(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Installation != 7 || got.State != builder.StateQueued || len(got.Clouds) != 2 || gsp.Script != "echo hi" || gsp.Clouds["b"].Image != "y" {
		t.Errorf("got %+v spec %+v", got, gsp)
	}
	ttl, _ := rdb.TTL(ctx, buildKey("b1")).Result()
	if ttl <= 0 || ttl > time.Hour {
		t.Errorf("build TTL %v; want the retention (1h)", ttl)
	}
	if _, _, err := s.Get(ctx, "nope"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("missing build: %v", err)
	}
	if _, _, err := s.Get(ctx, "a:b"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("id with a colon: %v", err)
	}
}

// Clouds finishing at once must not overwrite each other's records.
func TestStoreConcurrentCloudUpdates(t *testing.T) {
	s, _ := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("b2")
	if _, err := s.Create(ctx, b, sp); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if _, err := s.UpdateCloud(ctx, "b2", c, func(r *builds.CloudRecord) { r.Attempts++ }); err != nil {
					t.Error(err)
					return
				}
			}
			if err := s.UpdateMeta(ctx, "b2", func(m *builds.Build) { m.CheckRunID++ }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _, _ := s.Get(ctx, "b2")
	if got.Clouds["a"].Attempts != 50 || got.Clouds["b"].Attempts != 50 || got.CheckRunID != 2 {
		t.Errorf("attempts a=%d b=%d check run %d; want 50, 50, 2", got.Clouds["a"].Attempts, got.Clouds["b"].Attempts, got.CheckRunID)
	}
}

func TestStoreLogKeepsTail(t *testing.T) {
	s, _ := newStore(t, time.Hour, 1000)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		if err := s.AppendLog(ctx, "b3", "a", builds.LogEntry{Cloud: "a", Stream: "stdout", Text: fmt.Sprintf("line %03d %s", i, strings.Repeat("x", 40))}); err != nil {
			t.Fatal(err)
		}
	}
	lines, dropped, err := s.Log(ctx, "b3", "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 || dropped == 0 || len(lines)+dropped != 100 {
		t.Fatalf("%d lines, %d dropped; want the tail of 100", len(lines), dropped)
	}
	if !strings.HasPrefix(lines[len(lines)-1].Text, "line 099") {
		t.Errorf("last line %q; want line 099", lines[len(lines)-1].Text)
	}
	size := 0
	for _, l := range lines {
		size += len(l.Text) + 60 // JSON overhead is about this
	}
	if size > 1000+200 {
		t.Errorf("kept about %d bytes; limit 1000", size)
	}
}

func TestStoreListAndLineage(t *testing.T) {
	s, _ := newStore(t, time.Hour, 0)
	ctx := context.Background()
	for i, id := range []string{"old", "mid", "new"} {
		b, sp := twoCloudBuild(id)
		b.Created = time.Now().Add(time.Duration(i) * time.Second)
		if id == "mid" {
			b.Generator = "other"
		}
		if _, err := s.Create(ctx, b, sp); err != nil {
			t.Fatal(err)
		}
		if err := s.AddImage(ctx, builds.LineageEntry{Build: id, Repo: "octo/images", Generator: "dstat", Cloud: "a", ImageID: "img-" + id, Created: b.Created}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		opts builds.ListOptions
		want string
	}{
		{builds.ListOptions{}, "[new mid old]"},
		{builds.ListOptions{Generator: "dstat"}, "[new old]"},
		{builds.ListOptions{Limit: 1}, "[new]"},
		{builds.ListOptions{Repo: "someone/else"}, "[]"},
	}
	for _, tc := range tests {
		bs, err := s.List(ctx, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, b := range bs {
			ids = append(ids, b.ID)
		}
		if got := fmt.Sprint(ids); got != tc.want {
			t.Errorf("List(%+v) = %s; want %s", tc.opts, got, tc.want)
		}
	}
	imgs, err := s.Images(ctx, "octo/images", "dstat")
	if err != nil || len(imgs) != 3 || imgs[0].ImageID != "img-new" || imgs[2].ImageID != "img-old" {
		t.Errorf("lineage %+v %v; want newest first", imgs, err)
	}
}

func TestLockSerializes(t *testing.T) {
	s, _ := newStore(t, time.Hour, 0)
	ctx := context.Background()
	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := s.Lock(ctx, "x", time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			maxInside = max(maxInside, inside)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if maxInside != 1 {
		t.Errorf("%d holders at once", maxInside)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	unlock, _ := s.Lock(ctx, "held", time.Minute)
	defer unlock()
	if _, err := s.Lock(cctx, "held", time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lock held elsewhere: %v; want the deadline", err)
	}
}

// TestObserverBatchesLogInOrder: the worker stores a build's log in batches
// (one round trip per line would cap output near 1 MB/s); every line lands,
// in order, before stop returns, and the tail limit still holds.
func TestObserverBatchesLogInOrder(t *testing.T) {
	const n = 20000
	for _, tc := range []struct {
		name string
		feed func(o *LogSink)
	}{
		{"line by line", func(o *LogSink) {
			for i := range n {
				o.Line(builder.LogLine{Stream: builder.StreamStdout, Text: strconv.Itoa(i)})
			}
		}},
		{"in the builder's batches", func(o *LogSink) {
			// One slice reused for every batch, as the builder does: the
			// observer must keep the lines, not the slice.
			batch := make([]builder.LogLine, 0, 327)
			for i := range n {
				batch = append(batch, builder.LogLine{Stream: builder.StreamStdout, Text: strconv.Itoa(i)})
				if len(batch) == cap(batch) || i == n-1 {
					o.Lines(batch)
					batch = batch[:0]
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rdb := newStore(t, time.Hour, 1<<20)
			o := s.newLogSink(context.Background(), "b", "c", nil, secret.Redactor{})
			before, _ := rdb.Info(context.Background(), "commandstats").Result()
			tc.feed(o)
			o.Close()
			after, _ := rdb.Info(context.Background(), "commandstats").Result()
			lines, dropped, err := s.Log(context.Background(), "b", "c")
			if err != nil {
				t.Fatal(err)
			}
			if len(lines)+dropped != n {
				t.Fatalf("%d lines + %d dropped, want %d", len(lines), dropped, n)
			}
			for i, l := range lines {
				if want := strconv.Itoa(dropped + i); l.Text != want || l.Cloud != "c" {
					t.Fatalf("line %d = %+v, want text %s", i, l, want)
				}
			}
			if calls := evalsha(after) - evalsha(before); calls <= 0 || calls > n/100 {
				t.Errorf("%d script calls for %d lines: the log is not batched", calls, n)
			}
		})
	}
}

// A line that comes alone, long after the previous one, is stored within
// about logFlushEach, not only when the build ends: the flusher runs only
// while lines wait, and must start for them.
func TestObserverStoresAQuietLine(t *testing.T) {
	s, _ := newStore(t, time.Hour, 1<<20)
	o := s.newLogSink(context.Background(), "b", "c", nil, secret.Redactor{})
	defer o.Close()
	for i := range 3 {
		time.Sleep(3 * logFlushEach / 2) // the flusher is asleep again
		o.Line(builder.LogLine{Stream: builder.StreamStdout, Text: strconv.Itoa(i)})
		deadline := time.Now().Add(10 * time.Second)
		for {
			lines, _, err := s.Log(context.Background(), "b", "c")
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("line %d not stored while the build runs (%d lines stored)", i, len(lines))
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Stored, the flusher returns: a build waiting on its cloud holds
		// no goroutine for its log.
		for deadline := time.Now().Add(2 * time.Second); flushers() > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("line %d stored, and %d log flushers still run", i, flushers())
			}
		}
		// Nor an array for its lines.
		o.mu.Lock()
		held := cap(o.pending)
		o.mu.Unlock()
		if held != 0 {
			t.Errorf("line %d stored, the flusher gone, and the sink holds room for %d lines", i, held)
		}
	}
}

// flushers counts the goroutines in LogSink.run.
func flushers() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "store.(*LogSink).run")
}

// A script printing faster than Redis stores is not held back: the sink
// keeps in memory only the tail the store would keep, and what it stores is
// what storing every line would have left — the same last lines, one run,
// the same count of lines from the start.
func TestLogSinkKeepsTheTailInMemory(t *testing.T) {
	const limit, n = 20000, 30000
	line := func(i int) builder.LogLine {
		return builder.LogLine{Time: time.Unix(1700000000, 0).UTC(), Stream: builder.StreamStdout, Text: fmt.Sprintf("line %05d %s", i, strings.Repeat("x", i%50))}
	}
	// What storing every line leaves: the reference.
	ref, _ := newStore(t, time.Hour, limit)
	for i := range n {
		l := line(i)
		l.Cloud = "c"
		if err := ref.AppendLogs(context.Background(), "b", "c", []builds.LogEntry{l}, 0); err != nil {
			t.Fatal(err)
		}
	}
	want, wantDropped, err := ref.Log(context.Background(), "b", "c")
	if err != nil {
		t.Fatal(err)
	}

	s, rdb := newStore(t, time.Hour, limit)
	o := s.newLogSink(context.Background(), "b", "c", nil, secret.Redactor{})
	// Hold the flusher: Redis is "slow", every line comes while it waits.
	o.flushing.Lock()
	batch := make([]builder.LogLine, 0, 100)
	for i := range n {
		batch = append(batch, line(i))
		if len(batch) == cap(batch) {
			o.Lines(batch)
			batch = batch[:0]
		}
	}
	o.mu.Lock()
	waiting, kept := len(o.pending)-o.head, o.pendingBytes
	o.mu.Unlock()
	if kept > limit {
		t.Errorf("%d lines (%d bytes) waiting in memory, over the %d-byte limit", waiting, kept, limit)
	}
	before, _ := rdb.Info(context.Background(), "commandstats").Result()
	o.flushing.Unlock()
	o.Close()
	after, _ := rdb.Info(context.Background(), "commandstats").Result()
	if calls := evalsha(after) - evalsha(before); calls > 3 {
		t.Errorf("%d script calls to store the tail; want one or two", calls)
	}

	got, dropped, err := s.Log(context.Background(), "b", "c")
	if err != nil {
		t.Fatal(err)
	}
	if dropped != wantDropped || len(got) != len(want) {
		t.Fatalf("kept %d lines after %d dropped; storing every line keeps %d after %d", len(got), dropped, len(want), wantDropped)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// A line skipped in memory after others were stored: nothing stored
	// before it stays (the log is one run), and the count from the start
	// still adds up. A long line skipped leaves room that the line stored
	// before it would otherwise fill.
	o2 := s.newLogSink(context.Background(), "b2", "c", nil, secret.Redactor{})
	o2.Line(builder.LogLine{Text: "stored first"})
	o2.Close()
	o2 = s.newLogSink(context.Background(), "b2", "c", nil, secret.Redactor{})
	o2.flushing.Lock()
	o2.Line(builder.LogLine{Text: strings.Repeat("y", limit+5000)})
	o2.Line(builder.LogLine{Text: "after 1"})
	o2.Line(builder.LogLine{Text: "after 2"})
	o2.flushing.Unlock()
	o2.Close()
	got, dropped, err = s.Log(context.Background(), "b2", "c")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range got {
		texts = append(texts, l.Text)
	}
	if dropped != 2 || !slices.Equal(texts, []string{"after 1", "after 2"}) {
		t.Errorf("after a skipped line: %d dropped, kept %q; want 2 dropped and the two last lines", dropped, texts)
	}
}

// evalsha reads the number of EVALSHA (and EVAL) calls from INFO commandstats.
func evalsha(info string) int {
	total := 0
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				v, _, _ := strings.Cut(rest, ",")
				n, _ := strconv.Atoi(v)
				total += n
			}
		}
	}
	return total
}

// TestSweepSupport: what the sweep keeps in the store: builds by age, a lock
// taken for an interval, first sightings (their Redis key is unchanged).
func TestSweepSupport(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	old, sp := twoCloudBuild("old")
	old.Created = time.Now().Add(-2 * time.Hour)
	young, _ := twoCloudBuild("young")
	for _, b := range []*builds.Build{old, young} {
		if _, err := s.Create(ctx, b, sp); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := s.BuildsSince(ctx, time.Now().Add(-time.Hour)); err != nil || !slices.Equal(ids, []string{"young"}) {
		t.Errorf("builds since an hour ago: %v %v; want [young]", ids, err)
	}

	if ok, err := s.TryLock(ctx, "sweep", time.Minute); !ok || err != nil {
		t.Fatalf("first TryLock: %v %v", ok, err)
	}
	if ok, err := s.TryLock(ctx, "sweep", time.Minute); ok || err != nil {
		t.Errorf("second TryLock: %v %v; want false (held)", ok, err)
	}
	if ttl, _ := rdb.TTL(ctx, "imagegen:lock:sweep").Result(); ttl <= 0 || ttl > time.Minute {
		t.Errorf("sweep lock TTL %v; want up to a minute", ttl)
	}

	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	if first, err := s.FirstSeen(ctx, "k", t0, time.Hour); err != nil || !first.Equal(t0) {
		t.Errorf("first sighting %v %v; want %v", first, err, t0)
	}
	if first, err := s.FirstSeen(ctx, "k", time.Now(), time.Hour); err != nil || !first.Equal(t0) {
		t.Errorf("second sighting %v %v; want the first, %v", first, err, t0)
	}
	if n, _ := rdb.HLen(ctx, "imagegen:sweep:seen").Result(); n != 1 {
		t.Errorf("%d sightings in imagegen:sweep:seen; want 1", n)
	}
	s.ForgetSeen(ctx, "k")
	if n, _ := rdb.HLen(ctx, "imagegen:sweep:seen").Result(); n != 0 {
		t.Errorf("%d sightings left after ForgetSeen", n)
	}
}

// TestManifests: a cloud's manifest is a field of the build's hash, read on
// its own (never by Get), expiring with the record; none is ErrNotFound.
func TestManifests(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("b1")
	if _, err := s.Create(ctx, b, sp); err != nil {
		t.Fatal(err)
	}
	big := []byte(strings.Repeat("\x1f\x8b manifest bytes ", 1<<16)) // ~1 MiB, binary
	if err := s.SaveManifest(ctx, "b1", "a", big); err != nil {
		t.Fatal(err)
	}
	got, err := s.Manifest(ctx, "b1", "a")
	if err != nil || string(got) != string(big) {
		t.Fatalf("Manifest: %d bytes, %v", len(got), err)
	}
	if _, err := s.Manifest(ctx, "b1", "b"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("a cloud without a manifest: %v", err)
	}
	if _, err := s.Manifest(ctx, "nope", "a"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("a build that does not exist: %v", err)
	}
	if err := s.SaveManifest(ctx, "nope", "a", big); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("saving for a build that does not exist: %v", err)
	}
	if n, _ := rdb.Exists(ctx, buildKey("nope")).Result(); n != 0 {
		t.Error("saving a manifest made a record")
	}
	// Get reads the record, not the manifest, and the record still decodes.
	rec, _, err := s.Get(ctx, "b1")
	if err != nil || len(rec.Clouds) != 2 {
		t.Fatalf("Get: %+v, %v", rec, err)
	}
	if ttl, _ := rdb.TTL(ctx, buildKey("b1")).Result(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("TTL %v: the manifest lives as long as the record", ttl)
	}
	// One key holds both: deleting the record deletes the manifest.
	rdb.Del(ctx, buildKey("b1"))
	if _, err := s.Manifest(ctx, "b1", "a"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("after the record expired: %v", err)
	}
}
