package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/store"
)

const webhookSecret = "whsec-bench-0123456789abcdef"

// service is imagegen as `imagegen serve` wires it: a real redis-server, the
// queue, the echo server on a 127.0.0.1 listener, and optionally a worker
// reporting to the fake GitHub.
type service struct {
	redis  *servicetest.Redis
	rdb    redis.UniversalClient
	gh     *githubtest.Server
	cfg    *config.Config
	yml    string // the config cfg was parsed from
	store  *store.Store
	queue  *queue.Client
	url    string // http://127.0.0.1:port
	worker *queue.Worker
	// workerStarted is when the worker started: its first sweep of the
	// clouds comes 10 s later.
	workerStarted time.Time
}

type serviceOptions struct {
	clouds      string // YAML of the clouds map (indented two spaces)
	concurrency int
	worker      bool
	// durability is redis_durability ("": the default, ack); fsync also
	// sets appendfsync always on the Redis, replica starts a replica of it.
	durability config.Durability
}

func startService(tb testing.TB, o serviceOptions) *service {
	tb.Helper()
	s := &service{redis: servicetest.StartRedis(tb), gh: githubtest.NewServer(tb)}
	if o.clouds == "" {
		o.clouds = "\n  sim: {type: simulated}\n"
	}
	if o.concurrency == 0 {
		o.concurrency = 10
	}
	ac := s.gh.AppConfig(tb)
	yml := fmt.Sprintf(`listen: 127.0.0.1:0
base_url: https://imagegen.example.org
redis: %s
github:
  app_id: %d
  private_key_file: %s
  webhook_secret: %s
  api_url: %s
encryption_key: %s
build: {timeout: 10m, cleanup_timeout: 30s, concurrency: %d}
clouds:%s`, s.redis.URL, ac.AppID, ac.PrivateKeyFile, webhookSecret, s.gh.URL(), strings.Repeat("ab", 32), o.concurrency, o.clouds)
	if o.durability != "" {
		yml += "\nredis_durability: " + string(o.durability) + "\n"
	}
	cfg := configtest.Config(tb, yml)
	s.cfg, s.yml = cfg, yml

	rdb := redisClient(tb, cfg.Redis)
	s.rdb = rdb
	switch o.durability {
	case config.DurabilityFsync:
		if err := rdb.ConfigSet(context.Background(), "appendfsync", "always").Err(); err != nil {
			tb.Fatal(err)
		}
	case config.DurabilityReplica:
		servicetest.StartRedisReplica(tb, s.redis)
	}

	// Production logs JSON at Info; encoding them is part of the cost.
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	promReg := prometheus.NewRegistry()
	sealer, err := queue.NewSealer(cfg.EncryptionKey)
	if err != nil {
		tb.Fatal(err)
	}
	if s.queue, err = queue.NewClient(rdb, cfg, sealer); err != nil {
		tb.Fatal(err)
	}
	s.store = store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	d := builds.Deps{Config: cfg, Store: s.store, Queue: s.queue, Logger: log, Metrics: builds.NewMetrics(promReg)}
	reruns := builds.NewReruns(d)
	if o.worker {
		f, err := github.New(cfg.GitHub, github.Options{Logger: log})
		if err != nil {
			tb.Fatal(err)
		}
		d.GitHub = f
		s.worker, err = queue.NewWorker(queue.WorkerOptions{Config: cfg, Redis: rdb, Logger: log, Sealer: sealer,
			Deliveries: builds.NewDeliveries(github.ParseDelivery, builds.NewPlanner(d), reruns),
			Runner:     builds.NewRunner(d), Sweeper: builds.NewSweeper(d, s.queue)})
		if err != nil {
			tb.Fatal(err)
		}
	}
	srv, err := server.New(server.Options{Config: cfg, Store: s.store, Queue: s.queue, Reruns: reruns, Logger: log, Registry: promReg})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })
	if o.worker {
		if err := s.worker.Start(); err != nil {
			tb.Fatal(err)
		}
		s.workerStarted = time.Now()
		tb.Cleanup(s.worker.Shutdown)
	}
	return s
}

// redisStats reads INFO from the service's Redis.
func (s *service) redisStats(ctx context.Context) (RedisStats, error) {
	info, err := s.rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return RedisStats{}, err
	}
	return ParseRedisInfo(info), nil
}

// sender posts signed deliveries, as GitHub does, over kept-alive connections.
type sender struct {
	url    string
	client *http.Client
}

func newSender(url string, conns int) *sender {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &sender{url: url + "/webhook", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// deliver posts body (signed with sig) as delivery id and returns the status.
func (d *sender) deliver(ctx context.Context, event, id, sig string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/imagegen-bench")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func randomSHA() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const zeroSHA = "0000000000000000000000000000000000000000"

// waitUntil polls cond every step until it holds or d passes.
func waitUntil(d, step time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(step)
	}
	return nil
}

// leanSender posts deliveries over raw kept-alive TCP connections with
// pre-formatted requests, like wrk: the load generator shares the 2 cores with
// the server, so it should cost as little as a load generator can.
type leanSender struct {
	addr string
	pool chan *leanConn
}

type leanConn struct {
	c  net.Conn
	br *bufio.Reader
	wb []byte
}

func newLeanSender(url string, conns int) *leanSender {
	return &leanSender{addr: strings.TrimPrefix(url, "http://"), pool: make(chan *leanConn, conns)}
}

// deliver posts body as delivery id and returns the status code.
func (l *leanSender) deliver(event, id, sig string, body []byte) (int, error) {
	var c *leanConn
	select {
	case c = <-l.pool:
	default:
		nc, err := net.Dial("tcp", l.addr)
		if err != nil {
			return 0, err
		}
		c = &leanConn{c: nc, br: bufio.NewReaderSize(nc, 4096)}
	}
	c.wb = append(c.wb[:0], "POST /webhook HTTP/1.1\r\nHost: "...)
	c.wb = append(c.wb, l.addr...)
	c.wb = append(c.wb, "\r\nContent-Type: application/json\r\nUser-Agent: GitHub-Hookshot/imagegen-bench\r\nX-GitHub-Event: "...)
	c.wb = append(c.wb, event...)
	c.wb = append(c.wb, "\r\nX-GitHub-Delivery: "...)
	c.wb = append(c.wb, id...)
	c.wb = append(c.wb, "\r\nX-Hub-Signature-256: "...)
	c.wb = append(c.wb, sig...)
	c.wb = append(c.wb, "\r\nContent-Length: "...)
	c.wb = strconv.AppendInt(c.wb, int64(len(body)), 10)
	c.wb = append(c.wb, "\r\n\r\n"...)
	c.wb = append(c.wb, body...)
	if _, err := c.c.Write(c.wb); err != nil {
		c.c.Close()
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.c.Close()
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.c.Close()
		return resp.StatusCode, err
	}
	select {
	case l.pool <- c:
	default:
		c.c.Close()
	}
	return resp.StatusCode, nil
}

// close closes the idle connections.
func (l *leanSender) close() {
	for {
		select {
		case c := <-l.pool:
			c.c.Close()
		default:
			return
		}
	}
}

// redisClient is the Redis client exactly as cmd/imagegen makes it, closed
// when the benchmark ends.
func redisClient(tb testing.TB, uri string) redis.UniversalClient {
	tb.Helper()
	opt, err := asynq.ParseRedisURI(uri)
	if err != nil {
		tb.Fatal(err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		tb.Fatal("redis: not a UniversalClient")
	}
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}
