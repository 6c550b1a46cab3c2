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
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/store"
)

// params of a run, from the environment so `make chaos` can run the full
// size and `make test` a small one.
type params struct {
	builds, redeliveries, kills, workers int
	killEvery                            time.Duration // mean time between two kills
	concurrency                          int           // builds per worker
	failRate, permRate                   float64
	settle                               time.Duration // how long builds may go without progress once the faults stop
	netRounds                            int           // rounds of the network fault schedule
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func loadParams() params {
	p := params{
		builds:      envInt("CHAOS_BUILDS", 24),
		workers:     envInt("CHAOS_WORKERS", 2),
		concurrency: envInt("CHAOS_CONCURRENCY", 4),
		failRate:    0.20, permRate: 0.05,
	}
	p.redeliveries = envInt("CHAOS_REDELIVERIES", 5*p.builds)
	p.kills = envInt("CHAOS_KILLS", max(2, p.builds/10))
	p.killEvery = time.Duration(envInt("CHAOS_KILL_EVERY_MS", 900)) * time.Millisecond
	p.settle = time.Duration(envInt("CHAOS_SETTLE_SECONDS", 300)) * time.Second
	p.netRounds = max(1, envInt("CHAOS_NET_ROUNDS", 1))
	return p
}

// The chaos clouds: every push builds one generator on both.
const (
	simCloud = "sim" // the simulated cloud, its state in a file, its API calls failing at random
	ec2Cloud = "ec2" // the ec2 driver against ec2test over TCP, its instances a real sshd
)

var chaosClouds = []string{simCloud, ec2Cloud}

// TestChaos runs the fault-injection suite (docs/RELIABILITY.md): real
// `imagegen serve --no-worker` and `imagegen worker` processes on a real
// redis-server and the fake GitHub. Every push builds on two clouds: the
// simulated cloud with its state in a file (so what a killed worker launched
// outlives it), 20 % / 5 % of its calls failing transiently / permanently;
// and the ec2 driver talking over TCP to ec2test in this process, its
// instances a real sshd that runs the script. The workers reach Redis, the
// EC2 API and SSH through fault-injecting proxies (servicetest.Proxy), and
// the network fault schedule (netfaults_test.go) breaks each in turn. Workers
// are SIGKILLed at random points and restarted, Redis is restarted once a
// round, every push is redelivered several times. It prints the table and
// asserts its promises.
func TestChaos(t *testing.T) {
	p := loadParams()
	if p.builds == 0 {
		t.Fatal("CHAOS_BUILDS=0: nothing to run")
	}
	ctx := context.Background()
	dir := t.TempDir()
	if keep := os.Getenv("CHAOS_KEEP_DIR"); keep != "" {
		// The processes' logs, the configs, Redis's files: kept to read after the run.
		dir = keep
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	bin := buildImagegen(t, dir)
	rd := startRedis(t, dir)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	cl := startClouds(t, dir)
	nw := startNet(t, rd.addr, cl)

	const (
		repo      = "chaos/images"
		whSecret  = "whsec-chaos-6b1f0c2e9d7a4f35"
		apiToken  = "api-token-chaos-0d9c8b7a6f5e4d3c"
		generator = "g"
	)
	addr := freeAddr(t)
	base := "http://" + addr
	// serve reaches Redis directly, the workers through the proxy: the
	// network faults are between the workers and what they use.
	config := func(redisAddr string) string {
		return fmt.Sprintf(`listen: %s
redis: redis://%s/0
github: {app_id: %d, private_key_file: %q, webhook_secret: %s, api_url: %q}
api_tokens: [%q]
encryption_key: %s
build: {timeout: 2m, cleanup_timeout: 30s, concurrency: %d, sweep_interval: 2s}
clouds:
%s`, addr, redisAddr, app.AppID, app.PrivateKeyFile, whSecret, gh.URL(), apiToken, strings.Repeat("c4", 32), p.concurrency,
			cl.config(p.failRate, p.permRate, nw.ec2API.Addr, nw.ssh.Addr))
	}
	serveCfg, workerCfg := filepath.Join(dir, "serve.yaml"), filepath.Join(dir, "worker.yaml")
	for file, cfg := range map[string]string{serveCfg: config(rd.addr), workerCfg: config(nw.redis.Addr)} {
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	procs := &processes{t: t, bin: bin, dir: dir, env: cl.env()}
	procs.start("serve", "serve", "--no-worker", "--config", serveCfg)
	workers := &workerSet{procs: procs, config: workerCfg, ws: make([]*workerProc, p.workers)}
	for i := range p.workers {
		workers.start(i)
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
		// Unlike in the first 7 characters: image names carry the short sha.
		shas[i] = fmt.Sprintf("%07x%033x", 0xc4a0000+i, 0xc4a05)
		gh.SetFile(repo, shas[i], ".imagegen/"+generator+".yaml", []byte(cl.spec(i)))
		pushes[i] = githubtest.Push(t, githubtest.PushOptions{Repo: repo, Before: strings.Repeat("0", 40), After: shas[i]})
	}
	deliveryID := func(i int) string { return fmt.Sprintf("chaos-%06d", i) }

	// The network fault rounds are spread over the kills' span (all at
	// once when that is shorter), and the pushes over the same time, so every
	// fault finds builds in flight.
	schedule := netSchedule()
	span := max(schedule.length()*time.Duration(p.netRounds), time.Duration(p.kills)*p.killEvery)
	roundEvery := span / time.Duration(p.netRounds)
	t0 := time.Now()
	var (
		accepted   = make([]atomic.Bool, p.builds)
		dupAccept  atomic.Int64 // a redelivery answered 202: enqueued twice
		redelivers atomic.Int64
		sentDone   = make(chan struct{})
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
	pace := span / time.Duration(p.builds)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(sentDone)
		for i := range p.builds {
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				code := post(i)
				if code == http.StatusAccepted || code == http.StatusOK {
					accepted[i].Store(true)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(max(pace, time.Duration(rand.IntN(60))*time.Millisecond))
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
				time.Sleep(time.Millisecond)
			default:
				time.Sleep(time.Duration(rand.IntN(10))*time.Millisecond + pace/time.Duration(max(1, p.redeliveries/p.builds)))
			}
		}
	}()
	// Workers SIGKILLed at random points, and restarted at once.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; k < p.kills; k++ {
			time.Sleep(p.killEvery/3 + rand.N(p.killEvery*4/3))
			workers.restart(rand.IntN(p.workers))
		}
	}()
	// The network faults, and the Redis restart, one after the other.
	faults := &faultRun{t: t, net: nw, clouds: cl, redis: rd, workers: workers, serveBase: base}
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(2 * time.Second) // builds in flight first
		faults.run(schedule, p.netRounds, roundEvery)
	}()
	wg.Wait()
	t.Logf("faults done after %s: %d kills, %d redeliveries, the network fault schedule %d times", time.Since(t0).Round(time.Millisecond), p.kills+workers.extraKills(), redelivers.Load(), p.netRounds)

	// Every accepted build must reach a final status on every cloud; the
	// lease of a task whose worker was killed expires and asynq retries it
	// (30-90 s). The wait ends when no build has ended for p.settle.
	final := func(i int) bool {
		st := gh.LatestStatuses(repo, shas[i])
		for _, c := range chaosClouds {
			switch st["imagegen/"+generator+"/"+c].State {
			case "success", "failure", "error":
			default:
				return false
			}
		}
		return true
	}
	lastDone, lastProgress := -1, time.Now()
	for time.Since(lastProgress) < p.settle {
		done := 0
		for i := range shas {
			if final(i) {
				done++
			}
		}
		if done == p.builds {
			break
		}
		if done > lastDone {
			lastDone, lastProgress = done, time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("builds settled after %s", time.Since(t0).Round(time.Millisecond))
	// The sweep (every 2 s) removes what failed cleanups and killed workers left.
	sweepDeadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(sweepDeadline) {
		bs, err := allBuilds(ctx, rd.addr, t0)
		if err == nil && len(cl.leftovers(recordedImages(bs))) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	workers.stopAll()
	procs.byName("serve").stop("serve")

	bs, err := allBuilds(ctx, rd.addr, t0)
	if err != nil {
		t.Fatal(err)
	}
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
			notFinal = append(notFinal, fmt.Sprintf("%s=%+v", deliveryID(i), gh.LatestStatuses(repo, shas[i])))
		}
	}
	runs := map[string]int{}
	for _, cr := range gh.CheckRuns(repo) {
		runs[cr.HeadSHA]++
	}
	dupSHA := map[string]bool{}
	for sha, n := range runs {
		if n > 1 {
			t.Errorf("%d check runs for %s", n, sha)
			tab.Duplicates += n - 1
			dupSHA[sha] = true
		}
	}
	perDelivery := map[string]int{}
	for _, b := range bs {
		perDelivery[b.Delivery]++
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
	left := cl.leftovers(recordedImages(bs))
	for _, r := range left {
		if r.Kind == clouds.KindImage {
			tab.OrphanImages++
		}
	}
	tab.Leftovers = len(left)
	tab.Secrets = findSecrets(t, rd.addr, gh, procs.outputs(), append([]string{whSecret, apiToken, keyBody(t, app.PrivateKeyFile), "PRIVATE KEY", awsSecretKey}, gh.InstallationTokens()...))

	// What became of the builds each network fault hit.
	byID := map[string]*builds.Build{}
	for _, b := range bs {
		byID[b.ID] = b
	}
	shaIndex := map[string]int{}
	for i, s := range shas {
		shaIndex[s] = i
	}
	leftBy := map[string]int{}
	for _, r := range left {
		leftBy[r.Build]++
	}
	lostBy := map[string]int{}
	failures := map[string]int{}
	lostExample := "" // what a user sees when SSH broke under the script
	for _, b := range bs {
		st := gh.LatestStatuses(repo, b.Commit)
		for _, c := range chaosClouds {
			s := st["imagegen/"+generator+"/"+c]
			if s.State == "failure" || s.State == "error" {
				failures[c+": "+failureClass(s.Description)]++
				if strings.Contains(s.Description, "connection lost") {
					lostBy[b.ID]++
					lostExample = s.Description
				}
				if strings.Contains(s.Description, "did the VM reboot") {
					t.Errorf("a lost connection reported without saying so: %q", s.Description)
				}
			}
		}
	}
	for _, f := range faults.rows() {
		row := FaultRow{Fault: f.name, Injected: f.injected}
		for id := range f.inFlight {
			b := byID[id]
			if b == nil {
				continue // a resource of no build record: counted in the leftovers if left
			}
			row.InFlight++
			if i, ok := shaIndex[b.Commit]; ok && final(i) {
				row.Finished++
			}
			if perDelivery[b.Delivery] > 1 || dupSHA[b.Commit] {
				row.Duplicates++
			}
			row.Leftovers += leftBy[id]
			if f.ssh {
				row.Lost += lostBy[id]
			}
		}
		tab.Faults = append(tab.Faults, row)
	}

	summary := fmt.Sprintf("chaos: %d builds on %d clouds (%s), %d workers × %d builds, SIGKILLed and restarted %d times, the network fault schedule %d times, %d redeliveries, %.0f %% / %.0f %% of %s calls failing transiently / permanently; %s\n\n%s\n"+
		"images no build record names (an attempt killed after its snapshot): %d\n\nwhy cloud parts failed:\n%s",
		p.builds, len(chaosClouds), strings.Join(chaosClouds, ", "), p.workers, p.concurrency, p.kills+workers.extraKills(), p.netRounds, redelivers.Load(),
		100*p.failRate, 100*p.permRate, simCloud, time.Since(t0).Round(time.Second), tab, tab.OrphanImages, failureSummary(failures))
	t.Log("\n" + summary)
	if out := os.Getenv("CHAOS_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(summary), 0o644)
	}
	faults.check()
	if lostExample != "" {
		t.Logf("a cloud part whose SSH connection broke under the script, on GitHub: %q", lostExample)
	} else if faults.injected(resetSSHName) > 0 {
		t.Errorf("SSH connections were reset while scripts ran, and no cloud part failed saying \"connection lost\"")
	}
	if len(notFinal) > 0 {
		t.Errorf("builds not final: %s", strings.Join(notFinal[:min(len(notFinal), 20)], ", "))
	}
	if len(left) > 0 {
		t.Errorf("left in the clouds after the sweep: %v", left[:min(len(left), 20)])
	}
	if !tab.OK() {
		t.Errorf("the chaos run broke a promise:\n%s", tab)
	}
}

var (
	longHex = regexp.MustCompile(`\b[0-9a-f]{8,}\b|\b(i|ami|sg|vol|snap|srv|kp|sim)-[0-9a-z]+\b`)
	number  = regexp.MustCompile(`\d+`)
)

// failureClass is a failure's description with its ids and numbers blurred,
// so failures of one kind count together.
func failureClass(desc string) string {
	s := number.ReplaceAllString(longHex.ReplaceAllString(desc, "…"), "N")
	if len(s) > 110 {
		s = s[:110] + "…"
	}
	return s
}

func failureSummary(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%6d  %s\n", m[k], k)
	}
	if b.Len() == 0 {
		return "  none\n"
	}
	return b.String()
}

// allBuilds reads every build record made since t0.
func allBuilds(ctx context.Context, addr string, t0 time.Time) ([]*builds.Build, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	st := store.New(rdb, 0, 0)
	ids, err := st.BuildsSince(ctx, t0.Add(-time.Minute))
	if err != nil {
		return nil, err
	}
	out := make([]*builds.Build, 0, len(ids))
	for _, id := range ids {
		b, _, err := st.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", id, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// recordedImages are the images build records name.
func recordedImages(bs []*builds.Build) map[string]bool {
	out := map[string]bool{}
	for _, b := range bs {
		for _, c := range b.Clouds {
			if c.ImageID != "" {
				out[c.ImageID] = true
			}
		}
	}
	return out
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
	env []string // added to the test's environment

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
	if len(ps.env) > 0 {
		cmd.Env = append(os.Environ(), ps.env...)
	}
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

// workerProc is one `imagegen worker`, serving its /readyz on metrics.
type workerProc struct {
	proc    *process
	metrics string // 127.0.0.1:port
}

// workerSet is the run's workers, each restarted in its slot.
type workerSet struct {
	procs  *processes
	config string

	mu    sync.Mutex
	ws    []*workerProc
	extra int // restarts beyond the planned kills (one while Redis is down)
}

func (s *workerSet) start(i int) {
	m := freeAddrOf(s.procs.t)
	p := s.procs.start(fmt.Sprintf("worker-%d", i), "worker", "--config", s.config, "--metrics-listen", m)
	s.ws[i] = &workerProc{proc: p, metrics: m}
}

// restart SIGKILLs worker i and starts it again at once.
func (s *workerSet) restart(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws[i].proc.kill()
	s.start(i)
}

// restartExtra is restart outside the planned kills.
func (s *workerSet) restartExtra(i int) {
	s.restart(i)
	s.mu.Lock()
	s.extra++
	s.mu.Unlock()
}

func (s *workerSet) extraKills() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extra
}

// readyz asks every worker's /readyz; 0 for one that did not answer (starting).
func (s *workerSet) readyz() []int {
	s.mu.Lock()
	addrs := make([]string, len(s.ws))
	for i, w := range s.ws {
		addrs[i] = w.metrics
	}
	s.mu.Unlock()
	probe := &http.Client{Timeout: 3 * time.Second}
	out := make([]int, len(addrs))
	for i, a := range addrs {
		if resp, err := probe.Get("http://" + a + "/readyz"); err == nil {
			out[i] = resp.StatusCode
			resp.Body.Close()
		}
	}
	return out
}

func (s *workerSet) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var wg sync.WaitGroup
	for i, w := range s.ws {
		wg.Go(func() { w.proc.stop(fmt.Sprintf("worker-%d", i)) })
	}
	wg.Wait()
}

func freeAddr(t *testing.T) string { return freeAddrOf(t) }

func freeAddrOf(t testing.TB) string {
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
	// Installation tokens (one per worker start: hundreds in a long run) are
	// looked up where their prefix occurs; a scan per token per text took minutes.
	const tokenPrefix = "ghs_"
	tokens, lengths := map[string]bool{}, map[int]bool{}
	var others []string
	for _, n := range needles {
		switch {
		case n == "":
		case strings.HasPrefix(n, tokenPrefix):
			tokens[n], lengths[len(n)] = true, true
		default:
			others = append(others, n)
		}
	}
	found := 0
	for where, text := range hay {
		for _, n := range others {
			if strings.Contains(text, n) {
				t.Errorf("a secret (%.6s…) is in %s", n, where)
				found++
			}
		}
		seen := map[string]bool{}
		for rest := text; len(tokens) > 0; {
			i := strings.Index(rest, tokenPrefix)
			if i < 0 {
				break
			}
			rest = rest[i:]
			for l := range lengths {
				if len(rest) >= l && tokens[rest[:l]] && !seen[rest[:l]] {
					seen[rest[:l]] = true
					t.Errorf("a secret (%.6s…) is in %s", rest[:l], where)
					found++
				}
			}
			rest = rest[len(tokenPrefix):]
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
	slices.Sort(keys)
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
