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
		if ev.Action != "rerequested" || ev.CheckRun.ExternalID == "" || ev.Repository.FullName == "" {
			return nil, nil
		}
		return builds.CheckRunRerun{Build: ev.CheckRun.ExternalID, Repo: ev.Repository.FullName, SHA: ev.CheckRun.HeadSHA}, nil
	case "check_suite":
		ev, err := decodeAction[checkSuiteEvent](payload, event)
		if err != nil {
			return nil, err
		}
		if ev.Action != "rerequested" || ev.Repository.FullName == "" || ev.CheckSuite.HeadSHA == "" {
			return nil, nil
		}
		return builds.CheckSuiteRerun{Repo: ev.Repository.FullName, SHA: ev.CheckSuite.HeadSHA}, nil
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
	seen := map[string]bool{}
	add := func(files []string) {
		for _, f := range files {
			if !seen[f] {
				seen[f] = true
				p.Changed = append(p.Changed, f)
			}
		}
	}
	for _, c := range ev.Commits {
		add(c.Added)
		add(c.Removed)
		add(c.Modified)
	}
	// GitHub lists at most 20 commits in a push (and a forced push's list says
	// little about what changed since before): ask the compare API then.
	p.Incomplete = len(ev.Commits) >= 20 || (p.Forced && !p.Created)
	return p
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
