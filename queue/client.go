package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// Client queues imagegen's tasks and looks them up. It implements
// builds.Enqueuer and builds.Tasks.
type Client struct {
	client     *asynq.Client
	inspector  *asynq.Inspector
	sealer     *Sealer
	timeout    time.Duration // a build task's
	rdb        redis.UniversalClient
	durability config.Durability
}

var (
	_ builds.Enqueuer = (*Client)(nil)
	_ builds.Tasks    = (*Client)(nil)
)

// NewClient returns a Client on rdb, which stays the caller's. sealer seals
// the passwords build tasks carry; nil: one made from cfg.EncryptionKey. A
// worker in the same process must open them with the same Sealer.
func NewClient(rdb redis.UniversalClient, cfg *config.Config, sealer *Sealer) (*Client, error) {
	if sealer == nil {
		var err error
		if sealer, err = NewSealer(cfg.EncryptionKey); err != nil {
			return nil, err
		}
	}
	return &Client{
		client:     asynq.NewClientFromRedisClient(rdb),
		inspector:  asynq.NewInspectorFromRedisClient(rdb),
		sealer:     sealer,
		timeout:    builds.TaskTimeout(cfg),
		rdb:        rdb,
		durability: cfg.RedisDurability,
	}, nil
}

// Close releases nothing: the Redis client is the caller's.
func (c *Client) Close() error { return nil }

// EnqueueDelivery makes a delivery durable, as redis_durability says. It
// returns false, with no error, when the delivery id was enqueued before
// (GitHub redelivered it).
func (c *Client) EnqueueDelivery(ctx context.Context, d Delivery) (bool, error) {
	t, err := NewDeliveryTask(d)
	if err != nil {
		return false, err
	}
	created := true
	if _, err := c.client.EnqueueContext(ctx, t); err != nil {
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return false, fmt.Errorf("enqueue delivery %s: %w", d.ID, err)
		}
		created = false // and the first may not have been durable yet
	}
	if err := c.durable(ctx); err != nil {
		return false, fmt.Errorf("enqueue delivery %s: %w", d.ID, err)
	}
	return created, nil
}

// sealContext binds a sealed password to its build and cloud.
func sealContext(build, cloud string) string { return "imagegen password\x00" + build + "\x00" + cloud }

// EnqueueBuild queues the task of build × cloud, the password (if any)
// sealed in it; a task queued already is left as it is.
func (c *Client) EnqueueBuild(ctx context.Context, build, cloud string, password secret.String) error {
	bt := BuildTask{Build: build, Cloud: cloud}
	if !password.IsZero() {
		sealed, err := c.sealer.Seal(password, sealContext(build, cloud))
		if err != nil {
			return err
		}
		bt.Password = sealed
	}
	t, err := NewBuildTask(bt, c.timeout)
	if err != nil {
		return err
	}
	if _, err := c.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue build %s/%s: %w", build, cloud, err)
	}
	return nil
}

// QueueDepth returns the number of tasks waiting (pending, scheduled, retry).
func (c *Client) QueueDepth() (int, error) {
	qi, err := c.inspector.GetQueueInfo(QueueName)
	if err != nil {
		if c.queueMissing(err) {
			return 0, nil // the queue does not exist until the first task is enqueued
		}
		return 0, err
	}
	return qi.Pending + qi.Scheduled + qi.Retry, nil
}

// queueMissing reports whether err, from the Inspector, says that imagegen's
// queue does not exist yet. asynq's other Inspector methods wrap
// ErrQueueNotFound then, but GetQueueInfo (v0.26) returns an error of its
// internal package ("NOT_FOUND: queue \"imagegen\" does not exist") that no
// exported error matches: the list of queues decides then.
func (c *Client) queueMissing(err error) bool {
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return true
	}
	queues, qerr := c.inspector.Queues()
	return qerr == nil && !slices.Contains(queues, QueueName)
}

// PlanPending reports whether the delivery task of a push (repo's ref at
// sha, delivery its id) is still queued, running or waiting for a retry;
// tasks queued by versions that keyed them by the delivery are looked up too.
func (c *Client) PlanPending(_ context.Context, repo, ref, sha, delivery string) (bool, error) {
	ids := []string{
		DeliveryTaskID(Delivery{ID: delivery, Parsed: builds.Push{Repo: repo, Ref: ref, After: sha}}),
		"delivery:" + delivery,
	}
	for _, id := range ids {
		info, err := c.inspector.GetTaskInfo(QueueName, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			continue
		case err != nil:
			return false, err
		}
		switch info.State {
		case asynq.TaskStatePending, asynq.TaskStateActive, asynq.TaskStateScheduled, asynq.TaskStateRetry, asynq.TaskStateAggregating:
			return true, nil
		}
	}
	return false, nil
}

// BuildTask returns the state of build × cloud's task.
func (c *Client) BuildTask(_ context.Context, build, cloud string) (builds.TaskInfo, error) {
	info, err := c.inspector.GetTaskInfo(QueueName, buildTaskID(build, cloud))
	switch {
	case err == nil && info.State == asynq.TaskStateArchived:
		return builds.TaskInfo{State: builds.TaskArchived, Retried: info.Retried, LastErr: info.LastErr}, nil
	case err == nil:
		return builds.TaskInfo{State: builds.TaskPresent, Retried: info.Retried, LastErr: info.LastErr}, nil
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return builds.TaskInfo{State: builds.TaskGone}, nil
	}
	return builds.TaskInfo{}, err
}

// DeleteBuildTask deletes build × cloud's task.
func (c *Client) DeleteBuildTask(_ context.Context, build, cloud string) error {
	return c.inspector.DeleteTask(QueueName, buildTaskID(build, cloud))
}
