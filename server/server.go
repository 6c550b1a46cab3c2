// Package server is imagegen's HTTP side (echo v4): the GitHub webhook
// (verify, dedupe, enqueue), the build API, the build pages, health and
// metrics. It only answers requests: the worker, which runs what the
// webhook enqueues, does not import it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/provenance"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server/access"
	"github.com/imagegen/imagegen/server/pages"
	"github.com/imagegen/imagegen/store"
)

// MaxWebhookBody is GitHub's own cap on a delivery's payload.
const MaxWebhookBody = config.MaxWebhookBody

// Options are what the server needs.
type Options struct {
	Config *config.Config
	Store  *store.Store  // the build records
	Queue  *queue.Client // deliveries go here
	Reruns *builds.Reruns
	Logger *slog.Logger
	// Registry receives the server's metrics and is served at /metrics; nil: a new one.
	Registry *prometheus.Registry
	// GitHub lists the commits between two images; nil: the changes give
	// GitHub's compare link only.
	GitHub builds.GitHub
	// Signer is the provenance key whose public half is served; nil: none.
	Signer *provenance.Signer
}

// Server is the HTTP server.
type Server struct {
	cfg     *config.Config
	store   *store.Store
	queue   *queue.Client
	reruns  *builds.Reruns
	log     *slog.Logger
	reg     *prometheus.Registry
	echo    *echo.Echo
	metrics *metrics
	// signatures checks the webhook's X-Hub-Signature-256; reads bounds
	// the bodies it reads at once.
	signatures *signatures
	reads      *readLimit
	// access is who may read and re-run, shared with the pages (auth.go).
	access *access.Policy
	// images answers the image routes (images.go); signer's public key is served.
	images *builds.Images
	signer *provenance.Signer
}

type metrics struct {
	deliveries *prometheus.CounterVec
}

// New builds the server and registers its metrics.
func New(o Options) (*Server, error) {
	if o.Config == nil || o.Store == nil || o.Queue == nil || o.Reruns == nil {
		return nil, errors.New("server: Config, Store, Queue and Reruns are required")
	}
	if o.Config.GitHub.WebhookSecret.IsZero() {
		// Never "skip the check": an empty secret would accept anyone's push.
		return nil, errors.New("server: github.webhook_secret is empty")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s := &Server{cfg: o.Config, store: o.Store, queue: o.Queue, reruns: o.Reruns, log: o.Logger, reg: o.Registry,
		access: access.New(o.Config, o.Logger), images: builds.NewImages(o.Config, o.Store, o.GitHub), signer: o.Signer}
	s.signatures = newSignatures(func() []byte { return []byte(o.Config.GitHub.WebhookSecret.Reveal()) })
	s.reads = newReadLimit(o.Config.Webhook)
	s.metrics = &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegen_webhook_deliveries_total",
			Help: "GitHub webhook deliveries received, by event and outcome.",
		}, []string{"event", "outcome"}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "imagegen_queue_depth",
		Help: "Tasks waiting in imagegen's queue (pending, scheduled and retry).",
	}, func() float64 {
		n, err := s.queue.QueueDepth()
		if err != nil {
			return -1
		}
		return float64(n)
	})
	for _, c := range []prometheus.Collector{s.metrics.deliveries, depth} {
		if err := s.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	s.echo = s.routes()
	// The build pages in the browser (/builds, /generators, /login, /assets).
	if err := pages.Register(s.echo, pages.Options{Config: o.Config, Store: o.Store, Reruns: o.Reruns, Logger: o.Logger, Access: s.access}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.httpError
	e.IPExtractor = access.IPExtractor(s.cfg) // the failure limit's client address
	e.Use(middleware.Recover())
	e.Use(s.requestLog)

	e.POST("/webhook", s.webhook)
	api := e.Group("/api/v1", middleware.BodyLimit("1M"))
	api.GET("/builds", s.listBuilds, s.guard(s.canRead))
	api.GET("/builds/:id", s.getBuild, s.guard(s.canRead))
	api.GET("/builds/:id/log", s.getLog, s.guard(s.canReadLogs))
	api.POST("/builds/:id/rerun", s.rerun, s.guard(s.canRerun))
	api.GET("/images", s.lineage, s.guard(s.canRead))
	api.GET("/images/:image_id", s.imageByID, s.guard(s.canRead))
	api.GET("/images/:cloud/:image_id", s.imageStory, s.guard(s.canRead))
	api.GET("/images/:cloud/:image_id/changes", s.imageChanges, s.guard(s.canRead))
	api.GET("/images/:cloud/:image_id/provenance", s.imageProvenance, s.guard(s.canRead))
	api.GET("/provenance/key", s.provenanceKey, s.guard(s.canRead))
	s.driftRoutes(api)
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", s.ready)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})), s.guard(s.canReadMetrics))
	return e
}

// Handler returns the HTTP handler (for tests and custom servers).
func (s *Server) Handler() http.Handler { return s.echo }

// Serve serves on ln until ctx ends, then stops accepting, lets requests in
// flight finish (up to 20 s) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		// A 25 MB delivery over a slow link, with GitHub's 10 s answer budget
		// spent mostly in transit: generous but bounded.
		ReadTimeout:  60 * time.Second,
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:  func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// requestLog gives each request a logger and logs the request when it ends.
// The webhook is left to log its own one line per delivery (with the
// delivery id and the outcome): a logger derived per request and a second line
// were a measurable share of ingest's CPU (docs/BENCHMARKS.md, section 1).
func (s *Server) requestLog(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Method == http.MethodPost && req.URL.Path == "/webhook" {
			if err := next(c); err != nil {
				c.Error(err)
			}
			return nil
		}
		start := time.Now()
		log := s.log.With("method", req.Method, "path", req.URL.Path)
		c.Set("log", log)
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		level := slog.LevelInfo
		switch req.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			level = slog.LevelDebug // probes and scrapes every few seconds would drown the log
		}
		log.Log(req.Context(), level, "request", "status", c.Response().Status, "duration_ms", time.Since(start).Milliseconds())
		return nil
	}
}

func logOf(c echo.Context) *slog.Logger {
	if l, ok := c.Get("log").(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// httpError answers every error as JSON {"error": "..."}.
func (s *Server) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		msg = fmt.Sprint(he.Message)
	} else {
		logOf(c).Error("request failed", "err", err)
	}
	_ = c.JSON(code, map[string]string{"error": msg})
}

func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "redis unreachable", "error": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
