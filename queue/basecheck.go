package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// TypeBaseCheck is the periodic task that resolves the base image filters
// of generators with rebuild: {on_base_change: true} (builds.BaseChecker).
// Every worker runs an asynq Scheduler that enqueues it every
// base_check_interval; the task is unique for most of the interval, and the
// check itself takes a Redis lock for as long, so however many workers run,
// one check is made per interval. Its payload is empty.
const TypeBaseCheck = "imagegen:base-check"

// NewBaseCheckTask makes the periodic task for interval.
func NewBaseCheckTask(interval time.Duration) *asynq.Task {
	unique := max(interval*9/10, time.Second)
	return asynq.NewTask(TypeBaseCheck, []byte("{}"),
		asynq.Queue(QueueName), asynq.MaxRetry(0), asynq.Timeout(max(interval/2, time.Minute)),
		asynq.Unique(unique), asynq.Retention(0))
}

// newBaseScheduler makes the scheduler that enqueues the base check every
// interval, on rdb (the caller's, left open).
func newBaseScheduler(rdb redis.UniversalClient, interval time.Duration, log *slog.Logger) (*asynq.Scheduler, error) {
	s := asynq.NewSchedulerFromRedisClient(rdb, &asynq.SchedulerOpts{
		Logger: schedulerLogger{asynqLogger{log}},
		PostEnqueueFunc: func(_ *asynq.TaskInfo, err error) {
			// A duplicate is the unique lock doing its job: another worker's
			// scheduler enqueued this interval's check.
			if err != nil && !errors.Is(err, asynq.ErrDuplicateTask) {
				log.Warn("enqueue the base check", "err", err)
			}
		},
	})
	if _, err := s.Register("@every "+interval.String(), NewBaseCheckTask(interval)); err != nil {
		return nil, fmt.Errorf("register the base check every %s: %w", interval, err)
	}
	return s, nil
}

// handleBaseCheck runs the base check.
func (w *Worker) handleBaseCheck(ctx context.Context, _ *asynq.Task) error {
	if w.baseChecker == nil {
		return nil
	}
	return w.baseChecker.Run(ctx)
}

// schedulerLogger drops the error asynq's scheduler logs at every shutdown
// for closing a Redis client it does not own (ours, shared, stays open).
type schedulerLogger struct{ asynqLogger }

func (l schedulerLogger) Error(args ...any) {
	if msg := fmt.Sprint(args...); !strings.Contains(msg, "connection is shared") {
		l.asynqLogger.Error(msg)
	}
}
