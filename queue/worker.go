package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
)

// WorkerOptions are what a Worker needs.
type WorkerOptions struct {
	Config *config.Config
	Redis  redis.UniversalClient // the caller's: the worker does not close it
	Logger *slog.Logger          // nil: discard
	// Sealer opens the passwords build tasks carry; nil: one made from
	// Config.EncryptionKey. It must open what the Client sealed.
	Sealer *Sealer
	// Deliveries handles TypeDelivery tasks, Runner TypeBuild tasks.
	Deliveries *builds.Deliveries
	Runner     *builds.Runner
	// Sweeper sweeps every Config.Build.SweepInterval while the worker runs;
	// nil: no sweep.
	Sweeper *builds.Sweeper
	// BaseChecker checks base image filters every Config.BaseCheckInterval
	// (basecheck.go); nil: no check.
	BaseChecker *builds.BaseChecker
}

// Worker takes tasks from the queue and hands them to package builds. Start
// it, and Shutdown it on SIGTERM.
type Worker struct {
	cfg        *config.Config
	log        *slog.Logger
	sealer     *Sealer
	deliveries *builds.Deliveries
	runner     *builds.Runner
	sweeper    *builds.Sweeper
	srv        *asynq.Server
	rdb        redis.UniversalClient

	baseChecker *builds.BaseChecker
	scheduler   *asynq.Scheduler // enqueues the base check; nil without a BaseChecker

	// stopping is canceled (cause builds.ErrShutdown) when the worker shuts
	// down, so running builds stop and clean up; their tasks are retried
	// later (leftovers removed first).
	stopping context.Context
	stop     context.CancelCauseFunc
	// running counts build handlers in flight, so Shutdown can wait for their
	// cleanup: asynq stops waiting for a handler as soon as its context ends.
	running sync.WaitGroup
	swept   chan struct{} // closed when the sweep loop has stopped
}

// NewWorker returns a worker running Config.Build.Concurrency tasks at once.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Config == nil || o.Redis == nil || o.Deliveries == nil || o.Runner == nil {
		return nil, errors.New("queue: a worker needs Config, Redis, Deliveries and Runner")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Sealer == nil {
		sl, err := NewSealer(o.Config.EncryptionKey)
		if err != nil {
			return nil, err
		}
		o.Sealer = sl
	}
	w := &Worker{cfg: o.Config, log: o.Logger, sealer: o.Sealer, deliveries: o.Deliveries, runner: o.Runner, sweeper: o.Sweeper,
		rdb: o.Redis, baseChecker: o.BaseChecker}
	w.stopping, w.stop = context.WithCancelCause(context.Background())
	w.srv = asynq.NewServerFromRedisClient(o.Redis, asynq.Config{
		Concurrency:              o.Config.Build.Concurrency,
		Queues:                   map[string]int{QueueName: 1},
		BaseContext:              func() context.Context { return w.stopping },
		ErrorHandler:             asynq.ErrorHandlerFunc(w.handleError),
		Logger:                   asynqLogger{o.Logger.With("component", "asynq")},
		ShutdownTimeout:          o.Config.Build.CleanupTimeout,
		TaskCheckInterval:        taskCheckInterval,
		DelayedTaskCheckInterval: time.Second,
		RetryDelayFunc: func(n int, err error, t *asynq.Task) time.Duration {
			// Quick at first (a GitHub hiccup), then asynq's backoff.
			if n == 0 {
				return time.Second
			}
			return asynq.DefaultRetryDelayFunc(n, err, t)
		},
	})
	return w, nil
}

// Handler returns the asynq handler for imagegen's task types.
func (w *Worker) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeDelivery, func(ctx context.Context, t *asynq.Task) error {
		d, raw, err := DecodeDelivery(t.Payload())
		if err != nil {
			return fmt.Errorf("decode delivery: %w: %w", err, asynq.SkipRetry)
		}
		if d.Parsed == nil { // queued by an older version: the payload as GitHub sent it
			return asynqError(w.deliveries.Handle(ctx, d.ID, d.Event, raw))
		}
		return asynqError(w.deliveries.HandleEvent(ctx, d.ID, d.Parsed))
	})
	mux.HandleFunc(TypeBuild, w.handleBuild)
	mux.HandleFunc(TypeBaseCheck, w.handleBaseCheck)
	return mux
}

// handleBuild runs a build task. The build waits on its cloud below this
// frame for minutes, so the task is decoded in a function of its own (see
// builder.RunJob).
func (w *Worker) handleBuild(ctx context.Context, t *asynq.Task) error {
	req, err := w.buildRequest(ctx, t.Payload())
	if err != nil {
		return err
	}
	w.running.Add(1)
	defer w.running.Done()
	return asynqError(w.runner.Run(ctx, *req))
}

func (w *Worker) buildRequest(ctx context.Context, payload []byte) (*builds.RunRequest, error) {
	var bt BuildTask
	if err := json.Unmarshal(payload, &bt); err != nil {
		return nil, fmt.Errorf("decode build task: %w: %w", err, asynq.SkipRetry)
	}
	req := w.runRequest(ctx, bt)
	return &req, nil
}

