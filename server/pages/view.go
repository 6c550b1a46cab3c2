package pages

import (
	"fmt"
	"html/template"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
)

// stateView shows a state by colour (Class), symbol and text, so it reads
// without colour too.
type stateView struct {
	Class  string // st-ok, st-fail, st-pending, st-wait, st-off
	Symbol string
	Text   string
}

var states = []string{
	string(builder.StateQueued), string(builder.StateWaiting), string(builder.StateRunning), string(builder.StateTesting),
	string(builder.StateSucceeded), string(builder.StateFailed), string(builder.StateCanceled),
}

func validState(s string) bool {
	for _, v := range states {
		if v == s {
			return true
		}
	}
	return false
}

func stateOf(s builder.State, phase builder.Phase) stateView {
	switch s {
	case builder.StateSucceeded:
		return stateView{"st-ok", "✓", "succeeded"}
	case builder.StateFailed:
		return stateView{"st-fail", "✗", "failed"}
	case builder.StateCanceled:
		return stateView{"st-off", "⊘", "canceled"}
	case builder.StateWaiting:
		return stateView{"st-wait", "⏸", "waiting for a password"}
	case builder.StateRunning:
		text := "running"
		if phase != "" && phase != builder.PhaseDone {
			text += ": " + string(phase)
		}
		return stateView{"st-pending", "▶", text}
	case builder.StateTesting:
		text := "testing the new image"
		if phase != "" && phase != builder.PhaseDone {
			text = string(phase)
		}
		return stateView{"st-pending", "▶", text}
	case builder.StateQueued:
		return stateView{"st-pending", "◷", "queued"}
	default:
		return stateView{"st-off", "?", string(s)}
	}
}

// timeView is a time for a <time> element.
type timeView struct {
	ISO, Text string
}

func timeOf(t time.Time) timeView {
	if t.IsZero() {
		return timeView{}
	}
	t = t.UTC()
	return timeView{ISO: t.Format(time.RFC3339), Text: t.Format("2006-01-02 15:04:05 UTC")}
}

// commitView is a commit with its link on GitHub.
type commitView struct {
	SHA, Short, URL string
}

func (p *Pages) commit(repo, sha string) commitView {
	if sha == "" {
		return commitView{}
	}
	return commitView{SHA: sha, Short: shortSHA(sha), URL: p.web + "/" + repo + "/commit/" + url.PathEscape(sha)}
}

func shortSHA(s string) string {
	if len(s) > 7 {
		return s[:7]
	}
	return s
}

// githubWeb turns the API URL into the web URL commits are shown at:
// api.github.com is github.com; GitHub Enterprise Server serves its API at
// /api/v3/ of its own host.
func githubWeb(api string) string {
	u, err := url.Parse(api)
	if err != nil || u.Host == "" {
		return "https://github.com"
	}
	if u.Host == "api.github.com" {
		return "https://github.com"
	}
	path := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v3")
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(path, "/")
}

// cloudView is one cloud's row on a build page.
type cloudView struct {
	Name, BaseImage, ImageID, ImageName string
	State                               stateView
	Duration                            string
	Phases                              []phaseView
	Error                               string
	ExitCode                            int
	Attempts                            int
	Leftovers                           int
	LogURL                              string
	Test                                string   // how the spec's test went; "" without one
	Pruned                              []string // older images retention removed: "id (name)"
	PruneErrors                         []string
	Removed                             string // when and by what imagegen deleted this part's image since
}

type phaseView struct{ Name, Duration string }

func (p *Pages) cloudViews(b *builds.Build) []cloudView {
	now := p.now()
	var out []cloudView
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		v := cloudView{
			Name: name, BaseImage: c.BaseImage, ImageID: c.ImageID, ImageName: c.ImageName,
			State: stateOf(c.State, c.Phase), Error: c.Error, ExitCode: c.ExitCode, Attempts: c.Attempts,
			Leftovers: c.Leftovers, LogURL: "/builds/" + b.ID + "/log/" + url.PathEscape(name),
		}
		if d := c.Duration(now); d > 0 {
			v.Duration = duration(d)
		}
		for _, ph := range c.Phases {
			v.Phases = append(v.Phases, phaseView{Name: string(ph.Phase), Duration: duration(ph.Duration)})
		}
		v.Test, v.Pruned, v.PruneErrors = lifecycleOf(c)
		if c.Removed != nil {
			v.Removed = "deleted from the cloud " + c.Removed.At.UTC().Format("2006-01-02 15:04 UTC") + " by " + c.Removed.By
		}
		out = append(out, v)
	}
	return out
}

// duration is short and readable: 850ms, 12.3s, 4m05s, 1h02m.
func duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

func sortStrings(s []string) { sort.Strings(s) }

var funcs = template.FuncMap{
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
}

// lifecycleOf says how a cloud's test went and what retention removed.
func lifecycleOf(c *builds.CloudRecord) (test string, pruned, pruneErrors []string) {
	if t := c.Test; t != nil {
		switch t.Result {
		case "passed":
			test = "test passed in " + duration(t.Duration) + ": tagged imagegen:tested=passed"
		case "skipped":
			test = "test not run: the cloud gives no SSH endpoint"
		default:
			test = fmt.Sprintf("test failed (exit code %d)", t.ExitCode)
			if t.Kept {
				test += "; the image is kept (keep_failed), tagged imagegen:tested=failed"
			} else {
				test += "; the image was deleted"
			}
		}
	}
	for _, p := range c.Pruned {
		s := p.ID
		if p.Name != "" && p.Name != p.ID {
			s += " (" + p.Name + ")"
		}
		pruned = append(pruned, s)
	}
	return test, pruned, c.PruneErrors
}
