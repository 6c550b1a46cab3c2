package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/servicetest"
)

func durabilityClient(t *testing.T, addr string, d config.Durability) *Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	qc, err := NewClient(rdb, &config.Config{RedisDurability: d}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return qc
}

// delivery is a push delivery; each id pushes another commit.
func delivery(id string) Delivery {
	return Delivery{ID: id, Event: "push", Parsed: builds.Push{Repo: "octo/images", Ref: "refs/heads/main",
		After: fmt.Sprintf("%040x", sha256.Sum256([]byte(id)))[:40]}}
}

// onReplica says whether the replica holds the delivery's task.
func onReplica(t *testing.T, replica *servicetest.Redis, id string) bool {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rc.Close()
	n, err := rc.Exists(context.Background(), "asynq:{"+QueueName+"}:t:"+DeliveryTaskID(delivery(id))).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// redis_durability: replica answers a delivery only once a replica has it
// (WAIT 1 after the enqueue), and fails it when none acknowledges in time;
// the redelivery then finds the task and answers as a duplicate once the
// replica has it.
func TestDeliveryWaitsForReplica(t *testing.T) {
	primary := servicetest.StartRedis(t)
	replica := servicetest.StartRedisReplica(t, primary)
	qc := durabilityClient(t, primary.Addr, config.DurabilityReplica)
	ctx := context.Background()
	var logs bytes.Buffer
	if err := qc.CheckDurability(ctx, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || logs.Len() > 0 {
		t.Fatalf("CheckDurability with a replica: %v %s", err, logs.String())
	}
	created, err := qc.EnqueueDelivery(ctx, delivery("d1"))
	if err != nil || !created {
		t.Fatalf("EnqueueDelivery: %v %v", created, err)
	}
	if !onReplica(t, replica, "d1") {
		t.Fatal("the delivery was accepted before the replica had it")
	}

	// A replica that hangs acknowledges nothing: the delivery fails (503).
	replica.Pause(t)
	start := time.Now()
	_, err = qc.EnqueueDelivery(ctx, delivery("d2"))
	replica.Resume(t)
	if want := "no replica acknowledged the delivery within 1s (WAIT 1)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("EnqueueDelivery with the replica hung: %v, want %q", err, want)
	}
	if took := time.Since(start); took < replicaWait || took > replicaWait+2*time.Second {
		t.Errorf("the failed delivery took %s; want about %s", took, replicaWait)
	}
	created, err = qc.EnqueueDelivery(ctx, delivery("d2"))
	if err != nil || created {
		t.Fatalf("redelivery: %v %v; want a duplicate, no error", created, err)
	}
	if !onReplica(t, replica, "d2") {
		t.Error("the redelivery was answered before the replica had the task")
	}

	// With ack (the default), nothing waits.
	ack := durabilityClient(t, primary.Addr, config.DurabilityAck)
	replica.Pause(t)
	start = time.Now()
	created, err = ack.EnqueueDelivery(ctx, delivery("d3"))
	replica.Resume(t)
	if err != nil || !created || time.Since(start) > replicaWait/2 {
		t.Errorf("ack with the replica hung: %v %v after %s", created, err, time.Since(start))
	}
}

// A Redis without a replica: replica durability warns at start and fails
// every delivery; fsync durability refuses to start unless Redis runs
// appendfsync always.
func TestDurabilityChecks(t *testing.T) {
	r := servicetest.StartRedis(t) // appendonly yes, appendfsync everysec
	ctx := context.Background()

	rep := durabilityClient(t, r.Addr, config.DurabilityReplica)
	var logs bytes.Buffer
	if err := rep.CheckDurability(ctx, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no replica connected") {
		t.Errorf("no warning without a replica: %q", logs.String())
	}
	if _, err := rep.EnqueueDelivery(ctx, delivery("x")); err == nil || !strings.Contains(err.Error(), "no replica acknowledged") {
		t.Errorf("EnqueueDelivery without a replica: %v", err)
	}

	fs := durabilityClient(t, r.Addr, config.DurabilityFsync)
	err := fs.CheckDurability(ctx, slog.New(slog.DiscardHandler))
	if want := "runs appendonly yes, appendfsync everysec: set appendonly yes and appendfsync always on every Redis node"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckDurability (fsync) on everysec: %v, want %q", err, want)
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	if err := rdb.ConfigSet(ctx, "appendfsync", "always").Err(); err != nil {
		t.Fatal(err)
	}
	if err := fs.CheckDurability(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("CheckDurability (fsync) on appendfsync always: %v", err)
	}
	if created, err := fs.EnqueueDelivery(ctx, delivery("y")); err != nil || !created {
		t.Errorf("EnqueueDelivery (fsync): %v %v", created, err)
	}
}
