package pages_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/server/pages"
)

// TestBrowserLiveBuild opens a running build in headless Chromium, driven
// over the Chrome DevTools Protocol: the log grows as lines are written, the
// state turns green when the cloud succeeds, and screenshots are saved.
func TestBrowserLiveBuild(t *testing.T) {
	bin := chromiumPath(t)
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "e2e0123456789abc", clouds: map[string]*builds.CloudRecord{
		"sim-a": {State: builder.StateRunning, Phase: builder.PhaseScript, Started: time.Now().UTC().Add(-20 * time.Second), Attempts: 1},
		"sim-b": {State: builder.StateRunning, Phase: builder.PhaseSSH, Started: time.Now().UTC().Add(-15 * time.Second), Attempts: 1},
	}})
	e.logLine(b.ID, "sim-a", builder.StreamImagegen, "launched instance i-0abc on sim-a")
	e.logLine(b.ID, "sim-a", builder.StreamStdout, "Reading package lists...")

	br := startChromium(t, bin)
	page := br.page(t)
	page.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1100, "height": 900, "deviceScaleFactor": 1, "mobile": false}, nil)

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
	page.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}, nil)
	page.navigate(t, e.http.URL+"/builds/"+b.ID)
	page.waitFor(t, "the narrow page", `document.querySelectorAll("#clouds tr").length === 2`)
	if over := page.eval(t, `document.documentElement.scrollWidth - document.documentElement.clientWidth`); over.(float64) > 0 {
		t.Errorf("the page is %v px wider than a 390 px screen", over)
	}
	page.screenshot(t, filepath.Join(dir, "build-narrow.png"))

	// The link opens one build only: the list asks to sign in, and the API
	// token in the form lets the browser in.
	page.call(t, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1100, "height": 700, "deviceScaleFactor": 1, "mobile": false}, nil)
	page.navigate(t, e.http.URL+"/builds")
	page.waitFor(t, "the sign-in form", `document.querySelector("input#token[type=password]") !== null`)
	page.eval(t, `document.querySelector("#token").value = `+jsString(apiToken)+`; document.querySelector("form").submit(); true`)
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
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found: install the Debian package chromium (scripts/install-deps.sh test)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
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

type chromium struct {
	debugURL string // http://127.0.0.1:port
}

func startChromium(t *testing.T, bin string) *chromium {
	t.Helper()
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--remote-allow-origins=http://127.0.0.1", "--hide-scrollbars", "--window-size=1100,900", "about:blank")
	// Its own process group, so the renderer and helpers end with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	found := make(chan string, 1)
	var out strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			out.WriteString(line + "\n")
			mu.Unlock()
			if ws, ok := strings.CutPrefix(line, "DevTools listening on "); ok {
				found <- ws
			}
		}
	}()
	select {
	case ws := <-found:
		// ws://127.0.0.1:PORT/devtools/browser/ID
		hostport := strings.SplitN(strings.TrimPrefix(ws, "ws://"), "/", 2)[0]
		return &chromium{debugURL: "http://" + hostport}
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("chromium did not start its DevTools endpoint:\n%s", out.String())
	}
	return nil
}

// page connects to the browser's first page target.
func (c *chromium) page(t *testing.T) *cdp {
	t.Helper()
	var targets []struct {
		Type, WebSocketDebuggerURL string
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(c.debugURL + "/json/list")
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				ws, err := websocket.Dial(tg.WebSocketDebuggerURL, "", "http://127.0.0.1")
				if err != nil {
					t.Fatalf("connect to the page: %v", err)
				}
				ws.MaxPayloadBytes = 64 << 20
				p := &cdp{ws: ws, waiting: map[int]chan cdpReply{}}
				go p.read()
				t.Cleanup(func() { ws.Close() })
				p.call(t, "Page.enable", nil, nil)
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page target in %s/json/list", c.debugURL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cdp is a minimal Chrome DevTools Protocol client: numbered calls and their
// replies; events are ignored.
type cdp struct {
	ws *websocket.Conn

	mu      sync.Mutex
	id      int
	waiting map[int]chan cdpReply
}

type cdpReply struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (p *cdp) read() {
	for {
		var msg []byte
		if err := websocket.Message.Receive(p.ws, &msg); err != nil {
			p.mu.Lock()
			for id, ch := range p.waiting {
				close(ch)
				delete(p.waiting, id)
			}
			p.mu.Unlock()
			return
		}
		var r cdpReply
		if json.Unmarshal(msg, &r) != nil || r.ID == 0 {
			continue // an event
		}
		p.mu.Lock()
		ch := p.waiting[r.ID]
		delete(p.waiting, r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (p *cdp) call(t *testing.T, method string, params any, result any) {
	t.Helper()
	p.mu.Lock()
	p.id++
	id := p.id
	ch := make(chan cdpReply, 1)
	p.waiting[id] = ch
	p.mu.Unlock()
	if params == nil {
		params = map[string]any{}
	}
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err := websocket.Message.Send(p.ws, string(msg)); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the browser connection closed", method)
		}
		if r.Error != nil {
			t.Fatalf("%s: %s", method, r.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(r.Result, result); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer within 30 s", method)
	}
}

func (p *cdp) navigate(t *testing.T, url string) {
	t.Helper()
	var r struct {
		ErrorText string `json:"errorText"`
	}
	p.call(t, "Page.navigate", map[string]any{"url": url}, &r)
	if r.ErrorText != "" {
		t.Fatalf("navigate %s: %s", url, r.ErrorText)
	}
	p.waitFor(t, "the page to load", `document.readyState === "complete" && location.href === `+jsString(url))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (p *cdp) eval(t *testing.T, expr string) any {
	t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	p.call(t, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		t.Fatalf("evaluate %s: %s", expr, r.ExceptionDetails.Text)
	}
	return r.Result.Value
}

// waitFor polls a JavaScript condition until it is true, for at most 15 s.
func (p *cdp) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var r struct {
			Result struct {
				Value any `json:"value"`
			} `json:"result"`
		}
		p.call(t, "Runtime.evaluate", map[string]any{"expression": "(function(){try{return !!(" + cond + ")}catch(e){return false}})()", "returnByValue": true}, &r)
		if r.Result.Value == true {
			return
		}
		if time.Now().After(deadline) {
			body := p.eval(t, `document.body ? document.body.innerText : ""`)
			t.Fatalf("timed out waiting for %s (%s); the page shows:\n%v", what, cond, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *cdp) screenshot(t *testing.T, file string) {
	t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	p.call(t, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil || len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}
