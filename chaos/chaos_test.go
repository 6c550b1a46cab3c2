package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// params of a run, from the environment so `make chaos` can run the full
// size and `make test` a small one.
type params struct {
	builds, redeliveries, kills, workers int
	failRate, permRate                   float64
	settle                               time.Duration // how long builds get to finish after the faults stop
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func loadParams() params {
	p := params{
		builds:   envInt("CHAOS_BUILDS", 24),
		workers:  envInt("CHAOS_WORKERS", 2),
		failRate: 0.20, permRate: 0.05,
	}
	p.redeliveries = envInt("CHAOS_REDELIVERIES", 5*p.builds)
	p.kills = envInt("CHAOS_KILLS", max(2, p.builds/10))
	p.settle = time.Duration(envInt("CHAOS_SETTLE_SECONDS", 300)) * time.Second
	return p
}

// TestChaos runs the fault-injection suite (docs/RELIABILITY.md): real
// `imagegen serve --no-worker` and `imagegen worker` processes on a real
// redis-server, the simulated cloud with its state in a file (so what a
// killed worker launched outlives it), and the fake GitHub. Workers are
// SIGKILLed at random points and restarted, Redis is restarted once, every
// push is redelivered several times, and 20 % / 5 % of cloud calls fail
// transiently / permanently. It prints the table and asserts its promises.
func TestChaos(t *testing.T) {
	p := loadParams()
	if p.builds == 0 {
		t.Fatal("CHAOS_BUILDS=0: nothing to run")
	}
	ctx := context.Background()
	dir := t.TempDir()
	bin := buildImagegen(t, dir)
	rd := startRedis(t, dir)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)

	const (
		repo      = "chaos/images"
		whSecret  = "whsec-chaos-6b1f0c2e9d7a4f35"
		apiToken  = "api-token-chaos-0d9c8b7a6f5e4d3c"
		generator = "g"
		cloud     = "sim"
	)
	addr := freeAddr(t)
	base := "http://" + addr
	state := filepath.Join(dir, "sim-cloud.json")
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
api_tokens: [%q]
encryption_key: %s
build: {timeout: 1m, cleanup_timeout: 10s, concurrency: 4, sweep_interval: 2s}
clouds:
  %s: {type: simulated, launch_delay: 60ms, stop_delay: 20ms, snapshot_delay: 120ms, fail_rate: %g, permanent_fail_rate: %g, state_file: %q}
`, addr, rd.url(), app.AppID, app.PrivateKeyFile, whSecret, gh.URL(), apiToken, strings.Repeat("c4", 32),
		cloud, p.failRate, p.permRate, state)
	cfgFile := filepath.Join(dir, "imagegen.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	procs := &processes{t: t, bin: bin, dir: dir}
	procs.start("serve", "serve", "--no-worker", "--config", cfgFile)
	workers := make([]*process, p.workers)
	for i := range workers {
		workers[i] = procs.start(fmt.Sprintf("worker-%d", i), "worker", "--config", cfgFile)
	}
	waitReady(t, base, 30*time.Second)
	// The API token goes over the wire once right and once wrong (signing in
	// to the build pages), so the secret scan below has it to look for.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for tok, want := range map[string]int{apiToken: http.StatusSeeOther, apiToken + "-wrong": http.StatusUnauthorized} {
		resp, err := noRedirect.PostForm(base+"/login", url.Values{"token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /login answered %d, want %d", resp.StatusCode, want)
		}
	}

	shas := make([]string, p.builds)
	pushes := make([][]byte, p.builds)
	for i := range shas {
		shas[i] = fmt.Sprintf("%040x", 0xc4a0500000+i)
		gh.SetFile(repo, shas[i], ".imagegen/"+generator+".yaml",
			[]byte(fmt.Sprintf("script: echo chaos %d\nclouds:\n  %s: {image: debian-12, ssh_user: debian}\n", i, cloud)))
		pushes[i] = githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: shas[i]})
	}
	deliveryID := func(i int) string { return fmt.Sprintf("chaos-%06d", i) }

	t0 := time.Now()
	var (
		accepted   = make([]atomic.Bool, p.builds)
		dupAccept  atomic.Int64 // a redelivery answered 202: enqueued twice
		redelivers atomic.Int64
		sentDone   = make(chan struct{})
		halfway    = make(chan struct{})
		readyzDown atomic.Bool
		wg         sync.WaitGroup
	)
	post := func(i int) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/webhook", bytes.NewReader(pushes[i]))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-GitHub-Delivery", deliveryID(i))
		req.Header.Set("X-Hub-Signature-256", githubtest.Sign([]byte(whSecret), pushes[i]))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// GitHub delivers each push once; a delivery that failed (Redis away)
	// is redelivered, as GitHub's "redeliver" would.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(sentDone)
		for i := range p.builds {
			if i == p.builds/2 {
				close(halfway)
			}
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				code := post(i)
				if code == http.StatusAccepted || code == http.StatusOK {
					accepted[i].Store(true)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
		}
	}()
	// Redeliveries of pushes already accepted: never a second 202.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < p.redeliveries; {
			var cand []int
			for i := range accepted {
				if accepted[i].Load() {
					cand = append(cand, i)
				}
			}
			if len(cand) == 0 {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			code := post(cand[rand.IntN(len(cand))])
			if code == http.StatusAccepted {
				dupAccept.Add(1)
			}
			if code != 0 && code < 500 {
				n++
				redelivers.Add(1)
			}
			select {
			case <-sentDone:
			default:
				time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
			}
		}
	}()
	var wmu sync.Mutex
	restartWorker := func(i int) {
		wmu.Lock()
		defer wmu.Unlock()
		workers[i].kill()
		workers[i] = procs.start(fmt.Sprintf("worker-%d", i), "worker", "--config", cfgFile)
	}
	// Workers SIGKILLed at random points, and restarted at once.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < p.kills; k++ {
			time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
			restartWorker(rand.IntN(len(workers)))
		}
	}()
	// Redis restarted once, halfway through the pushes: stopped (SIGTERM) for at
	// least 2 s and until /readyz says so (at most 10 s), then started again.
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-halfway
		rd.stop(syscall.SIGTERM)
		down := time.Now()
		// A worker (re)started while Redis is away must wait for it, not exit.
		restartWorker(0)
		probe := &http.Client{Timeout: time.Second}
		for time.Since(down) < 10*time.Second && (!readyzDown.Load() || time.Since(down) < 2*time.Second) {
			if resp, err := probe.Get(base + "/readyz"); err == nil {
				if resp.StatusCode == http.StatusServiceUnavailable {
					readyzDown.Store(true)
				}
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
		rd.start(t)
		waitReady(t, base, 30*time.Second)
	}()
	wg.Wait()
	t.Logf("faults done after %s: %d kills (one while Redis was down), %d redeliveries, Redis restarted once", time.Since(t0).Round(time.Millisecond), p.kills+1, redelivers.Load())

	// Every accepted build must reach a final status; the lease of a task
	// whose worker was killed expires and asynq retries it (30-90 s).
	ctxName := "imagegen/" + generator + "/" + cloud
	final := func(i int) bool {
		switch gh.LatestStatuses(repo, shas[i])[ctxName].State {
		case "success", "failure", "error":
			return true
		}
		return false
	}
	deadline := time.Now().Add(p.settle)
	for time.Now().Before(deadline) {
		done := 0
		for i := range shas {
			if final(i) {
				done++
			}
		}
		if done == p.builds {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("builds settled after %s", time.Since(t0).Round(time.Millisecond))
	// The sweep (every 2 s) removes what failed cleanups and killed workers left.
	sim := simulated.New(simulated.Options{StateFile: state})
	sweepDeadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(sweepDeadline) && (len(sim.Live()) > 0 || orphanImages(ctx, rd.addr, sim) > 0) {
		time.Sleep(250 * time.Millisecond)
	}
	wmu.Lock()
	for i, w := range workers {
		w.stop(fmt.Sprintf("worker-%d", i))
	}
	wmu.Unlock()
	procs.byName("serve").stop("serve")

	var tab Table
	var notFinal []string
	for i := range shas {
		if accepted[i].Load() {
			tab.Accepted++
		}
		if final(i) {
			tab.Finished++
		} else if accepted[i].Load() {
			tab.Pending++
			notFinal = append(notFinal, fmt.Sprintf("%s=%+v", deliveryID(i), gh.LatestStatuses(repo, shas[i])[ctxName]))
		}
	}
	runs := map[string]int{}
	for _, cr := range gh.CheckRuns(repo) {
		runs[cr.HeadSHA]++
	}
	for sha, n := range runs {
		if n > 1 {
			t.Errorf("%d check runs for %s", n, sha)
			tab.Duplicates += n - 1
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: rd.addr})
	defer rdb.Close()
	bs, err := store.New(rdb, 0, 0).List(ctx, builds.ListOptions{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	perDelivery := map[string]int{}
	recorded := map[string]bool{}
	for _, b := range bs {
		perDelivery[b.Delivery]++
		for _, c := range b.Clouds {
			if c.ImageID != "" {
				recorded[c.ImageID] = true
			}
		}
	}
	for d, n := range perDelivery {
		if n > 1 {
			t.Errorf("%d builds recorded for delivery %s", n, d)
			tab.Duplicates += n - 1
		}
	}
	if n := int(dupAccept.Load()); n > 0 {
		t.Errorf("%d redeliveries were answered 202 (enqueued again)", n)
		tab.Duplicates += n
	}
	live := sim.Live()
	for _, im := range sim.Images() {
		if !recorded[im.ID] {
			tab.OrphanImages++
		}
	}
	tab.Leftovers = len(live) + tab.OrphanImages
	tab.Secrets = findSecrets(t, rd.addr, gh, procs.outputs(), append([]string{whSecret, apiToken, keyBody(t, app.PrivateKeyFile), "PRIVATE KEY"}, gh.InstallationTokens()...))

	summary := fmt.Sprintf("chaos: %d builds, %d workers SIGKILLed and restarted %d times, Redis restarted once, %d redeliveries, %.0f %% / %.0f %% of cloud calls failing transiently / permanently; %s\n%s"+
		"images no build record names (an attempt killed after its snapshot): %d\n",
		p.builds, p.workers, p.kills+1, redelivers.Load(), 100*p.failRate, 100*p.permRate, time.Since(t0).Round(time.Second), tab, tab.OrphanImages)
	t.Log("\n" + summary)
	if out := os.Getenv("CHAOS_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(summary), 0o644)
	}
	if !readyzDown.Load() {
		t.Errorf("/readyz never answered 503 while Redis was down")
	}
	if len(notFinal) > 0 {
		t.Errorf("builds not final: %s", strings.Join(notFinal, ", "))
	}
	if len(live) > 0 {
		t.Errorf("left in the cloud after the sweep: %v", live)
	}
	if !tab.OK() {
		t.Errorf("the chaos run broke a promise:\n%s", tab)
	}
}

// orphanImages counts the images no build record names.
func orphanImages(ctx context.Context, addr string, sim *simulated.Cloud) int {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	bs, err := store.New(rdb, 0, 0).List(ctx, builds.ListOptions{Limit: 500})
	if err != nil {
		return 1 // Redis is busy: look again
	}
	recorded := map[string]bool{}
	for _, b := range bs {
		for _, c := range b.Clouds {
			recorded[c.ImageID] = true
		}
	}
	n := 0
	for _, im := range sim.Images() {
		if !recorded[im.ID] {
			n++
		}
	}
	return n
}

// buildImagegen builds the real binary: the suite runs what ships.
func buildImagegen(t *testing.T, dir string) string {
	t.Helper()
	// The chaos tests run the real binary against a real Redis: skip under
	// -short before spending the build on it.
	servicetest.Need(t, "Redis (Debian package redis-server)", "redis-server")
	bin := filepath.Join(dir, "imagegen")
	// go test puts the go command of its own toolchain first in PATH.
	cmd := exec.Command("go", "build", "-o", bin, "github.com/imagegen/imagegen/cmd/imagegen")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is one serve or worker process; its output goes to a file kept
// after it dies, so the secret scan reads the logs of killed workers too.
type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  string
	done chan error
}

type processes struct {
	t   *testing.T
	bin string
	dir string

	mu    sync.Mutex
	all   []*process
	names map[string]*process
	n     int
}

func (ps *processes) start(name string, args ...string) *process {
	ps.mu.Lock()
	ps.n++
	logFile := filepath.Join(ps.dir, fmt.Sprintf("%s.%d.log", name, ps.n))
	ps.mu.Unlock()
	f, err := os.Create(logFile)
	if err != nil {
		ps.t.Error(err)
		return nil
	}
	cmd := exec.Command(ps.bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		ps.t.Errorf("start %s: %v", name, err)
		return nil
	}
	p := &process{t: ps.t, cmd: cmd, log: logFile, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	ps.t.Cleanup(func() {
		p.kill()
		if ps.t.Failed() {
			b, _ := os.ReadFile(logFile)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			ps.t.Logf("%s output (tail):\n%s", filepath.Base(logFile), b)
		}
	})
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	if ps.names == nil {
		ps.names = map[string]*process{}
	}
	ps.names[name] = p
	ps.mu.Unlock()
	return p
}

func (ps *processes) byName(name string) *process {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.names[name]
}

func (ps *processes) outputs() map[string]string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := map[string]string{}
	for _, p := range ps.all {
		b, _ := os.ReadFile(p.log)
		out[filepath.Base(p.log)] = string(b)
	}
	return out
}

// kill SIGKILLs the process (no cleanup runs) and reaps it. Idempotent.
func (p *process) kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(5 * time.Second):
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(name string) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			p.t.Errorf("%s exited with %v after SIGTERM", name, err)
		}
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s did not stop within 30s of SIGTERM", name)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(t *testing.T, base string, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s/readyz not ready within %s", base, within)
}

// keyBody is a line from the middle of the App's private key PEM: what would
// show if the key leaked, without matching the PEM armour of other keys.
func keyBody(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 4 {
		t.Fatalf("%s is not a PEM key", file)
	}
	return lines[len(lines)/2]
}

// findSecrets counts the places holding any needle: every process's output,
// every GitHub API call body (statuses, check runs), every Redis key and value.
func findSecrets(t *testing.T, addr string, gh *githubtest.Server, outputs map[string]string, needles []string) int {
	t.Helper()
	hay := map[string]string{}
	maps := func(m map[string]string) {
		for k, v := range m {
			hay[k] = v
		}
	}
	maps(outputs)
	for i, c := range gh.Calls() {
		hay[fmt.Sprintf("github call %d %s %s", i, c.Method, c.Path)] = string(c.Body)
	}
	maps(redisDump(t, addr))
	found := 0
	for where, text := range hay {
		for _, n := range needles {
			if n != "" && strings.Contains(text, n) {
				t.Errorf("a secret (%.6s…) is in %s", n, where)
				found++
			}
		}
	}
	return found
}

// redisDump reads every key of every type into text.
func redisDump(t *testing.T, addr string) map[string]string {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("redis KEYS: %v", err)
	}
	out := map[string]string{}
	for _, k := range keys {
		typ, _ := c.Type(ctx, k).Result()
		var v any
		switch typ {
		case "string":
			v, _ = c.Get(ctx, k).Result()
		case "hash":
			v, _ = c.HGetAll(ctx, k).Result()
		case "list":
			v, _ = c.LRange(ctx, k, 0, -1).Result()
		case "set":
			v, _ = c.SMembers(ctx, k).Result()
		case "zset":
			v, _ = c.ZRange(ctx, k, 0, -1).Result()
		case "stream":
			v, _ = c.XRange(ctx, k, "-", "+").Result()
		}
		out["redis "+k] = k + " " + fmt.Sprint(v)
	}
	if len(out) == 0 {
		t.Errorf("Redis holds no keys: the secret scan would prove nothing")
	}
	return out
}
