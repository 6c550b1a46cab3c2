package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// DeliveryHandler turns a raw webhook delivery into work (plans, re-runs).
// It lives with the GitHub code, in the server; s is the service to call back.
type DeliveryHandler func(ctx context.Context, s *Service, d Delivery) error

// Options are what a Service needs.
type Options struct {
	Config  *config.Config
	Redis   redis.UniversalClient
	GitHub  GitHub  // nil in a process that only enqueues (serve --no-worker)
	Sealer  *Sealer // nil: a key from Config.EncryptionKey (or a random one)
	Logger  *slog.Logger
	Metrics *Metrics // nil: no metrics
	// Deliveries handles TypeDelivery tasks in the worker.
	Deliveries DeliveryHandler
	// BuildURL is the link statuses and check runs carry to a build (the
	// build's page, signed); nil: the build's API record.
	BuildURL func(id string) string
}

// Service is imagegen's queue: it enqueues deliveries and re-runs, and its
// handlers plan pushes and run builds.
type Service struct {
	cfg        *config.Config
	rdb        redis.UniversalClient
	store      *Store
	client     *asynq.Client
	inspector  *asynq.Inspector
	sealer     *Sealer
	gh         GitHub
	log        *slog.Logger
	metrics    *Metrics
	deliveries DeliveryHandler
	buildURL   func(id string) string

	// stopping is canceled when the worker shuts down, so running builds stop
	// and clean up; their tasks are retried later (leftovers removed first).
	stopping context.Context
	stop     context.CancelFunc
	// running counts build handlers in flight, so Shutdown can wait for their
	// cleanup: asynq stops waiting for a handler as soon as its context ends.
	running sync.WaitGroup
}

// New returns a Service. Close it when done.
func New(o Options) (*Service, error) {
	if o.Config == nil || o.Redis == nil {
		return nil, errors.New("queue: Config and Redis are required")
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
	stopping, stop := context.WithCancel(context.Background())
	buildURL := o.BuildURL
	if buildURL == nil {
		base := o.Config.BaseURL
		buildURL = func(id string) string { return BuildURL(base, id) }
	}
	return &Service{
		cfg:        o.Config,
		rdb:        o.Redis,
		store:      NewStore(o.Redis, o.Config.Build.Retention, o.Config.Build.LogLimit),
		client:     asynq.NewClientFromRedisClient(o.Redis),
		inspector:  asynq.NewInspectorFromRedisClient(o.Redis),
		sealer:     o.Sealer,
		gh:         o.GitHub,
		log:        o.Logger,
		metrics:    o.Metrics,
		deliveries: o.Deliveries,
		buildURL:   buildURL,
		stopping:   stopping,
		stop:       stop,
	}, nil
}

// Close releases the service's clients; the Redis client is the caller's.
func (s *Service) Close() error {
	s.stop()
	return nil
}

// Store returns the build records.
func (s *Service) Store() *Store { return s.store }

// Ping checks that Redis answers.
func (s *Service) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// QueueDepth returns the number of tasks waiting (pending, scheduled, retry).
func (s *Service) QueueDepth() (int, error) {
	qi, err := s.inspector.GetQueueInfo(QueueName)
	if err != nil {
		// The queue does not exist until the first task is enqueued.
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return 0, nil
		}
		return 0, err
	}
	return qi.Pending + qi.Scheduled + qi.Retry, nil
}

// EnqueueDelivery makes a delivery durable. It returns false, with no error,
// when the delivery id was enqueued before (GitHub redelivered it).
func (s *Service) EnqueueDelivery(ctx context.Context, d Delivery) (bool, error) {
	t, err := NewDeliveryTask(d)
	if err != nil {
		return false, err
	}
	if _, err := s.client.EnqueueContext(ctx, t); err != nil {
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return false, nil
		}
		return false, fmt.Errorf("enqueue delivery %s: %w", d.ID, err)
	}
	return true, nil
}

// EnqueuePlan queues the planning of a push (once per delivery). The
// worker's delivery handler plans inline instead (one queue hop less); plan
// tasks, and their handler, remain for callers that want the plan apart and
// for tasks queued by an earlier version.
func (s *Service) EnqueuePlan(ctx context.Context, p Push) error {
	t, err := NewPlanTask(p)
	if err != nil {
		return err
	}
	if _, err := s.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue plan %s: %w", p.Delivery, err)
	}
	return nil
}

// buildTimeout bounds a build task: the build itself, then its cleanup, then a
// margin, so asynq never gives up on a task whose cleanup is still running.
func (s *Service) buildTimeout() time.Duration {
	return s.cfg.Build.Timeout + s.cfg.Build.CleanupTimeout + time.Minute
}

func sealContext(build, cloud string) string { return "imagegen password\x00" + build + "\x00" + cloud }

func (s *Service) enqueueBuild(ctx context.Context, build, cloud string, password secret.String) error {
	bt := BuildTask{Build: build, Cloud: cloud}
	if !password.IsZero() {
		sealed, err := s.sealer.Seal(password, sealContext(build, cloud))
		if err != nil {
			return err
		}
		bt.Password = sealed
	}
	t, err := NewBuildTask(bt, s.buildTimeout())
	if err != nil {
		return err
	}
	if _, err := s.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue build %s/%s: %w", build, cloud, err)
	}
	return nil
}

