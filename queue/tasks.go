// Package queue is imagegen's transport: the asynq task types and their
// payloads, the Client that queues tasks (it seals passwords), and the
// Worker that takes them and hands them to package builds. It knows how a
// task travels, not what a build is: planning, running and reporting are in
// builds, the records in store.
package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/imagegen/imagegen/builds"
)

// Task types. The webhook handler makes a delivery durable; a worker plans
// it (builds.Deliveries), which queues one build task per generator × cloud.
// Their payloads are a compatibility contract: a worker finishes the tasks
// an older version queued.
const (
	TypeDelivery = "imagegen:delivery"
	TypeBuild    = "imagegen:build"
)

// QueueName is the asynq queue imagegen uses, so another asynq application
// sharing the Redis does not take imagegen's tasks.
const QueueName = "imagegen"

// DeliveryRetention keeps a finished delivery task in Redis so that GitHub's
// redelivery of the same X-GitHub-Delivery, or the same push sent again,
// within this time enqueues nothing.
const DeliveryRetention = 72 * time.Hour

// Delivery is a GitHub webhook delivery made durable as what the worker
// needs of it: the event the webhook parsed (github.PeekDelivery), not the
// payload GitHub sent (up to 25 MiB, kept DeliveryRetention).
type Delivery struct {
	ID    string // X-GitHub-Delivery
	Event string // X-GitHub-Event
	// Parsed is what the delivery asks: a builds.Push, builds.CheckRunRerun
	// or builds.CheckSuiteRerun.
	Parsed builds.Event
}

// deliveryPayload is a delivery task's payload: the id, the event, and the
// parsed event in the field of its kind. Tasks queued by versions that
// stored the payload as GitHub sent it carry Body instead, which the worker
// parses (github.ParseDelivery).
type deliveryPayload struct {
	ID              string           `json:"id"`
	Event           string           `json:"event"`
	Push            *pushPayload     `json:"push,omitempty"`
	CheckRunRerun   *checkRunRerun   `json:"check_run_rerun,omitempty"`
	CheckSuiteRerun *checkSuiteRerun `json:"check_suite_rerun,omitempty"`
	Body            json.RawMessage  `json:"body,omitempty"`
}

// pushPayload is a builds.Push in a task (its delivery id is the task's).
type pushPayload struct {
	Repo          string   `json:"repo"`
	Installation  int64    `json:"installation,omitempty"`
	Ref           string   `json:"ref"`
	Before        string   `json:"before,omitempty"`
	After         string   `json:"after"`
	Created       bool     `json:"created,omitempty"`
	Deleted       bool     `json:"deleted,omitempty"`
	Forced        bool     `json:"forced,omitempty"`
	DefaultBranch string   `json:"default_branch,omitempty"`
	Changed       []string `json:"changed,omitempty"`
	Incomplete    bool     `json:"incomplete,omitempty"`
}

// checkRunRerun is a builds.CheckRunRerun in a task.
type checkRunRerun struct {
	Build string `json:"build"`
	Repo  string `json:"repo"`
	SHA   string `json:"sha,omitempty"`
}

// checkSuiteRerun is a builds.CheckSuiteRerun in a task.
type checkSuiteRerun struct {
	Repo string `json:"repo"`
	SHA  string `json:"sha"`
}

