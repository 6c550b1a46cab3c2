package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gogithub "github.com/google/go-github/v60/github"
	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/queue"
)

// Ingest knobs: the load generator's concurrency, each closed-loop phase's
// length, and the paced phase's rate and length.
const (
	ingestConc     = 16
	ingestPhase    = 4 * time.Second
	ingestRounds   = 2
	ingestRate     = 500
	ingestPacedFor = 6 * time.Second
	// ingestFloorPhase is each round's run against the bare HTTP server.
	ingestFloorPhase = 2 * time.Second
	// ingestTasks is how many of a round's tasks the limit's phase has made
	// before it starts (more than asynq enqueues in ingestPhase here).
	ingestTasks = 150000
	// ingestSigs is how many of a round's deliveries are signed before its
	// webhook phase (more than it delivers in ingestPhase here).
	ingestSigs = 60000
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

	// Every delivery is a new push (another after SHA, signed for it): the
	// webhook answers a push it has seen, under any delivery id, 200
	// "already received". Signing each one (HMAC-SHA256 of the body, a few
	// µs) is the load generator's.
	placeholder := strings.Repeat("f", 40)
	body := githubtest.Push(b, githubtest.PushOptions{Repo: "bench/ingest", Before: randomSHA(), After: placeholder,
		Commits: []githubtest.PushCommit{{Modified: []string{".imagegen/hello.yaml"}}}})
	at := bytes.Index(body, []byte(`"after":"`+placeholder))
	if at < 0 {
		b.Fatal("no after in the push")
	}
	at += len(`"after":"`)
	bodyOf := func(i int64) []byte {
		bb := bytes.Clone(body)
		copy(bb[at:at+40], fmt.Sprintf("%040x", i))
		return bb
	}
	pushOf := func(i int64) ([]byte, string) {
		bb := bodyOf(i)
		return bb, githubtest.Sign([]byte(webhookSecret), bb)
	}
	snd := newLeanSender(s.url, 512)
	defer snd.close()
	round := 0
	// sigs are a round's signatures, made before its phase as the limit's
	// tasks are: signing is GitHub's work, not the webhook's.
	var sigs []string
	webhook := func(i int64) error {
		bb, sig := bodyOf(int64(round)<<40|i), ""
		if i < int64(len(sigs)) {
			sig = sigs[i]
		} else {
			sig = githubtest.Sign([]byte(webhookSecret), bb)
		}
		code, err := snd.deliver("push", fmt.Sprintf("ingest-%d-%d", round, i), sig, bb)
		if err != nil {
			return err
		}
		if code != http.StatusAccepted {
			return fmt.Errorf("status %d", code)
		}
		return nil
	}
	// The limit: asynq's own Client.Enqueue of the very tasks the webhook
	// enqueues in the same round (the task NewDeliveryTask makes of each
	// delivery's push: its payload, its task id, its options), made before
	// the phase, so Redis does the same work and only imagegen's share
	// differs.
	taskOf := func(i int64) (*asynq.Task, error) {
		bb, _ := pushOf(int64(round)<<40 | i)
		peek, err := github.PeekDelivery("push", bb)
		if err != nil {
			return nil, err
		}
		return queue.NewDeliveryTask(queue.Delivery{ID: fmt.Sprintf("ingest-%d-%d", round, i), Event: "push", Parsed: peek.Event})
	}
	proto, err := taskOf(0)
	if err != nil {
		b.Fatal(err)
	}
	payload := proto.Payload()
	var tasks []*asynq.Task // this round's, by i (closedLoop counts from 1)
	prepare := func() {
		sigs = make([]string, ingestSigs+1)
		for i := range sigs {
			sigs[i] = githubtest.Sign([]byte(webhookSecret), bodyOf(int64(round)<<40|int64(i)))
		}
		tasks = make([]*asynq.Task, ingestTasks+1)
		for i := range tasks {
			if tasks[i], err = taskOf(int64(i)); err != nil {
				b.Fatal(err)
			}
		}
	}
	var madeLate atomic.Int64 // tasks past those prepared, made during the phase
	rawClient := asynq.NewClientFromRedisClient(s.rdb)
	enqueue := func(i int64) error {
		var t *asynq.Task
		if i < int64(len(tasks)) {
			t = tasks[i]
		} else {
			madeLate.Add(1)
			var err error
			if t, err = taskOf(i); err != nil {
				return err
			}
		}
		_, err := rawClient.EnqueueContext(ctx, t)
		return err
	}

	// The floor: the same requests from the same load generator to a bare
	// net/http handler that reads the body and answers 202, with no echo, no
	// check and no Redis: what any webhook over HTTP costs on this machine.
	floorURL := startFloorServer(b)
	floor := newLeanSender(floorURL, 512)
	defer floor.close()
	bare := func(i int64) error {
		bb, sig := pushOf(i)
		code, err := floor.deliver("push", fmt.Sprintf("floor-%d-%d", round, i), sig, bb)
		if err != nil {
			return err
		}
		if code != http.StatusAccepted {
			return fmt.Errorf("status %d", code)
		}
		return nil
	}
	// phase runs one closed loop and counts the CPU it cost this process (the
	// server, the load generator, the Redis client) and redis-server.
	phase := func(d time.Duration, op func(int64) error) (loadResult, phaseCPU) {
		r0, err := s.redisStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c0 := CPUTime()
		r := closedLoop(ingestConc, d, op)
		c := CPUTime() - c0
		r1, err := s.redisStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return r, phaseCPU{proc: c, redis: r1.Sub(r0).CPU, wall: r.elapsed}
	}

	// IMAGEGEN_BENCH_INGEST_CPUPROFILE=/tmp/ingest profiles each round's
	// phases alone, into /tmp/ingest.webhook1, /tmp/ingest.enqueue1, ...
	profile := func(what string) (stop func()) {
		prefix := os.Getenv("IMAGEGEN_BENCH_INGEST_CPUPROFILE")
		if prefix == "" {
			return func() {}
		}
		f, err := os.Create(fmt.Sprintf("%s.%s%d", prefix, what, round))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		return func() { pprof.StopCPUProfile(); _ = f.Close() }
	}
	// Warm every path (connections, pools), then alternate them so drifting
	// load on the shared machine hits them alike.
	round = 98 // the warm-up's own deliveries and tasks
	prepare()
	closedLoop(ingestConc, 300*time.Millisecond, webhook)
	closedLoop(ingestConc, 300*time.Millisecond, enqueue)
	closedLoop(ingestConc, 300*time.Millisecond, bare)
	var wh, rw, fl loadResult
	var whCPU, rwCPU, flCPU phaseCPU
	add := func(to *loadResult, toCPU *phaseCPU, r loadResult, c phaseCPU) {
		to.n, to.errs, to.elapsed, to.lat = to.n+r.n, to.errs+r.errs, to.elapsed+r.elapsed, append(to.lat, r.lat...)
		toCPU.proc, toCPU.redis, toCPU.wall = toCPU.proc+c.proc, toCPU.redis+c.redis, toCPU.wall+c.wall
	}
	for round = 1; round <= ingestRounds; round++ {
		prepare()
		if err := s.rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		stop := profile("enqueue")
		r, c := phase(ingestPhase, enqueue)
		stop()
		add(&rw, &rwCPU, r, c)
		if err := s.rdb.FlushAll(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		stop = profile("webhook")
		r, c = phase(ingestPhase, webhook)
		stop()
		add(&wh, &whCPU, r, c)
		r, c = phase(ingestFloorPhase, bare)
		add(&fl, &flCPU, r, c)
	}
	if err := s.rdb.FlushAll(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	round = 99
	sigs, tasks = nil, nil // signed as they are sent: the paced run is not CPU-bound
	pc := paced(ingestRate, ingestPacedFor, webhook)

	ratio := wh.rate() / rw.rate()
	p99 := Percentile(pc.lat, 99)
	res.Method = fmt.Sprintf("A lean load generator in the same process (pre-formatted HTTP/1.1 requests on kept-alive 127.0.0.1 connections, as wrk does) posts signed octokit push deliveries (%d-byte body, a fresh X-GitHub-Delivery and after SHA each, signed before the phase) "+
		"to the real echo server on 127.0.0.1 (`POST /webhook`: signature check, parse, `EnqueueDelivery`) backed by a real redis-server, "+
		"from %d connections back to back, %d rounds of %s, alternating with the limit: %d goroutines calling asynq `Client.Enqueue` "+
		"on the very tasks the webhook enqueues in that round (made before the phase by `queue.NewDeliveryTask` of each delivery's parsed push: %d-byte payload, the push's task id, the same options) on the same Redis. "+
		"Each round also runs the same requests for %s against a bare net/http handler (read the body, answer 202: the floor of any webhook over HTTP). "+
		"CPU per operation is this process's (getrusage: server, load generator and Redis client together) plus redis-server's (INFO cpu) over each phase. "+
		"Then an open-loop run at %d deliveries/s for %s, latency taken from each request's scheduled start.",
		len(body), ingestConc, ingestRounds, ingestPhase, ingestConc, len(payload), ingestFloorPhase, ingestRate, ingestPacedFor)
	res.Figures = []Figure{
		Fig("webhook deliveries/s (full speed)", fmt.Sprintf("%.0f /s", wh.rate())),
		Fig("webhook p50 / p99 latency (full speed)", Ms(Percentile(wh.lat, 50))+" / "+Ms(Percentile(wh.lat, 99))),
		Fig("asynq Enqueue/s (the limit)", fmt.Sprintf("%.0f /s", rw.rate())),
		Goal("ratio webhook / Enqueue", fmt.Sprintf("%.2f", ratio), "≥ 0.8", ratio >= 0.8),
		Fig(fmt.Sprintf("paced run: achieved rate (asked %d/s)", ingestRate), fmt.Sprintf("%.0f /s", pc.rate())),
		Fig("paced run: p50 latency", Ms(Percentile(pc.lat, 50))),
		Goal(fmt.Sprintf("paced run: p99 latency at %d/s", ingestRate), Ms(p99), "≤ 5 ms", p99 <= 5*time.Millisecond && pc.errs == 0 && pc.rate() >= 0.95*ingestRate),
	}
	res.Figures = append(res.Figures,
		Fig("CPU per delivery: this process (server, load generator, Redis client) + redis-server", whCPU.perOp(wh.n)),
		Fig("CPU per Enqueue: this process + redis-server", rwCPU.perOp(rw.n)),
		Fig("HTTP floor (same requests to a bare net/http handler: read the body, answer 202): rate, CPU per request", fmt.Sprintf("%.0f /s, %s", fl.rate(), flCPU.perOp(fl.n))),
		Fig("cores busy (this process + redis-server): webhook / Enqueue / floor phases", fmt.Sprintf("%.2f / %.2f / %.2f of 2", whCPU.cores(), rwCPU.cores(), flCPU.cores())),
		Fig("CPU ratio, Enqueue ÷ webhook per operation (the rate ratio when CPU is the only limit)", fmt.Sprintf("%.2f", rwCPU.total(rw.n)/whCPU.total(wh.n))),
	)
	if st, err := stepCosts(body); err != nil {
		res.Notes = append(res.Notes, "step costs: "+err.Error())
	} else {
		res.Figures = append(res.Figures,
			Fig("handler step: check and read the push: go-github ParseWebHook (before) / PeekDelivery: gjson validation + the fields the worker needs (now)", fmt.Sprintf("%.0f µs / %.0f µs", us(st.parseFull), us(st.parseNow))),
			Fig("handler step: task payload: json.Marshal of the raw body in a Delivery (before) / NewDeliveryTask of the parsed push (now)", fmt.Sprintf("%.0f µs / %.0f µs", us(st.taskJSON), us(st.taskNow))),
			Fig("handler step: HMAC-SHA256 of the body", fmt.Sprintf("%.0f µs", us(st.hmac))))
	}
	if fl.errs > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d floor requests failed", fl.errs))
	}
	if n := madeLate.Load(); n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the limit's phase outran the %d tasks made before it: %d made during it, which slows it down", ingestTasks, n))
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

// phaseCPU is what a phase of load cost in CPU.
type phaseCPU struct {
	proc, redis time.Duration // this process; redis-server (INFO cpu)
	wall        time.Duration
}

func (c phaseCPU) total(n int) float64 {
	if n == 0 {
		return 0
	}
	return us(c.proc+c.redis) / float64(n)
}

func (c phaseCPU) perOp(n int) string {
	if n == 0 {
		return "no operations"
	}
	return fmt.Sprintf("%.0f µs + %.0f µs = %.0f µs", us(c.proc)/float64(n), us(c.redis)/float64(n), c.total(n))
}

// cores is how many cores the process and Redis kept busy on average.
func (c phaseCPU) cores() float64 {
	if c.wall <= 0 {
		return 0
	}
	return float64(c.proc+c.redis) / float64(c.wall)
}

// startFloorServer serves POST /webhook on 127.0.0.1 with net/http alone:
// read the body, answer 202 with a small JSON message.
func startFloorServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	answer := []byte(`{"message":"accepted"}` + "\n")
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(answer)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	tb.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// steps are the handler's steps timed on the delivery's own body.
type steps struct {
	parseFull, parseNow time.Duration // go-github's whole PushEvent; github.PeekDelivery (gjson's validation and the fields read)
	taskJSON, taskNow   time.Duration // json.Marshal of a Delivery holding the raw body (before); NewDeliveryTask of the parsed push
	hmac                time.Duration
}

// stepCosts times, on the delivery's own body, the steps pprof showed
// dominating the handler, as they were and as they are now. "now" for the
// parse is github.PeekDelivery, the handler's: gjson's validation and one
// pass over the push for the fields the worker needs.
func stepCosts(body []byte) (st steps, err error) {
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
	if st.parseFull, err = timeIt(func() error { _, err := gogithub.ParseWebHook("push", body); return err }); err != nil {
		return
	}
	var ev github.Peek
	if st.parseNow, err = timeIt(func() error {
		var err error
		ev, err = github.PeekDelivery("push", body)
		if p, ok := ev.Event.(builds.Push); err == nil && (!ok || p.Repo == "") {
			err = errors.New("no repository.full_name")
		}
		return err
	}); err != nil {
		return
	}
	raw := struct {
		ID    string          `json:"id"`
		Event string          `json:"event"`
		Body  json.RawMessage `json:"body"`
	}{"72d3162e-cc78-11e3-81ab-4c9367dc0958", "push", body}
	if st.taskJSON, err = timeIt(func() error { _, err := json.Marshal(raw); return err }); err != nil {
		return
	}
	d := queue.Delivery{ID: raw.ID, Event: "push", Parsed: ev.Event}
	if st.taskNow, err = timeIt(func() error { _, err := queue.NewDeliveryTask(d); return err }); err != nil {
		return
	}
	key := []byte(webhookSecret)
	st.hmac, err = timeIt(func() error {
		m := hmac.New(sha256.New, key)
		m.Write(body)
		m.Sum(nil)
		return nil
	})
	return
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