// planID makes a plan's build id from its delivery and generator, so a plan
// task retried after a crash finds the build it already recorded.
func planID(delivery, generator string) string {
	h := sha256.Sum256([]byte(delivery + "\x00" + generator))
	return hex.EncodeToString(h[:8])
}

// Handler returns the asynq handler for imagegen's task types.
func (s *Service) Handler() asynq.Handler {
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeDelivery, func(ctx context.Context, t *asynq.Task) error {
		var d Delivery
		if err := json.Unmarshal(t.Payload(), &d); err != nil {
			return fmt.Errorf("decode delivery: %v: %w", err, asynq.SkipRetry)
		}
		if s.deliveries == nil {
			return fmt.Errorf("this worker has no delivery handler: %w", asynq.SkipRetry)
		}
		return s.deliveries(ctx, s, d)
	})
	mux.HandleFunc(TypePlan, func(ctx context.Context, t *asynq.Task) error {
		var p Push
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("decode push: %v: %w", err, asynq.SkipRetry)
		}
		return s.Plan(ctx, p)
	})
	mux.HandleFunc(TypeBuild, func(ctx context.Context, t *asynq.Task) error {
		var bt BuildTask
		if err := json.Unmarshal(t.Payload(), &bt); err != nil {
			return fmt.Errorf("decode build task: %v: %w", err, asynq.SkipRetry)
		}
		s.running.Add(1)
		defer s.running.Done()
		return s.RunBuild(ctx, bt)
	})
	return mux
}

// handleError is asynq's ErrorHandler: a task that failed for the last time
// is reported, so no build stays pending forever.
func (s *Service) handleError(ctx context.Context, t *asynq.Task, err error) {
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	final := retried >= maxRetry || errors.Is(err, asynq.SkipRetry)
	log := s.log.With("task", t.Type(), "attempt", retried+1, "final", final)
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
			s.failCloud(context.WithoutCancel(ctx), bt.Build, bt.Cloud, fmt.Errorf("gave up after %d attempts: %w", retried+1, err))
		}
	case TypePlan:
		var p Push
		_ = json.Unmarshal(t.Payload(), &p)
		log.Error("plan failed", "err", err, "delivery", p.Delivery, "repo", p.Repo, "sha", p.After)
	case TypeDelivery:
		var d Delivery
		_ = json.Unmarshal(t.Payload(), &d)
		log.Error("delivery failed", "err", err, "delivery", d.ID, "event", d.Event)
	default:
		log.Error("task failed", "err", err)
	}
}

// Worker runs tasks. Start it, and Shutdown it on SIGTERM.
type Worker struct {
	s     *Service
	srv   *asynq.Server
	swept chan struct{} // closed when the sweep loop has stopped
}

// NewWorker returns a worker running Config.Build.Concurrency tasks at once.
func (s *Service) NewWorker() *Worker {
	srv := asynq.NewServerFromRedisClient(s.rdb, asynq.Config{
		Concurrency:              s.cfg.Build.Concurrency,
		Queues:                   map[string]int{QueueName: 1},
		BaseContext:              func() context.Context { return s.stopping },
		ErrorHandler:             asynq.ErrorHandlerFunc(s.handleError),
		Logger:                   asynqLogger{s.log.With("component", "asynq")},
		ShutdownTimeout:          s.cfg.Build.CleanupTimeout,
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
	return &Worker{s: s, srv: srv}
}

// Start begins processing in the background.
func (w *Worker) Start() error {
	if w.s.gh == nil {
		return errors.New("queue: a worker needs Options.GitHub")
	}
	if err := w.srv.Start(w.s.Handler()); err != nil {
		return err
	}
	w.swept = make(chan struct{})
	go func() {
		defer close(w.swept)
		if iv := w.s.cfg.Build.SweepInterval; iv > 0 {
			w.s.sweepLoop(w.s.stopping, iv)
		}
	}()
	return nil
}

// Shutdown cancels running builds (their cleanup still runs, on its own
// context), waits up to the cleanup timeout for them, and requeues the rest.
func (w *Worker) Shutdown() {
	if g := w.s.cfg.Build.ShutdownGrace; g > 0 {
		// Take no new task; let the running builds finish within the grace.
		w.srv.Stop()
		done := make(chan struct{})
		go func() { w.s.running.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(g):
			w.s.log.Info("shutdown grace over: canceling the running builds; they are cleaned up and handed back to the queue", "grace", g)
		}
	}
	w.s.stop()
	w.srv.Shutdown()
	if w.swept != nil {
		<-w.swept
	}
	done := make(chan struct{})
	go func() { w.s.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.s.cfg.Build.CleanupTimeout + 10*time.Second):
		w.s.log.Error("builds still cleaning up at shutdown; the sweep will find what they leave", "waited", w.s.cfg.Build.CleanupTimeout)
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

// Metrics are the worker's Prometheus metrics.
type Metrics struct {
	Builds   *prometheus.CounterVec   // imagegen_builds_total{cloud,state}
	Duration *prometheus.HistogramVec // imagegen_build_duration_seconds{cloud,state}
}

// NewMetrics registers the worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegen_builds_total", Help: "Cloud builds finished, by cloud and end state.",
		}, []string{"cloud", "state"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imagegen_build_duration_seconds",
			Help:    "How long one cloud's build took, by cloud and end state.",
			Buckets: []float64{1, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}, []string{"cloud", "state"}),
	}
	reg.MustRegister(m.Builds, m.Duration)
	return m
}
