package bench

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/github/githubtest"
)

// BenchmarkIngestDurability: what each redis_durability costs the webhook.
// The ingest benchmark's load (signed push deliveries through the real
// POST /webhook, 16 connections back to back, then a paced run) against
// three services, each on its own redis-server (AOF on, on this machine's
// disk): ack (appendfsync everysec, the default), fsync (appendfsync
// always) and replica (everysec, and WAIT 1 on a replica on the same
// machine after each delivery).
func BenchmarkIngestDurability(b *testing.B) {
	for range b.N {
		benchIngestDurability(b)
	}
}

func benchIngestDurability(b *testing.B) {
	res := &Result{ID: "1b-durability", Title: "Webhook ingest by redis_durability", Started: time.Now()}
	modes := []config.Durability{config.DurabilityAck, config.DurabilityFsync, config.DurabilityReplica}
	// Every delivery is a new push (another after SHA, signed for it), as
	// in section 1: a push seen before is answered 200 "already received".
	placeholder := strings.Repeat("f", 40)
	body := githubtest.Push(b, githubtest.PushOptions{Repo: "bench/durability", Before: randomSHA(), After: placeholder,
		Commits: []githubtest.PushCommit{{Modified: []string{".imagegen/hello.yaml"}}}})
	at := bytes.Index(body, []byte(`"after":"`+placeholder))
	if at < 0 {
		b.Fatal("no after in the push")
	}
	at += len(`"after":"`)
	pushOf := func(i int64) ([]byte, string) {
		bb := bytes.Clone(body)
		copy(bb[at:at+40], fmt.Sprintf("%040x", i))
		return bb, githubtest.Sign([]byte(webhookSecret), bb)
	}
	type run struct {
		snd    *leanSender
		closed loadResult
		paced  loadResult
	}
	runs := map[config.Durability]*run{}
	for _, m := range modes {
		s := startService(b, serviceOptions{durability: m})
		runs[m] = &run{snd: newLeanSender(s.url, 512)}
		b.Cleanup(runs[m].snd.close)
	}
	round := 0
	op := func(m config.Durability) func(int64) error {
		return func(i int64) error {
			bb, sig := pushOf(int64(round)<<40 | i)
			code, err := runs[m].snd.deliver("push", fmt.Sprintf("dur-%s-%d-%d", m, round, i), sig, bb)
			if err != nil {
				return err
			}
			if code != http.StatusAccepted {
				return fmt.Errorf("status %d", code)
			}
			return nil
		}
	}
	for _, m := range modes {
		closedLoop(ingestConc, 300*time.Millisecond, op(m)) // warm up
	}
	// Alternate the modes, so drifting load on the shared machine hits them alike.
	for round = 1; round <= ingestRounds; round++ {
		for _, m := range modes {
			r := closedLoop(ingestConc, ingestPhase/2, op(m))
			c := &runs[m].closed
			c.n, c.errs, c.elapsed, c.lat = c.n+r.n, c.errs+r.errs, c.elapsed+r.elapsed, append(c.lat, r.lat...)
		}
	}
	round = 99
	const rate = 200
	for _, m := range modes {
		runs[m].paced = paced(rate, 3*time.Second, op(m))
	}
	res.Method = fmt.Sprintf("Three services as in section 1 (the real POST /webhook into a real redis-server with AOF on, on this machine's ext4 disk), one per redis_durability: "+
		"ack (appendfsync everysec), fsync (appendfsync always), replica (appendfsync everysec, and after each enqueue a SET and WAIT 1 on one connection, a replica on the same machine). "+
		"Signed octokit push deliveries (%d bytes), %d connections back to back, %d rounds of %s per mode, the modes alternating; then %d deliveries/s for 3 s per mode, latency from each request's scheduled start.",
		len(body), ingestConc, ingestRounds, ingestPhase/2, rate)
	base := runs[config.DurabilityAck].closed
	for _, m := range modes {
		r := runs[m]
		res.Figures = append(res.Figures,
			Fig(fmt.Sprintf("%s: deliveries/s (full speed), vs ack", m), fmt.Sprintf("%.0f /s, %.2f", r.closed.rate(), r.closed.rate()/base.rate())),
			Fig(fmt.Sprintf("%s: p50 / p99 latency (full speed)", m), Ms(Percentile(r.closed.lat, 50))+" / "+Ms(Percentile(r.closed.lat, 99))),
			Fig(fmt.Sprintf("%s: p50 / p99 latency at %d/s", m, rate), Ms(Percentile(r.paced.lat, 50))+" / "+Ms(Percentile(r.paced.lat, 99))))
		if n := r.closed.errs + r.paced.errs; n > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: %d requests failed", m, n))
		}
		b.ReportMetric(r.closed.rate(), string(m)+"-deliveries/s")
		b.ReportMetric(float64(Percentile(r.paced.lat, 99))/1e6, string(m)+"-p99-ms@200/s")
	}
	res.Elapsed = time.Since(res.Started).Seconds()
	if err := res.Write(); err != nil {
		b.Fatal(err)
	}
}
