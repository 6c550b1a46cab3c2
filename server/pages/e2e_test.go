package pages_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/server/pages"
)

// TestBrowserLiveBuild opens a running build in headless Chromium, driven
// with chromedp: the log grows as lines are written, the state turns green
// when the cloud succeeds, and screenshots are saved.
func TestBrowserLiveBuild(t *testing.T) {
	bin := chromiumPath(t)
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "e2e0123456789abc", clouds: map[string]*builds.CloudRecord{
		"sim-a": {State: builder.StateRunning, Phase: builder.PhaseScript, Started: time.Now().UTC().Add(-20 * time.Second), Attempts: 1},
		"sim-b": {State: builder.StateRunning, Phase: builder.PhaseSSH, Started: time.Now().UTC().Add(-15 * time.Second), Attempts: 1},
	}})
	e.logLine(b.ID, "sim-a", builder.StreamImagegen, "launched instance i-0abc on sim-a")
	e.logLine(b.ID, "sim-a", builder.StreamStdout, "Reading package lists...")

	page := startChromium(t, bin)
	page.viewport(t, 1100, 900, false)

	// The link as placed on GitHub: it opens the build and, through its
	// cookie, the pages below it, including the live streams.
	link := e.http.URL + pages.BuildPath(b.ID) + "?t=" + e.signer.Token(pages.BuildPath(b.ID), time.Now().Add(time.Hour))
	page.navigate(t, link)
	page.waitFor(t, "the build page", `document.querySelector("#build h1") !== null`)

	page.navigate(t, e.http.URL+"/builds/"+b.ID+"/log/sim-a")
	page.waitFor(t, "the log page with its two lines", `document.querySelectorAll("#log .ln").length === 2`)
	if got := page.eval(t, `document.querySelector("#cloud-state").textContent`); !strings.Contains(got.(string), "running: running script") {
		t.Fatalf("log page state %q", got)
	}

	// The script writes lines while the page is open.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 6 {
			time.Sleep(300 * time.Millisecond)
			if err := e.store.AppendLog(context.Background(), b.ID, "sim-a", builds.LogEntry{
				Time: time.Now().UTC(), Cloud: "sim-a", Stream: builder.StreamStdout, Text: fmt.Sprintf("Setting up dstat (%d/6) <ok>", i+1),
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	page.waitFor(t, "the log to grow", `document.querySelectorAll("#log .ln").length >= 4`)
	page.waitFor(t, "every line", `document.querySelectorAll("#log .ln").length === 8`)
	wg.Wait()
	if got := page.eval(t, `document.querySelector("#log").lastElementChild.textContent`); !strings.HasSuffix(got.(string), "[stdout] Setting up dstat (6/6) <ok>") {
		t.Errorf("last line %q (shown as text, not markup)", got)
	}

	// The cloud succeeds: its state turns green, in words and symbol too.
	e.succeed(b, "sim-a", "ami-0a1b2c3d4e5f67890", "dstat-20260301-1200-3f78685", time.Now().UTC())
	page.waitFor(t, "the state to turn green", `(function(){var s=document.querySelector("#cloud-state .state");return s.classList.contains("st-ok")&&s.textContent.indexOf("✓ succeeded")>=0;})()`)
	if bg := page.eval(t, `getComputedStyle(document.querySelector("#cloud-state .state")).backgroundColor`); bg != "rgb(218, 251, 225)" {
		t.Errorf("succeeded background %v, want green rgb(218, 251, 225)", bg)
	}
	page.waitFor(t, "the tail to end", `document.querySelector("#live-note").textContent === "(finished)"`)
	dir := artifacts(t)
	page.screenshot(t, filepath.Join(dir, "log-sim-a.png"))

	// The build page follows the other cloud until it ends.
	page.navigate(t, e.http.URL+"/builds/"+b.ID)
	page.waitFor(t, "the build page", `document.querySelectorAll("#clouds tr").length === 2`)
	if got := page.eval(t, `document.querySelector("#build-state").textContent`); !strings.Contains(got.(string), "running") {
		t.Fatalf("build state %q, want running", got)
	}
	e.update(b.ID, "sim-b", func(c *builds.CloudRecord) {
		c.Phases = []builder.PhaseTiming{{Phase: builder.PhaseLaunch, Duration: 4200 * time.Millisecond}, {Phase: builder.PhaseScript, Duration: 71 * time.Second}}
	})
	e.succeed(b, "sim-b", "c2d3e4f5-6a7b-4c8d-9e0f-a1b2c3d4e5f6", "dstat-20260301-1201-3f78685", time.Now().UTC())
	page.waitFor(t, "the build to turn green", `document.querySelector("#build-state .state").classList.contains("st-ok")`)
	page.waitFor(t, "both images", `document.querySelectorAll("#clouds .image-id").length === 2`)
	text := page.eval(t, `document.querySelector("#clouds").innerText`).(string)
	for _, want := range []string{"sim-a", "sim-b", "✓ succeeded", "ami-0a1b2c3d4e5f67890", "dstat-20260301-1201-3f78685"} {
		if !strings.Contains(text, want) {
			t.Errorf("cloud table lacks %q:\n%s", want, text)
		}
	}
	page.screenshot(t, filepath.Join(dir, "build.png"))

	// Narrow screens: nothing sticks out of the page sideways.
	page.viewport(t, 390, 844, true)
	page.navigate(t, e.http.URL+"/builds/"+b.ID)
	page.waitFor(t, "the narrow page", `document.querySelectorAll("#clouds tr").length === 2`)
	if over := page.eval(t, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over.(float64) > 0 {
		t.Errorf("the page is %v px wider than a 390 px screen", over)
	}
	page.screenshot(t, filepath.Join(dir, "build-narrow.png"))

	// The link opens one build only: the list asks to sign in, and the API
	// token in the form lets the browser in.
	page.viewport(t, 1100, 700, false)
	page.navigate(t, e.http.URL+"/builds")
	page.waitFor(t, "the sign-in form", `document.querySelector("input#token[type=password]") !== null`)
	page.eval(t, `document.querySelector("#token").value = `+jsString(apiToken)+`; document.querySelector("#token").form.submit(); true`)
	page.waitFor(t, "the build list", `location.pathname === "/builds" && document.querySelectorAll("table.builds tbody tr").length === 1`)
	page.screenshot(t, filepath.Join(dir, "list.png"))
	page.navigate(t, e.http.URL+"/generators/octo-org/images/dstat")
	page.waitFor(t, "the lineage", `document.querySelectorAll("table.lineage tbody tr").length === 1`)
	if text := page.eval(t, `document.querySelector("table.lineage").innerText`).(string); !strings.Contains(text, "ami-0a1b2c3d4e5f67890") || !strings.Contains(text, "c2d3e4f5-6a7b-4c8d-9e0f-a1b2c3d4e5f6") {
		t.Errorf("lineage lacks an image:\n%s", text)
	}
	page.screenshot(t, filepath.Join(dir, "generator.png"))
	t.Logf("screenshots in %s", dir)
}

// chromiumPath finds Chromium; without it the test fails under CI and is
// skipped, saying so, elsewhere.
func chromiumPath(t *testing.T) string {
	return servicetest.Need(t, "Chromium (Debian package chromium)", "chromium")[0]
}

func artifacts(t *testing.T) string {
	if d := os.Getenv("IMAGEGEN_TEST_ARTIFACTS"); d != "" {
		d = filepath.Join(d, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// tab is the one page of a headless Chromium; its methods fail the test on
// any error.
type tab struct {
	ctx context.Context // a chromedp context that has started the browser
}

// startChromium starts Chromium headless, with a fresh profile, talking to
// chromedp over a pipe (no debugging port). The flags keep it from reaching
// out to Google's services: the machine may have no network.
func startChromium(t *testing.T, bin string) *tab {
	t.Helper()
	out := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
		chromedp.CombinedOutput(out),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	// Canceling stops the browser and waits for it, before TempDir's cleanup
	// (registered earlier, so run later) removes the profile.
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser and lives as long as its context:
	// no timeout on it, a watch instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("chromium did not start within 30 s:\n%s", out)
	}
	return &tab{ctx: ctx}
}

// run runs one action, for at most 30 s.
func run[T any](t *testing.T, p *tab, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (p *tab) viewport(t *testing.T, width, height int64, mobile bool) {
	t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(1)}
	if mobile {
		opts = append(opts, chromedp.EmulateMobile)
	}
	run(t, p, fmt.Sprintf("viewport %dx%d", width, height), chromedp.EmulateViewport(width, height, opts...))
}

func (p *tab) navigate(t *testing.T, url string) {
	t.Helper()
	run(t, p, "navigate "+url, chromedp.Navigate(url))
	p.waitFor(t, "the page to load", `document.readyState === "complete" && location.href === `+jsString(url))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// eval returns the value of a JavaScript expression, as encoding/json decodes it.
func (p *tab) eval(t *testing.T, expr string) any {
	t.Helper()
	return run(t, p, "evaluate "+expr, chromedp.Evaluate[any](expr))
}

// waitFor polls a JavaScript condition until it is true, for at most 15 s.
// An evaluation that fails (the page is navigating) counts as false.
func (p *tab) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	expr := "(function(){try{return !!(" + cond + ")}catch(e){return false}})()"
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body := p.eval(t, `document.body ? document.body.innerText : ""`)
			t.Fatalf("timed out waiting for %s (%s; last error: %v); the page shows:\n%v", what, cond, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *tab) screenshot(t *testing.T, file string) {
	t.Helper()
	png := run(t, p, "screenshot", chromedp.FullScreenshot(100))
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer collects the browser's output, written from another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
