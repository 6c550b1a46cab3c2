package chaos

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagegen/imagegen/internal/servicetest"
)

// chaosNet is the network between the workers and what they use: a
// fault-injecting proxy in front of Redis, of the EC2 API, and of the
// instances' SSH (the sshd).
type chaosNet struct {
	redis, ec2API, ssh *servicetest.Proxy
}

func startNet(t *testing.T, redisAddr string, cl *chaosCloudSet) *chaosNet {
	t.Helper()
	u, err := url.Parse(cl.ec2.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &chaosNet{
		redis:  servicetest.StartProxy(t, redisAddr),
		ec2API: servicetest.StartProxy(t, u.Host),
		ssh:    servicetest.StartProxy(t, cl.sshd.Addr),
	}
}

// netFault is one step of the schedule: do injects it, waits it out, and
// says how many times it hit (connections reset or abandoned; partitions).
type netFault struct {
	name   string
	length time.Duration // about how long do takes, for pacing the pushes
	do     func(r *faultRun) int
	ssh    bool // breaks SSH: its builds' "connection lost" failures are its doing
}

// schedule is a round of faults, one after the other, faultGap apart.
type schedule []netFault

const faultGap = 2 * time.Second

func (s schedule) length() time.Duration {
	var d time.Duration
	for _, f := range s {
		d += f.length + faultGap
	}
	return d
}

// netSchedule is one round of the network fault schedule. Redis's faults
// come first: a worker whose dequeue Redis ran but whose answer the network
// lost finds the task again only when its lease expires and asynq's
// recoverer runs (30-90 s), and that should overlap the other faults. The
// EC2 API's come last: while its half-open connections hold every build for
// a request timeout, no script runs for SSH faults to hit.
func netSchedule() schedule {
	return schedule{
		{name: "Redis restarted (SIGTERM), a worker restarted while it is down", length: 4 * time.Second, do: restartRedis},
		{name: "Redis black hole 10 s (between the workers and Redis)", length: 10 * time.Second, do: blackHoleRedis},
		{name: "Redis connections half-open (the workers' side left open and silent)", length: 2 * time.Second, do: halfOpen(func(n *chaosNet) *servicetest.Proxy { return n.redis }, false)},
		{name: "latency 100 ms each way and 256 KiB/s on Redis, the EC2 API and SSH, 8 s", length: 8 * time.Second, do: shapeAll},
		{name: resetSSHName, length: 10 * time.Second, do: resetSSH, ssh: true},
		{name: "SSH connections half-open while a script runs", length: 2 * time.Second, do: halfOpen(func(n *chaosNet) *servicetest.Proxy { return n.ssh }, true), ssh: true},
		{name: "EC2 API black hole 30 s", length: 30 * time.Second, do: blackHoleEC2},
		{name: "EC2 API connections half-open", length: 2 * time.Second, do: halfOpen(func(n *chaosNet) *servicetest.Proxy { return n.ec2API }, false)},
	}
}

const resetSSHName = "SSH connections reset while scripts run, 10 s"

func shapeAll(r *faultRun) int {
	sh := servicetest.Shape{Latency: 100 * time.Millisecond, Bandwidth: 256 << 10}
	for _, p := range r.net.all() {
		p.Shape(sh)
	}
	time.Sleep(8 * time.Second)
	for _, p := range r.net.all() {
		p.Shape(servicetest.Shape{})
	}
	return 1
}

// restartRedis stops Redis (SIGTERM) for at least 2 s and until serve's
// /readyz says so (at most 10 s), restarts a worker meanwhile (it must wait
// for Redis, not exit), then starts Redis again on the same data.
func restartRedis(r *faultRun) int {
	r.redis.stop(syscall.SIGTERM)
	down := time.Now()
	r.workers.restartExtra(0)
	probe := &http.Client{Timeout: time.Second}
	seen := false
	for time.Since(down) < 10*time.Second && (!seen || time.Since(down) < 2*time.Second) {
		if resp, err := probe.Get(r.serveBase + "/readyz"); err == nil {
			seen = seen || resp.StatusCode == http.StatusServiceUnavailable
			resp.Body.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.redis.start(r.t)
	waitReady(r.t, r.serveBase, 30*time.Second)
	if !seen {
		r.problem("serve's /readyz never answered 503 while Redis was down")
	}
	return 1
}

// blackHoleRedis cuts the workers off Redis for 10 s, without closing a
// connection: each worker's /readyz must say so, and say ready once it heals.
func blackHoleRedis(r *faultRun) int {
	heal := r.net.redis.Partition()
	start, seen := time.Now(), false
	for time.Since(start) < 10*time.Second {
		for _, code := range r.workers.readyz() {
			seen = seen || code == http.StatusServiceUnavailable
		}
		time.Sleep(500 * time.Millisecond)
	}
	heal()
	if !seen {
		r.problem("no worker's /readyz answered 503 while Redis was black-holed")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := true
		for _, code := range r.workers.readyz() {
			ready = ready && code == http.StatusOK
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			r.problem(fmt.Sprintf("workers' /readyz not 200 within 30 s of the Redis black hole's end: %v", r.workers.readyz()))
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return 1
}

func blackHoleEC2(r *faultRun) int {
	heal := r.net.ec2API.Partition()
	time.Sleep(30 * time.Second)
	heal()
	return 1
}

// resetSSH resets every SSH connection whenever a script runs, for 10 s.
func resetSSH(r *faultRun) int {
	n := 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if scriptsRunning() == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		n += r.net.ssh.Reset()
		time.Sleep(time.Second)
	}
	return n
}

// halfOpen abandons every open connection of one proxy (once a script runs,
// with duringScript): only SSH keepalives, the EC2 API's request timeout and
// Redis's read timeout can tell.
func halfOpen(of func(*chaosNet) *servicetest.Proxy, duringScript bool) func(*faultRun) int {
	return func(r *faultRun) int {
		for end := time.Now().Add(10 * time.Second); duringScript && scriptsRunning() == 0 && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
		n := of(r.net).HalfOpen()
		time.Sleep(2 * time.Second)
		return n
	}
}

func (n *chaosNet) all() []*servicetest.Proxy {
	return []*servicetest.Proxy{n.redis, n.ec2API, n.ssh}
}

// scriptsRunning counts the build scripts running now on the sshd (this
// machine): processes running /tmp/imagegen-*.sh.
func scriptsRunning() int {
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if s := string(arg); strings.HasPrefix(s, "/tmp/imagegen-") && strings.HasSuffix(s, ".sh") && bytes.HasPrefix(b, []byte("bash")) {
				n++
				break
			}
		}
	}
	return n
}

// faultRun runs the schedule and keeps, for each fault, the builds that had
// resources on a cloud while it lasted.
type faultRun struct {
	t         *testing.T
	net       *chaosNet
	clouds    *chaosCloudSet
	redis     *redisProc
	workers   *workerSet
	serveBase string

	mu       sync.Mutex
	results  []*faultResult
	problems []string
}

type faultResult struct {
	name     string
	ssh      bool
	injected int
	inFlight map[string]bool
}

// run runs rounds rounds of s, a round starting every every (or as soon as
// the one before ends), so the faults fall throughout the run.
func (r *faultRun) run(s schedule, rounds int, every time.Duration) {
	start := time.Now()
	for round := range rounds {
		if wait := time.Until(start.Add(time.Duration(round) * every)); wait > 0 {
			time.Sleep(wait)
		}
		for i, f := range s {
			if i > 0 {
				time.Sleep(faultGap)
			}
			res := r.result(f)
			began := time.Now()
			stop := r.sample(res)
			n := f.do(r)
			stop()
			r.mu.Lock()
			res.injected += n
			inFlight := len(res.inFlight)
			r.mu.Unlock()
			r.t.Logf("round %d, fault %q: hit %d times in %s; %d builds in flight so far", round+1, f.name, n, time.Since(began).Round(100*time.Millisecond), inFlight)
		}
	}
}

func (r *faultRun) result(f netFault) *faultResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.results {
		if res.name == f.name {
			return res
		}
	}
	res := &faultResult{name: f.name, ssh: f.ssh, inFlight: map[string]bool{}}
	r.results = append(r.results, res)
	return res
}

// sample adds the builds in flight to res now and every half second, until
// the returned stop is called.
func (r *faultRun) sample(res *faultResult) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			now := r.clouds.inFlight()
			r.mu.Lock()
			for id := range now {
				res.inFlight[id] = true
			}
			r.mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (r *faultRun) rows() []faultResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]faultResult, 0, len(r.results))
	for _, res := range r.results {
		out = append(out, *res)
	}
	return out
}

// injected says how many times the fault named name hit.
func (r *faultRun) injected(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.results {
		if res.name == name {
			return res.injected
		}
	}
	return 0
}

func (r *faultRun) problem(s string) {
	r.mu.Lock()
	r.problems = append(r.problems, s)
	r.mu.Unlock()
}

// check fails the test with what the faults' own checks found.
func (r *faultRun) check() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		r.t.Error(p)
	}
}
