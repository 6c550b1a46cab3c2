package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/provenance"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/server/pages"
	"github.com/imagegen/imagegen/store"
)

func runServe(ctx context.Context, e *env, args []string) error {
	return serveCmd(ctx, e, args, registry())
}

// serveCmd is runServe with the cloud registry given, so tests can add fakes.
func serveCmd(ctx context.Context, e *env, args []string, reg *clouds.Registry) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := fs.String("config", "", "the server config (imagegen.yaml)")
	noWorker := fs.Bool("no-worker", false, "serve HTTP only; run builds in separate imagegen worker processes (they need the same encryption_key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadServiceConfig(*cfgPath, reg)
	if err != nil {
		return err
	}
	log := newLogger(e.stderr)
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	if *noWorker && cfg.EncryptionKey.IsZero() {
		log.Warn("encryption_key is not set: passwords sent to this server cannot be opened by workers in other processes; set encryption_key (openssl rand -hex 32) on serve and every worker")
	}
	svc, err := openService(ctx, cfg, log, !*noWorker)
	if err != nil {
		return err
	}
	defer svc.close()

	srv, err := server.New(server.Options{Config: cfg, Store: svc.store, Queue: svc.queue, Reruns: svc.reruns, Logger: log, Registry: svc.reg,
		GitHub: svc.github, Signer: svc.signer})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	stopMetrics, err := serveMetrics(cfg.MetricsListen, svc, log)
	if err != nil {
		ln.Close()
		return fmt.Errorf("metrics_listen: %w", err)
	}
	defer stopMetrics()
	if svc.worker != nil {
		if err := svc.worker.Start(); err != nil {
			ln.Close()
			return fmt.Errorf("start worker: %w", err)
		}
		log.Info("worker started", "concurrency", cfg.Build.Concurrency)
	}
	err = srv.Serve(ctx, ln)
	// The HTTP side has drained; now stop the builds (cleanup still runs).
	if svc.worker != nil {
		svc.worker.Shutdown()
	}
	log.Info("stopped")
	return err
}

func loadServiceConfig(path string, reg *clouds.Registry) (*config.Config, error) {
	if path == "" {
		return nil, errors.New("--config FILE is required")
	}
	cfg, err := config.Load(path, reg)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckService(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// newLogger returns the service's logger, JSON lines on w, and makes it
// go-redis's too (a setting of the whole process): go-redis otherwise prints
// its own plain-text lines ("redis: … failed to dial") to stderr.
func newLogger(w io.Writer) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	redis.SetLogger(redisLogger{log.With("component", "redis")})
	return log
}

// redisLogger is go-redis's logger on slog. go-redis logs what goes wrong
// (dials failing, connections dropped) and has no levels: Warn.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.Log(ctx, slog.LevelWarn, fmt.Sprintf(format, v...))
}

// service is what serve and worker share: Redis, the records, the queue's
// client, re-runs, metrics, and (unless serve --no-worker) the worker.
type service struct {
	rdb    redis.UniversalClient
	store  *store.Store
	queue  *queue.Client
	reruns *builds.Reruns
	worker *queue.Worker // nil: this process only serves HTTP
	reg    *prometheus.Registry
	github *github.Factory    // the GitHub App or token (commit lists for the image routes)
	signer *provenance.Signer // signs images' provenance; keyless: unsigned
}

func (s *service) close() {
	s.queue.Close()
	s.rdb.Close()
}

