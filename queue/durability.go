package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/config"
)

// replicaWait bounds how long a delivery waits for a replica (redis_durability:
// replica): far above a healthy replica's lag (well under a millisecond on a
// LAN), far below GitHub's 10 s for an answer, and below go-redis's 3 s read
// timeout. Past it the webhook answers 503 and GitHub shows the delivery
// failed, to be redelivered (which finds the task and answers 200 once a
// replica has it).
const replicaWait = time.Second

// waitKey is written just before WAIT. WAIT counts the replicas that have
// every write of its own connection, and asynq enqueued on another one of
// the pool: a write on this connection, made after the enqueue, comes after
// it in the master's replication stream, so a replica that has it has the
// delivery too. Its hash tag is the queue's name, as in asynq's own keys
// (asynq:{imagegen}:…), so on a Redis Cluster it lives on the master that
// holds the queue.
const waitKey = "imagegen:{" + QueueName + "}:wait"

// durable returns once what redis_durability promises holds for every
// write made before it: nothing more for ack and fsync (Redis answered;
// with fsync, every node fsyncs its AOF before answering, checked at start
// by CheckDurability), a replica's acknowledgement for replica.
func (c *Client) durable(ctx context.Context) error {
	if c.durability != config.DurabilityReplica {
		return nil
	}
	err := c.waitReplica(ctx)
	if cc, ok := c.rdb.(*redis.ClusterClient); ok && err != nil && strings.Contains(err.Error(), "MOVED ") {
		// The queue's slot moved (a failover) and the client's slot map,
		// which asynq's enqueue followed already, is not reloaded yet.
		cc.ReloadState(ctx)
		err = c.waitReplica(ctx)
	}
	return err
}

func (c *Client) waitReplica(ctx context.Context) error {
	node, err := c.queueMaster(ctx)
	if err != nil {
		return err
	}
	// One pipeline: one connection, one round trip.
	var wait *redis.Cmd
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, waitKey, time.Now().UnixNano(), time.Hour)
		wait = p.Do(ctx, "WAIT", 1, replicaWait.Milliseconds())
		return nil
	})
	if err != nil {
		return fmt.Errorf("wait for a replica: %w", err)
	}
	if n, _ := wait.Int(); n < 1 {
		return fmt.Errorf("redis_durability is replica, but no replica acknowledged the delivery within %s (WAIT 1)", replicaWait)
	}
	return nil
}

// queueMaster is the client of the Redis that holds the queue: on a cluster,
// the master of the queue's hash slot; else the one Redis (or, behind
// Sentinel, its primary).
func (c *Client) queueMaster(ctx context.Context) (redis.Cmdable, error) {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		n, err := cc.MasterForKey(ctx, waitKey)
		if err != nil {
			return nil, fmt.Errorf("find the queue's master: %w", err)
		}
		return n, nil
	}
	return c.rdb, nil
}

// CheckDurability checks at start that Redis can keep redis_durability's
// promise: for fsync, that every node it can reach (on a cluster, masters
// and replicas; else the one Redis or the Sentinel's primary) runs
// appendonly yes and appendfsync always, an error otherwise, also when
// Redis refuses CONFIG GET (a managed Redis: choose ack or replica there);
// for replica, that the queue's master has a replica, a warning otherwise
// (each delivery would wait replicaWait and answer 503 until one connects).
func (c *Client) CheckDurability(ctx context.Context, log *slog.Logger) error {
	switch c.durability {
	case config.DurabilityFsync:
		check := func(ctx context.Context, n *redis.Client) error {
			addr := n.Options().Addr
			cfg, err := n.ConfigGet(ctx, "append*").Result()
			if err != nil {
				return fmt.Errorf("redis_durability is fsync, but Redis at %s does not say how it persists (CONFIG GET: %w): check it runs appendonly yes and appendfsync always, or choose redis_durability ack or replica", addr, err)
			}
			if cfg["appendonly"] != "yes" || cfg["appendfsync"] != "always" {
				return fmt.Errorf("redis_durability is fsync, but Redis at %s runs appendonly %s, appendfsync %s: set appendonly yes and appendfsync always on every Redis node, or choose redis_durability ack or replica", addr, cfg["appendonly"], cfg["appendfsync"])
			}
			return nil
		}
		switch r := c.rdb.(type) {
		case *redis.ClusterClient:
			return r.ForEachShard(ctx, check)
		case *redis.Client:
			return check(ctx, r)
		}
		return errors.New("redis_durability is fsync, but this Redis client cannot be checked")
	case config.DurabilityReplica:
		node, err := c.queueMaster(ctx)
		if err != nil {
			return err
		}
		info, err := node.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("redis_durability is replica: INFO replication: %w", err)
		}
		if strings.Contains(info, "connected_slaves:0") {
			log.Warn("redis_durability is replica, but the queue's Redis has no replica connected: every delivery waits for one and is answered 503 until one connects", "wait", replicaWait.String())
		}
	}
	return nil
}
