package pages

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builder"
)

// maxStream bounds one live stream; the browser's EventSource reconnects
// (with Last-Event-ID) and carries on, so no connection is held forever.
const maxStream = 10 * time.Minute

// keepAlive is how often an idle stream sends a comment, so proxies keep it open.
const keepAlive = 15 * time.Second

// sse writes server-sent events.
type sse struct {
	c  echo.Context
	rc *http.ResponseController
}

func startSSE(c echo.Context) *sse {
	h := c.Response().Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would hold the stream back
	c.Response().WriteHeader(http.StatusOK)
	rc := http.NewResponseController(c.Response())
	// The server's write timeout is for ordinary requests: a stream lives
	// until maxStream (or its build ends).
	_ = rc.SetWriteDeadline(time.Now().Add(maxStream + time.Minute))
	s := &sse{c: c, rc: rc}
	// Reconnect quickly after maxStream or a dropped connection.
	fmt.Fprint(c.Response(), "retry: 1000\n\n")
	_ = rc.Flush()
	return s
}

// send writes one event; data is one line (JSON has no raw newlines).
func (s *sse) send(event, id string, data any) error {
	j, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var b strings.Builder
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	b.WriteString("event: " + event + "\ndata: ")
	b.Write(j)
	b.WriteString("\n\n")
	if _, err := s.c.Response().Write([]byte(b.String())); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sse) comment() error {
	if _, err := s.c.Response().Write([]byte(": keep-alive\n\n")); err != nil {
		return err
	}
	return s.rc.Flush()
}

// loop calls step every poll interval until it says stop, the client goes,
// or maxStream passes. step's first call is at once.
func (p *Pages) loop(c echo.Context, s *sse, step func() (stop bool, err error)) error {
	ctx := c.Request().Context()
	t := time.NewTicker(p.poll)
	defer t.Stop()
	end := time.Now().Add(maxStream)
	lastSent := time.Now()
	for {
		stop, err := step()
		if err != nil || stop {
			return err
		}
		if time.Since(lastSent) > keepAlive {
			if err := s.comment(); err != nil {
				return nil // the client went away
			}
			lastSent = time.Now()
		}
		if time.Now().After(end) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// stateEvent is a state change as the pages show it: server-rendered (and
// so escaped) HTML the script puts in place.
type stateEvent struct {
	HTML  string `json:"html"`
	Rows  string `json:"rows,omitempty"`
	Final bool   `json:"final"`
}

// logEvent is one log line.
type logEvent struct {
	Time   string `json:"time"`
	Stream string `json:"stream"`
	Text   string `json:"text"`
}

// logEvents streams a cloud's new log lines and its state changes, until
// its part of the build ends and every line is out.
func (p *Pages) logEvents(c echo.Context) error {
	b, err := p.getBuild(c)
	if b == nil {
		return err
	}
	if !p.mayReadLogs(viewerOf(c), b.Repo) {
		return p.noBuild(c)
	}
	cloud := c.Param("cloud")
	if b.Clouds[cloud] == nil {
		return p.errorPage(c, http.StatusNotFound, fmt.Sprintf("Build %s has no cloud %q.", b.ID, cloud))
	}
	// EventSource resends the last id it saw when it reconnects.
	from, _ := strconv.Atoi(c.QueryParam("from"))
	if id := c.Request().Header.Get("Last-Event-ID"); id != "" {
		if n, err := strconv.Atoi(id); err == nil {
			from = n
		}
	}
	ctx := c.Request().Context()
	s := startSSE(c)
	var last stateView
	return p.loop(c, s, func() (bool, error) {
		// State first, then lines: a cloud seen final has written all its lines.
		bb, _, err := p.store.Get(ctx, b.ID)
		if err != nil {
			return streamEnds(err) // expired or Redis gone: the stream ends, the page stays
		}
		rec := bb.Clouds[cloud]
		lines, next, err := p.store.LogSince(ctx, b.ID, cloud, from)
		if err != nil {
			p.log.Warn("live tail", "build", b.ID, "cloud", cloud, "err", err)
			return true, nil
		}
		for i, l := range lines {
			if err := s.send("line", strconv.Itoa(next-len(lines)+i+1), logEvent{
				Time: lineOf(l).Time, Stream: l.Stream, Text: l.Text,
			}); err != nil {
				return streamEnds(err)
			}
		}
		from = next
		st := stateOf(rec.State, rec.Phase)
		final := rec.State.Final() || rec.State == builder.StateWaiting
		if st != last {
			last = st
			html, err := p.fragment("log", "state", st)
			if err != nil {
				return true, err
			}
			if err := s.send("state", "", stateEvent{HTML: html, Final: final}); err != nil {
				return streamEnds(err)
			}
		}
		if final {
			_ = s.send("end", "", map[string]string{"state": string(rec.State), "error": rec.Error})
			return true, nil
		}
		return false, nil
	})
}

// buildEvents streams a build's state and cloud rows whenever they change,
// until nothing is left running or queued.
func (p *Pages) buildEvents(c echo.Context) error {
	b, err := p.getBuild(c)
	if b == nil {
		return err
	}
	ctx := c.Request().Context()
	s := startSSE(c)
	var last stateEvent
	return p.loop(c, s, func() (bool, error) {
		bb, _, err := p.store.Get(ctx, b.ID)
		if err != nil {
			return streamEnds(err)
		}
		html, err := p.fragment("build", "state", stateOf(bb.State, ""))
		if err != nil {
			return true, err
		}
		rows, err := p.fragment("build", "cloudrows", p.cloudViews(bb))
		if err != nil {
			return true, err
		}
		ev := stateEvent{HTML: html, Rows: rows, Final: !live(bb.State)}
		if ev != last {
			last = ev
			if err := s.send("state", "", ev); err != nil {
				return streamEnds(err)
			}
		}
		if ev.Final {
			_ = s.send("end", "", map[string]string{"state": string(bb.State)})
			return true, nil
		}
		return false, nil
	})
}

// fragment renders one named template of a page's set.
func (p *Pages) fragment(page, name string, data any) (string, error) {
	var b strings.Builder
	if err := p.tmpl[page].ExecuteTemplate(&b, name, data); err != nil {
		return "", fmt.Errorf("render %s/%s: %w", page, name, err)
	}
	return b.String(), nil
}

// streamEnds ends an event stream quietly on err: a record expired, Redis
// away or the browser gone ends the stream, not the request with an error
// (the page stays as it is; the browser reconnects if it is still there).
func streamEnds(error) (done bool, err error) { return true, nil }
