package queue

import (
	"context"
	"errors"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestQueueDepth: on a fresh Redis, where imagegen's queue does not exist
// yet, the depth is 0, not an error (imagegen_queue_depth read -1 there);
// then it counts the tasks waiting; with Redis away it is an error.
func TestQueueDepth(t *testing.T) {
	r := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	c, err := NewClient(rdb, configtest.Config(t, "github: {token: t, webhook_secret: s}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Why queueMissing asks for the list of queues: asynq's GetQueueInfo
	// does not wrap ErrQueueNotFound. When it does, the list can go.
	if _, err := c.inspector.GetQueueInfo(QueueName); err == nil || errors.Is(err, asynq.ErrQueueNotFound) {
		t.Logf("asynq's GetQueueInfo on a missing queue: %v (ErrQueueNotFound: %v)", err, errors.Is(err, asynq.ErrQueueNotFound))
	}
	if n, err := c.QueueDepth(); n != 0 || err != nil {
		t.Errorf("fresh Redis: depth %d, %v; want 0, nil", n, err)
	}
	for _, id := range []string{"d1", "d2"} {
		if _, err := c.EnqueueDelivery(context.Background(), Delivery{ID: id, Event: "check_run", Parsed: builds.CheckRunRerun{Build: "b"}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.QueueDepth(); n != 2 || err != nil {
		t.Errorf("two tasks queued: depth %d, %v; want 2, nil", n, err)
	}
	r.Stop()
	if n, err := c.QueueDepth(); err == nil {
		t.Errorf("Redis away: depth %d and no error", n)
	}
}