// runRequest is what the Runner needs of a build task: its password
// opened, and where the task is in its retries.
func (w *Worker) runRequest(ctx context.Context, bt BuildTask) builds.RunRequest {
	req := builds.RunRequest{Build: bt.Build, Cloud: bt.Cloud, Attempt: 1}
	if len(bt.Password) > 0 {
		req.Password, req.PasswordErr = w.sealer.Open(bt.Password, sealContext(bt.Build, bt.Cloud))
		if req.PasswordErr == nil && req.Password.IsZero() {
			req.PasswordErr = errors.New("the sealed password is empty")
		}
	}
	retried, ok1 := asynq.GetRetryCount(ctx)
	maxRetry, ok2 := asynq.GetMaxRetry(ctx)
	if ok1 {
		req.Attempt = retried + 1
	}
	req.WillRetry = ok1 && ok2 && retried < maxRetry
	return req
}

// asynqError turns the errors package builds marks into asynq's.
func asynqError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, builds.ErrDropTask):
		return fmt.Errorf("%w: %w", err, asynq.RevokeTask)
	case errors.Is(err, builds.ErrNoRetry):
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// handleError is asynq's ErrorHandler: a task that failed for the last time
// is reported, so no build stays pending forever.
func (w *Worker) handleError(ctx context.Context, t *asynq.Task, err error) {
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := retried >= maxRetry || errors.Is(err, asynq.SkipRetry)
	log := w.log.With("task", t.Type(), "attempt", retried+1, "final", final)
	switch t.Type() {
	case TypeBuild:
		var bt BuildTask
		if json.Unmarshal(t.Payload(), &bt) != nil {
			log.Error("task failed", "err", err)
			return
		}
		log = log.With("build", bt.Build, "cloud", bt.Cloud)
		log.Error("build task failed", "err", err)
		if final && !errors.Is(err, asynq.RevokeTask) {
			w.runner.GaveUp(context.WithoutCancel(ctx), bt.Build, bt.Cloud, fmt.Errorf("gave up after %d attempts: %w", retried+1, err))
		}
	case TypeDelivery:
		d, _, _ := DecodeDelivery(t.Payload())
		log.Error("delivery failed", "err", err, "delivery", d.ID, "event", d.Event)
	default:
		log.Error("task failed", "err", err)
	}
}

// Start begins processing in the background.
func (w *Worker) Start() error {
	if err := w.srv.Start(w.Handler()); err != nil {
		return err
	}
	if w.baseChecker != nil && w.cfg.BaseCheckInterval > 0 {
		s, err := newBaseScheduler(w.rdb, w.cfg.BaseCheckInterval, w.log.With("component", "basecheck"))
		if err == nil {
			err = s.Start()
		}
		if err != nil {
			w.srv.Shutdown()
			return fmt.Errorf("start the base check: %w", err)
		}
		w.scheduler = s
	}
	w.swept = make(chan struct{})
	go func() {
		defer close(w.swept)
		if iv := w.cfg.Build.SweepInterval; iv > 0 && w.sweeper != nil {
			w.sweeper.Loop(w.stopping, iv)
		}
	}()
	return nil
}

// Shutdown cancels running builds (their cleanup still runs, on its own
// context), waits up to the cleanup timeout for them, and requeues the rest.
func (w *Worker) Shutdown() {
	if g := w.cfg.Build.ShutdownGrace; g > 0 {
		// Take no new task; let the running builds finish within the grace.
		w.srv.Stop()
		done := make(chan struct{})
		go func() { w.running.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(g):
			w.log.Info("shutdown grace over: canceling the running builds; they are cleaned up and handed back to the queue", "grace", g)
		}
	}
	if w.scheduler != nil {
		w.scheduler.Shutdown()
	}
	w.stop(builds.ErrShutdown)
	w.srv.Shutdown()
	if w.swept != nil {
		<-w.swept
	}
	done := make(chan struct{})
	go func() { w.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.Build.CleanupTimeout + 10*time.Second):
		w.log.Error("builds still cleaning up at shutdown; the sweep will find what they leave", "waited", w.cfg.Build.CleanupTimeout)
	}
}

// taskCheckInterval is how often an idle worker looks for new tasks: asynq
// has no blocking dequeue, and sleeps 0.5–1.5 × this after finding the queue
// empty, so every hop of a push (its delivery, then its builds) waits that
// long (100–300 ms at asynq's usual 200 ms). The scale and orchestration
// benchmarks chose 100 ms: at 50 ms the hops were ~50 ms shorter, but a
// worker waiting on 1 000 builds spent 1.5–5.6 % of a core polling (0.9–1 %
// at 100 ms); about 10 cheap dequeue scripts a second per idle worker.
const taskCheckInterval = 100 * time.Millisecond

// asynqLogger sends asynq's own logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
