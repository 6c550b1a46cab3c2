package github

import (
	"encoding/json"
	"fmt"

	gogithub "github.com/google/go-github/v60/github"

	"github.com/imagegen/imagegen/builds"
)

// ParseDelivery decodes the payload of a webhook delivery of event (its
// X-GitHub-Event) into what it asks of imagegen: a builds.Push for a push; a
// builds.CheckRunRerun for a check run's "Re-run" (action rerequested, the
// build in its external id, with the repository and commit it must belong
// to); a builds.CheckSuiteRerun for "Re-run all
// checks"; nil for anything else. An error means the payload does not
// decode as that event: no retry fixes that.
//
// A push is decoded whole by go-github; check_run and check_suite are
// decoded by hand, as go-github's Timestamp refuses the
// "2018-04-25 20:42:10" form GitHub has sent in their payloads, and none of
// their time fields matter here.
func ParseDelivery(event string, payload []byte) (builds.Event, error) {
	switch event {
	case "check_run":
		ev, err := decodeAction[checkRunEvent](payload, event)
		if err != nil {
			return nil, err
		}
		return ev.event(), nil
	case "check_suite":
		ev, err := decodeAction[checkSuiteEvent](payload, event)
		if err != nil {
			return nil, err
		}
		return ev.event(), nil
	}
	ev, err := gogithub.ParseWebHook(event, payload)
	if err != nil {
		return nil, err
	}
	if push, ok := ev.(*gogithub.PushEvent); ok {
		return pushOf(push), nil
	}
	return nil, nil
}

// pushOf keeps what planning needs from a push event (all but its delivery id).
func pushOf(ev *gogithub.PushEvent) builds.Push {
	p := builds.Push{
		Repo:          ev.GetRepo().GetFullName(),
		Installation:  ev.GetInstallation().GetID(),
		Ref:           ev.GetRef(),
		Before:        ev.GetBefore(),
		After:         ev.GetAfter(),
		Created:       ev.GetCreated(),
		Deleted:       ev.GetDeleted(),
		Forced:        ev.GetForced(),
		DefaultBranch: ev.GetRepo().GetDefaultBranch(),
	}
	var ch changedFiles
	for _, c := range ev.Commits {
		if c == nil { // "commits": [null]
			continue
		}
		ch.add(c.Added)
		ch.add(c.Removed)
		ch.add(c.Modified)
	}
	ch.finish(&p, len(ev.Commits))
	return p
}

// changedFiles collects the files of a push's commits, each once, in the
// order they come, up to builds.MaxChangedFiles and builds.MaxChangedBytes.
type changedFiles struct {
	files []string
	seen  map[string]bool // once files is long enough for a linear search to cost more
	bytes int
	over  bool // past a bound: the list is dropped
}

func (ch *changedFiles) add(files []string) {
	for _, f := range files {
		ch.addOne(f)
	}
}

func (ch *changedFiles) addOne(f string) {
	if ch.over || ch.has(f) {
		return
	}
	ch.bytes += len(f)
	if len(ch.files) == builds.MaxChangedFiles || ch.bytes > builds.MaxChangedBytes {
		ch.over, ch.files, ch.seen = true, nil, nil
		return
	}
	ch.files = append(ch.files, f)
	if ch.seen != nil {
		ch.seen[f] = true
	} else if len(ch.files) > 16 {
		ch.seen = make(map[string]bool, 2*len(ch.files))
		for _, g := range ch.files {
			ch.seen[g] = true
		}
	}
}

func (ch *changedFiles) has(f string) bool {
	if ch.seen != nil {
		return ch.seen[f]
	}
	for _, g := range ch.files {
		if g == f {
			return true
		}
	}
	return false
}

// finish sets p's Changed and Incomplete; commits is how many commits the
// push listed. GitHub lists at most 20 commits in a push (and a forced
// push's list says little about what changed since before): the planner
// asks the compare API then, as it does when the list was over its bounds.
func (ch *changedFiles) finish(p *builds.Push, commits int) {
	p.Changed = ch.files
	p.Incomplete = ch.over || commits >= 20 || (p.Forced && !p.Created)
}

// checkRunEvent is the part of a check_run delivery imagegen uses.
type checkRunEvent struct {
	Action   string `json:"action"`
	CheckRun struct {
		ID         int64  `json:"id"`
		HeadSHA    string `json:"head_sha"`
		ExternalID string `json:"external_id"`
	} `json:"check_run"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Installation struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

// checkSuiteEvent is the part of a check_suite delivery imagegen uses.
type checkSuiteEvent struct {
	Action     string `json:"action"`
	CheckSuite struct {
		HeadSHA string `json:"head_sha"`
	} `json:"check_suite"`
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
}

// event is what a check_run delivery asks of imagegen: a re-run of the
// build in its external id (a run imagegen made), of the event's repository
// and commit, or nothing.
func (e *checkRunEvent) event() builds.Event {
	if e.Action != "rerequested" || e.CheckRun.ExternalID == "" || e.Repository.FullName == "" {
		return nil
	}
	return builds.CheckRunRerun{Build: e.CheckRun.ExternalID, Repo: e.Repository.FullName, SHA: e.CheckRun.HeadSHA}
}

// event is what a check_suite delivery asks of imagegen: the commit's
// builds again, or nothing.
func (e *checkSuiteEvent) event() builds.Event {
	if e.Action != "rerequested" || e.Repository.FullName == "" || e.CheckSuite.HeadSHA == "" {
		return nil
	}
	return builds.CheckSuiteRerun{Repo: e.Repository.FullName, SHA: e.CheckSuite.HeadSHA}
}

// actionEvent is an event decoded by hand; its action decides what to do.
type actionEvent interface{ action() string }

func (e *checkRunEvent) action() string   { return e.Action }
func (e *checkSuiteEvent) action() string { return e.Action }

// decodeAction decodes event's payload into an E, which must have an action.
func decodeAction[E any, P interface {
	*E
	actionEvent
}](payload []byte, event string) (P, error) {
	ev := P(new(E))
	if err := json.Unmarshal(payload, ev); err != nil {
		return nil, err
	}
	if ev.action() == "" {
		return nil, fmt.Errorf("%s without action", event)
	}
	return ev, nil
}