// redisConnOpt turns the config's Redis settings (a URL, Sentinel or Cluster)
// into asynq's connection options.
func redisConnOpt(cfg *config.Config) (asynq.RedisConnOpt, error) {
	tlsFor := func(on bool, addr string) *tls.Config {
		if !on {
			return nil
		}
		host, _, _ := net.SplitHostPort(addr)
		return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	switch {
	case cfg.RedisSentinel != nil:
		r := cfg.RedisSentinel
		return asynq.RedisFailoverClientOpt{
			MasterName: r.MasterName, SentinelAddrs: r.Addrs, SentinelPassword: r.SentinelPassword.Reveal(),
			Username: r.Username, Password: r.Password.Reveal(), DB: r.DB, TLSConfig: tlsFor(r.TLS, r.Addrs[0]),
		}, nil
	case cfg.RedisCluster != nil:
		r := cfg.RedisCluster
		return clusterConnOpt{redis.ClusterOptions{
			Addrs: r.Addrs, Username: r.Username, Password: r.Password.Reveal(), TLSConfig: tlsFor(r.TLS, r.Addrs[0]),
			ClusterStateReloadInterval: clusterReload,
		}}, nil
	}
	opt, err := asynq.ParseRedisURI(cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", cfg.RedisAddr(), err)
	}
	return opt, nil
}

// clusterReload is how often the cluster client reloads the slot map.
// go-redis learns that a replica took over a master's slots from a MOVED
// answer, which a dead master never gives, or from this reload: at
// go-redis's default (60 s), the slots of a master that died went on being
// sent to it, refused, for up to a minute after its replica took over
// (servicetest's TestRedisCluster saw it), so webhooks would be answered 503
// and workers sit idle as long. A reload is one CLUSTER SLOTS, made only
// when a command finds the map older than this.
const clusterReload = 2 * time.Second

// clusterConnOpt is asynq.RedisClusterClientOpt with every go-redis option
// (asynq's leaves ClusterStateReloadInterval out).
type clusterConnOpt struct{ opt redis.ClusterOptions }

// MakeRedisClient implements asynq.RedisConnOpt.
func (o clusterConnOpt) MakeRedisClient() any {
	opt := o.opt
	return redis.NewClusterClient(&opt)
}

// openService connects to Redis (failing early when it does not answer) and
// wires the service: the records, the queue's client and re-runs, and with
// withWorker the worker that plans, runs, reports and sweeps builds.
func openService(ctx context.Context, cfg *config.Config, log *slog.Logger, withWorker bool) (*service, error) {
	rdb, err := openRedis(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	svc, err := wire(cfg, log, rdb, withWorker)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	if err := svc.queue.CheckDurability(ctx, log); err != nil {
		svc.close()
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	return svc, nil
}

// openRedis connects to the config's Redis and waits for it to answer.
func openRedis(ctx context.Context, cfg *config.Config, log *slog.Logger) (redis.UniversalClient, error) {
	opt, err := redisConnOpt(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("%s: redis: unsupported connection %s", cfg.File, cfg.RedisAddr())
	}
	if err := waitRedis(ctx, rdb, log, cfg.RedisAddr()); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", cfg.RedisAddr(), err)
	}
	return rdb, nil
}

// wire makes the service's parts on rdb. A push travels: server (webhook)
// → queue.Client → Redis → queue.Worker → github.ParseDelivery and
// builds.Planner → queue.Client → queue.Worker → builds.Runner → builder
// → clouds; builds.Reporter reports to GitHub all along.
func wire(cfg *config.Config, log *slog.Logger, rdb redis.UniversalClient, withWorker bool) (*service, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// One sealer: what this process's client seals, its worker opens.
	sealer, err := queue.NewSealer(cfg.EncryptionKey)
	if err != nil {
		return nil, err
	}
	qc, err := queue.NewClient(rdb, cfg, sealer)
	if err != nil {
		return nil, err
	}
	signer, err := loadSigner(cfg, log)
	if err != nil {
		return nil, err
	}
	gh, err := github.New(cfg.GitHub, github.Options{Logger: log.With("component", "github")})
	if err != nil {
		return nil, err
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: st, Queue: qc, Logger: log, Metrics: builds.NewMetrics(reg),
		// Links on GitHub open the build's page without a login (signed, expiring).
		BuildURL:   func(id string) string { return pages.BuildLink(cfg, id) },
		Provenance: builds.Provenance{Signer: signer, Version: version}}
	svc := &service{rdb: rdb, store: st, queue: qc, reruns: builds.NewReruns(d), reg: reg, github: gh, signer: signer}
	if !withWorker {
		return svc, nil
	}
	d.GitHub = gh
	svc.worker, err = queue.NewWorker(queue.WorkerOptions{
		Config: cfg, Redis: rdb, Logger: log, Sealer: sealer,
		Deliveries: builds.NewDeliveries(github.ParseDelivery, builds.NewPlanner(d), svc.reruns),
		Runner:     builds.NewRunner(d),
		Sweeper:    builds.NewSweeper(d, qc),
	})
	if err != nil {
		return nil, err
	}
	return svc, nil
}

// loadSigner reads the provenance signing key (provenance.signing_key_file)
// at start, and says in the log whether images' provenance will be signed.
func loadSigner(cfg *config.Config, log *slog.Logger) (*provenance.Signer, error) {
	signer, err := provenance.LoadSigner(cfg.Provenance.SigningKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: provenance.signing_key_file: %w", cfg.File, err)
	}
	if w := signer.Warning(); w != "" {
		log.Warn(w)
	} else {
		log.Info("provenance signing key loaded", "key", signer.KeyID(), "algorithm", signer.Algorithm(), "builder_id", cfg.Provenance.BuilderID)
	}
	return signer, nil
}

// redisStartWait is how long serve and worker wait for Redis at start: long
// enough to ride out a Redis restart (a worker restarted meanwhile would
// otherwise exit, found by the chaos suite), short enough that a wrong
// address still fails the start.
const redisStartWait = time.Minute

// waitRedis pings Redis until it answers, redisStartWait passes or ctx ends.
func waitRedis(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, addr string) error {
	deadline := time.Now().Add(redisStartWait)
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := rdb.Ping(ctx).Err()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		log.Warn("redis does not answer yet; waiting", "redis", addr, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