// NewDeliveryTask makes d durable. Its task id is the dedupe key: for a push,
// the repository, ref and commit pushed (pushTaskID), so GitHub's redelivery
// and the same push sent again under another delivery id both fail to
// enqueue with asynq.ErrTaskIDConflict; for a re-run, the delivery id.
func NewDeliveryTask(d Delivery) (*asynq.Task, error) {
	if d.ID == "" {
		return nil, fmt.Errorf("delivery without an id")
	}
	p := deliveryPayload{ID: d.ID, Event: d.Event}
	switch ev := d.Parsed.(type) {
	case builds.Push:
		p.Push = &pushPayload{Repo: ev.Repo, Installation: ev.Installation, Ref: ev.Ref, Before: ev.Before, After: ev.After,
			Created: ev.Created, Deleted: ev.Deleted, Forced: ev.Forced, DefaultBranch: ev.DefaultBranch,
			Changed: ev.Changed, Incomplete: ev.Incomplete}
	case builds.CheckRunRerun:
		p.CheckRunRerun = &checkRunRerun{Build: ev.Build, Repo: ev.Repo, SHA: ev.SHA}
	case builds.CheckSuiteRerun:
		p.CheckSuiteRerun = &checkSuiteRerun{Repo: ev.Repo, SHA: ev.SHA}
	default:
		// The webhook answers what asks nothing without queuing it.
		return nil, fmt.Errorf("delivery %s asks nothing of imagegen (%T)", d.ID, d.Parsed)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode delivery %s: %w", d.ID, err)
	}
	return asynq.NewTask(TypeDelivery, b,
		asynq.TaskID(DeliveryTaskID(d)), asynq.Queue(QueueName),
		asynq.MaxRetry(8), asynq.Timeout(5*time.Minute), asynq.Retention(DeliveryRetention)), nil
}

// DeliveryTaskID is the id of d's task: for a push, a digest of its
// repository, ref and commit (names of any length and bytes make a key of
// fixed length); for anything else, its delivery id.
func DeliveryTaskID(d Delivery) string {
	p, ok := d.Parsed.(builds.Push)
	if !ok {
		return "delivery:" + d.ID
	}
	h := sha256.New()
	for _, s := range []string{p.Repo, p.Ref, p.After} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "push:" + hex.EncodeToString(h.Sum(nil))
}

// DecodeDelivery reads a delivery task's payload: its id, event, and the
// parsed event, or (a task of an older version: Parsed nil) the raw payload
// to parse.
func DecodeDelivery(b []byte) (d Delivery, raw json.RawMessage, err error) {
	var p deliveryPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return Delivery{}, nil, err
	}
	d = Delivery{ID: p.ID, Event: p.Event}
	switch {
	case p.Push != nil:
		x := p.Push
		d.Parsed = builds.Push{Delivery: p.ID, Repo: x.Repo, Installation: x.Installation, Ref: x.Ref, Before: x.Before, After: x.After,
			Created: x.Created, Deleted: x.Deleted, Forced: x.Forced, DefaultBranch: x.DefaultBranch,
			Changed: x.Changed, Incomplete: x.Incomplete}
	case p.CheckRunRerun != nil:
		d.Parsed = builds.CheckRunRerun{Build: p.CheckRunRerun.Build, Repo: p.CheckRunRerun.Repo, SHA: p.CheckRunRerun.SHA}
	case p.CheckSuiteRerun != nil:
		d.Parsed = builds.CheckSuiteRerun{Repo: p.CheckSuiteRerun.Repo, SHA: p.CheckSuiteRerun.SHA}
	case len(p.Body) == 0:
		return Delivery{}, nil, fmt.Errorf("delivery %s: neither an event nor a body", p.ID)
	}
	return d, p.Body, nil
}

// BuildTask runs one generator on one cloud.
type BuildTask struct {
	Build string `json:"build"`
	Cloud string `json:"cloud"`
	// Password is the cloud's password sealed with the service's key
	// (password: ask clouds only). The task carrying it has no retention and
	// is deleted when it ends, whatever the outcome.
	Password []byte `json:"password,omitempty"`
}

// NewBuildTask makes the task for t; timeout bounds the handler (the build
// plus its cleanup).
func NewBuildTask(t BuildTask, timeout time.Duration) (*asynq.Task, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode build task: %w", err)
	}
	return asynq.NewTask(TypeBuild, b,
		asynq.TaskID(buildTaskID(t.Build, t.Cloud)), asynq.Queue(QueueName),
		asynq.MaxRetry(3), asynq.Timeout(timeout)), nil
}

// buildTaskID is the task id of build × cloud: one task each, so queuing it
// again (a retried plan) queues nothing.
func buildTaskID(build, cloud string) string { return "build:" + build + ":" + cloud }
