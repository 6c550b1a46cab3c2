package pages_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

type event struct {
	id, name, data string
}

// stream opens a server-sent event stream and sends its events on a channel,
// closed when the stream ends.
func (e *env) stream(path string, headers ...string) <-chan event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	e.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.http.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		e.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan event, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan event) event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the stream ended early")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return event{}
}

func TestLogEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "b-tail", clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning, Phase: builder.PhaseScript}}})
	e.logLine(b.ID, "sim-a", builder.StreamStdout, "before the page")

	ch := e.stream("/builds/b-tail/log/sim-a/events?from=1")
	st := next(t, ch)
	if st.name != "state" || !strings.Contains(st.data, "running: running script") {
		t.Fatalf("first event %+v, want the state", st)
	}
	// Lines written while the page is open arrive in order, numbered, as text.
	for i := range 3 {
		e.logLine(b.ID, "sim-a", builder.StreamStderr, fmt.Sprintf("live %d <i>", i))
	}
	for i := range 3 {
		ev := next(t, ch)
		var l struct{ Stream, Text string }
		if err := json.Unmarshal([]byte(ev.data), &l); err != nil {
			t.Fatal(err)
		}
		if ev.name != "line" || ev.id != fmt.Sprint(i+2) || l.Text != fmt.Sprintf("live %d <i>", i) || l.Stream != "stderr" {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	// The worker writes a cloud's last line before its result.
	e.logLine(b.ID, "sim-a", builder.StreamImagegen, "last line")
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.State, c.ImageID, c.ImageName, c.Phase = builder.StateSucceeded, "img-1", "dstat-1", ""
	})
	var names []string
	for ev := range ch {
		names = append(names, ev.name)
		if ev.name == "state" && !strings.Contains(ev.data, `st-ok`) {
			t.Errorf("final state %s", ev.data)
		}
	}
	if strings.Join(names, ",") != "line,state,end" {
		t.Errorf("after success: events %v, want line,state,end (the stream ends)", names)
	}

	// A reconnecting EventSource sends Last-Event-ID; the stream resumes after it.
	ch = e.stream("/builds/b-tail/log/sim-a/events?from=0", "Last-Event-ID: 3")
	var texts []string
	for ev := range ch {
		if ev.name == "line" {
			var l struct{ Text string }
			_ = json.Unmarshal([]byte(ev.data), &l)
			texts = append(texts, l.Text)
		}
	}
	if strings.Join(texts, "|") != "live 2 <i>|last line" {
		t.Errorf("resumed lines %q", texts)
	}
}

func TestBuildEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.record(rec{id: "b-live", clouds: map[string]*builds.CloudRecord{
		"sim-a": {State: builder.StateRunning}, "sim-b": {State: builder.StateQueued},
	}})
	ch := e.stream("/builds/b-live/events")
	var d struct {
		HTML, Rows string
		Final      bool
	}
	ev := next(t, ch)
	if err := json.Unmarshal([]byte(ev.data), &d); err != nil || ev.name != "state" || d.Final || !strings.Contains(d.Rows, `<th scope="row">sim-b</th>`) {
		t.Fatalf("first event %+v", ev)
	}
	e.update(b.ID, "sim-a", func(c *builds.CloudRecord) {
		c.State, c.ImageID, c.ImageName = builder.StateSucceeded, "img-a", "dstat-a"
	})
	e.update(b.ID, "sim-b", func(c *builds.CloudRecord) { c.State, c.Error = builder.StateFailed, "quota <exceeded>" })
	var last event
	for ev := range ch {
		if ev.name == "state" {
			last = ev
		}
	}
	if err := json.Unmarshal([]byte(last.data), &d); err != nil || !d.Final {
		t.Fatalf("last state %+v", last)
	}
	mustContain(t, "final rows", d.Rows, `<code class="image-id">img-a</code>`, `quota &lt;exceeded&gt;`, `✗</span> failed`)
	mustContain(t, "final state", d.HTML, "failed")

	if r := e.get("/builds/nope/events"); r.code != 404 {
		t.Errorf("events of an unknown build: %d", r.code)
	}
}

// TestLogSince checks the live tail's numbering on a log trimmed to its
// limit: numbers count from the first line ever written, so trimming never
// makes the tail skip or repeat a line.
func TestLogSince(t *testing.T) {
	e := newEnv(t, envOptions{logLimit: 400})
	b := e.record(rec{clouds: map[string]*builds.CloudRecord{"sim-a": {State: builder.StateRunning}}})
	for i := range 10 {
		e.logLine(b.ID, "sim-a", builder.StreamStdout, fmt.Sprintf("line %d", i))
	}
	all, next, err := e.store.LogSince(context.Background(), b.ID, "sim-a", 0)
	if err != nil || next != 10 {
		t.Fatalf("LogSince(0): next %d, %v", next, err)
	}
	kept := len(all)
	dropped := 10 - kept
	if dropped == 0 || kept == 0 {
		t.Fatalf("want a trimmed log, kept %d of 10", kept)
	}
	cases := []struct {
		from      int
		wantFirst string
		wantN     int
	}{
		{0, fmt.Sprintf("line %d", dropped), kept},           // from the start: the oldest kept line
		{dropped - 1, fmt.Sprintf("line %d", dropped), kept}, // inside the dropped part: same
		{dropped + 1, fmt.Sprintf("line %d", dropped+1), kept - 1},
		{9, "line 9", 1},
		{10, "", 0},
		{12, "", 0}, // ahead of the log: nothing, and the number stays
	}
	for _, c := range cases {
		lines, n, err := e.store.LogSince(context.Background(), b.ID, "sim-a", c.from)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != c.wantN || (c.wantN > 0 && lines[0].Text != c.wantFirst) {
			t.Errorf("LogSince(%d): %d lines starting %v, want %d starting %q", c.from, len(lines), lines, c.wantN, c.wantFirst)
		}
		if want := max(10, c.from); n != want {
			t.Errorf("LogSince(%d): next %d, want %d", c.from, n, want)
		}
	}
	// A line written after a trim gets the next number.
	e.logLine(b.ID, "sim-a", builder.StreamStdout, "line 10")
	lines, n, err := e.store.LogSince(context.Background(), b.ID, "sim-a", 10)
	if err != nil || n != 11 || len(lines) != 1 || lines[0].Text != "line 10" {
		t.Errorf("after one more line: %v next %d %v", lines, n, err)
	}
}
