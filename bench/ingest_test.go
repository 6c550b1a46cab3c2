package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"
	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server/githubapp/githubtest"
)

// Ingest knobs: the load generator's concurrency, each closed-loop phase's
// length, and the paced phase's rate and length.
const (
	ingestConc     = 16
	ingestPhase    = 4 * time.Second
	ingestRounds   = 2
	ingestRate     = 500
	ingestPacedFor = 6 * time.Second
)

// loadResult is one phase of load.
type loadResult struct {
	n       int
	errs    int
	elapsed time.Duration
	lat     []time.Duration
}

func (r loadResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// closedLoop runs op from conc goroutines, back to back, for d.
func closedLoop(conc int, d time.Duration, op func(i int64) error) loadResult {
	var next atomic.Int64
	var mu sync.Mutex
	var res loadResult
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var lat []time.Duration
			errs := 0
			for time.Now().Before(stop) {
				t := time.Now()
				if err := op(next.Add(1)); err != nil {
					errs++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errs += errs
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.lat)
	return res
}

// paced starts op at rate per second for d (open loop: a slow answer does not
// delay the next request), measuring each latency from its scheduled start so
// queueing inside the load generator counts against the server too.
func paced(rate int, d time.Duration, op func(i int64) error) loadResult {
	total := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	var mu sync.Mutex
	var res loadResult
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := op(int64(i))
			l := time.Since(at)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.errs++
				return
			}
			res.lat = append(res.lat, l)
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.n = len(res.lat)
	return res
}

// BenchmarkIngest: signed push deliveries through the real POST /webhook into
// a real redis-server, against asynq's own Enqueue of the same task.
func BenchmarkIngest(b *testing.B) {
	for range b.N {
		benchIngest(b)
	}
}

func benchIngest(b *testing.B) {
	res := &Result{ID: "1-ingest", Title: "Webhook ingest", Started: time.Now()}
	s := startService(b, serviceOptions{})
	ctx := context.Background()

	sha := randomSHA()
	body := githubtest.Push(b, githubtest.PushOptions{Repo: "bench/ingest", Before: randomSHA(), After: sha,
		Commits: []githubtest.PushCommit{{Modified: []string{".imagegen/hello.yaml"}}}})
	// The delivery id is a header, so one signature serves every delivery.
	sig := githubtest.Sign([]byte(webhookSecret), body)
	snd := newLeanSender(s.url, 512)
	defer snd.close()
	round := 0
	webhook := func(i int64) error {
		code, err := snd.deliver("push", fmt.Sprintf("ingest-%d-%d", round, i), sig, body)
		if err != nil {
			return err
		}
		if code != http.StatusAccepted {
			return fmt.Errorf("status %d", code)
		}
		return nil
	}
	// The limit: asynq's own Client.Enqueue of a payload of the same size
	// (the bytes of the task the handler makes), with the same options (a
	// task id per delivery, queue, retries, timeout, 72 h retention), so
	// Redis does the same work and only imagegen's share differs.
	var raw json.RawMessage = body
	proto, err := queue.NewDeliveryTask(queue.Delivery{ID: "ingest-0-0", Event: "push", Body: raw})
	if err != nil {
		b.Fatal(err)
	}
	payload := proto.Payload()
	rawClient := asynq.NewClientFromRedisClient(s.rdb)
	enqueue := func(i int64) error {
		t := asynq.NewTask(queue.TypeDelivery, payload, asynq.TaskID(fmt.Sprintf("delivery:raw-%d-%d", round, i)), asynq.Queue(queue.QueueName),
			asynq.MaxRetry(8), asynq.Timeout(5*time.Minute), asynq.Retention(queue.DeliveryRetention))
		_, err := rawClient.EnqueueContext(ctx, t)
		return err
	}

	// Warm both paths (connections, pools), then alternate them so drifting
	// load on the shared machine hits both alike.
	closedLoop(ingestConc, 300*time.Millisecond, webhook)
	closedLoop(ingestConc, 300*time.Millisecond, enqueue)
	var wh, rw loadResult
	for round = 1; round <= ingestRounds; round++ {
		if err := s.rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		r := closedLoop(ingestConc, ingestPhase, enqueue)
		rw.n, rw.errs, rw.elapsed, rw.lat = rw.n+r.n, rw.errs+r.errs, rw.elapsed+r.elapsed, append(rw.lat, r.lat...)
		if err := s.rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		w := closedLoop(ingestConc, ingestPhase, webhook)
		wh.n, wh.errs, wh.elapsed, wh.lat = wh.n+w.n, wh.errs+w.errs, wh.elapsed+w.elapsed, append(wh.lat, w.lat...)
	}
	if err := s.rdb.FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	round = 99
	pc := paced(ingestRate, ingestPacedFor, webhook)

	ratio := wh.rate() / rw.rate()
	p99 := Percentile(pc.lat, 99)
	res.Method = fmt.Sprintf("A lean load generator in the same process (pre-formatted HTTP/1.1 requests on kept-alive 127.0.0.1 connections, as wrk does) posts signed octokit push deliveries (%d-byte body, a fresh X-GitHub-Delivery each) "+
		"to the real echo server on 127.0.0.1 (`POST /webhook`: signature check, parse, `EnqueueDelivery`) backed by a real redis-server, "+
		"from %d connections back to back, %d rounds of %s, alternating with the limit: %d goroutines calling asynq `Client.Enqueue` "+
		"on a payload of the same size (%d bytes: the task the handler makes) with the same options (task id per delivery, 72 h retention) on the same Redis. "+
		"Then an open-loop run at %d deliveries/s for %s, latency taken from each request's scheduled start.",
		len(body), ingestConc, ingestRounds, ingestPhase, ingestConc, len(payload), ingestRate, ingestPacedFor)
	res.Figures = []Figure{
		Fig("webhook deliveries/s (full speed)", fmt.Sprintf("%.0f /s", wh.rate())),
		Fig("webhook p50 / p99 latency (full speed)", Ms(Percentile(wh.lat, 50))+" / "+Ms(Percentile(wh.lat, 99))),
		Fig("asynq Enqueue/s (the limit)", fmt.Sprintf("%.0f /s", rw.rate())),
		Goal("ratio webhook / Enqueue", fmt.Sprintf("%.2f", ratio), "≥ 0.6", ratio >= 0.6),
		Fig(fmt.Sprintf("paced run: achieved rate (asked %d/s)", ingestRate), fmt.Sprintf("%.0f /s", pc.rate())),
		Fig("paced run: p50 latency", Ms(Percentile(pc.lat, 50))),
		Goal(fmt.Sprintf("paced run: p99 latency at %d/s", ingestRate), Ms(p99), "< 20 ms", p99 < 20*time.Millisecond && pc.errs == 0 && pc.rate() >= 0.95*ingestRate),
	}
	if pf, pm, tj, ta, err := stepCosts(body); err != nil {
		res.Notes = append(res.Notes, "step costs: "+err.Error())
	} else {
		res.Figures = append(res.Figures,
			Fig("handler step: parse the push (go-github PushEvent) / only the 4 fields checked", fmt.Sprintf("%.0f µs / %.0f µs", us(pf), us(pm))),
			Fig("handler step: task payload by json.Marshal (NewDeliveryTask) / by append", fmt.Sprintf("%.0f µs / %.0f µs", us(tj), us(ta))))
	}
	if n := wh.errs + rw.errs + pc.errs; n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d requests failed (webhook %d, enqueue %d, paced %d)", n, wh.errs, rw.errs, pc.errs))
	}
	if wh.n == 0 || rw.n == 0 {
		b.Fatalf("no successful requests: webhook %d (errors %d), enqueue %d (errors %d)", wh.n, wh.errs, rw.n, rw.errs)
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	b.ReportMetric(wh.rate(), "deliveries/s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(float64(p99)/1e6, "p99-ms@500/s")
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}

// stepCosts times, on the delivery's own body, the two steps pprof shows
// dominating the handler, next to what the fixes proposed in
// docs/BENCHMARKS.md would do instead.
func stepCosts(body []byte) (parseFull, parseMin, taskJSON, taskAppend time.Duration, err error) {
	const n = 2000
	timeIt := func(f func() error) (time.Duration, error) {
		start := time.Now()
		for range n {
			if err := f(); err != nil {
				return 0, err
			}
		}
		return time.Since(start) / n, nil
	}
	if parseFull, err = timeIt(func() error { _, err := github.ParseWebHook("push", body); return err }); err != nil {
		return
	}
	if parseMin, err = timeIt(func() error {
		var p struct {
			Ref        string `json:"ref"`
			After      string `json:"after"`
			Deleted    bool   `json:"deleted"`
			Repository struct {
				FullName string `json:"full_name"`
			} `json:"repository"`
		}
		return json.Unmarshal(body, &p)
	}); err != nil {
		return
	}
	if taskJSON, err = timeIt(func() error {
		_, err := queue.NewDeliveryTask(queue.Delivery{ID: "x", Event: "push", Body: body})
		return err
	}); err != nil {
		return
	}
	taskAppend, err = timeIt(func() error {
		p := make([]byte, 0, len(body)+64)
		p = append(p, `{"id":`...)
		p = strconv.AppendQuote(p, "x")
		p = append(p, `,"event":"push","body":`...)
		p = append(p, body...)
		p = append(p, '}')
		_ = asynq.NewTask(queue.TypeDelivery, p, asynq.TaskID("delivery:x"), asynq.Queue(queue.QueueName))
		return nil
	})
	return
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
