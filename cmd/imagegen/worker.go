package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegen/imagegen/clouds"
)

func runWorker(ctx context.Context, e *env, args []string) error {
	return workerCmd(ctx, e, args, registry())
}

// workerCmd runs a worker until ctx ends (SIGTERM), then shuts it down:
// running builds are canceled, clean up, and are retried by another worker.
func workerCmd(ctx context.Context, e *env, args []string, reg *clouds.Registry) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := fs.String("config", "", "the server config (imagegen.yaml); encryption_key must match serve's")
	metricsAddr := fs.String("metrics-listen", "", "serve /metrics, /healthz and /readyz for this worker on `ADDR` (e.g. :9090); off when empty")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadServiceConfig(*cfgPath, reg)
	if err != nil {
		return err
	}
	log := newLogger(e.stderr)
	for _, w := range cfg.BuildWarnings() { // serve logs them among its Warnings
		log.Warn(w)
	}
	if cfg.EncryptionKey.IsZero() {
		log.Warn("encryption_key is not set: this worker cannot open passwords sealed by another process; set the same encryption_key on serve and every worker")
	}
	svc, err := openService(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer svc.close()
	w := svc.worker
	if err := w.Start(); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	log.Info("worker started", "concurrency", cfg.Build.Concurrency, "redis", cfg.RedisAddr())
	stopMetrics, err := serveMetrics(*metricsAddr, svc, log)
	if err != nil {
		w.Shutdown()
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	<-ctx.Done()
	stopMetrics()
	log.Info("shutting down")
	w.Shutdown()
	log.Info("stopped")
	return nil
}

// serveMetrics serves metricsHTTP on addr (nothing when addr is empty)
// until the returned stop is called.
func serveMetrics(addr string, svc *service, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	hs := &http.Server{Handler: metricsHTTP(svc), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}, nil
}

// metricsHTTP serves a process's metrics (serve's webhook deliveries and
// queue depth; a worker's builds by cloud and state, their durations; Go
// runtime) and its health, without authentication, for Prometheus and
// Kubernetes probes: worker --metrics-listen, and serve's metrics_listen.
func metricsHTTP(svc *service) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(svc.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := pingWithin(r.Context(), svc.store, readyzTimeout); err != nil {
			http.Error(w, "redis unreachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// readyzTimeout is how long /readyz waits for Redis: under a probe's usual
// timeout, so a Redis that does not answer is reported, not a probe timeout.
const readyzTimeout = 2 * time.Second

// pingWithin pings Redis and gives up after d. go-redis bounds a command by
// its read timeout (3 s), not by the context: on a black-holed connection
// the ping would outlast the context's deadline, so the wait is cut here.
func pingWithin(ctx context.Context, p interface{ Ping(context.Context) error }, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Ping(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", d)
	}
}
