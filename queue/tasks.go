// Package queue is imagegen's transport: the asynq task types and their
// payloads, the Client that queues tasks (it seals passwords), and the
// Worker that takes them and hands them to package builds. It knows how a
// task travels, not what a build is: planning, running and reporting are in
// builds, the records in store.
package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
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
// redelivery of the same X-GitHub-Delivery within this time enqueues nothing.
const DeliveryRetention = 72 * time.Hour

// Delivery is a GitHub webhook delivery, kept raw: the worker parses it
// (github.ParseDelivery), the webhook only peeks into it.
type Delivery struct {
	ID    string          `json:"id"`    // X-GitHub-Delivery
	Event string          `json:"event"` // X-GitHub-Event
	Body  json.RawMessage `json:"body"`
}

// NewDeliveryTask makes d durable; the task id is the delivery id, so a
// redelivery fails to enqueue with asynq.ErrTaskIDConflict.
//
// d.Body must be one valid JSON value (the webhook handler has checked it):
// the payload is {"id":…,"event":…,"body":<d.Body>} with the body copied as
// it is, which is what json.Marshal makes of a Delivery, less the second
// validation and compaction of the body that made json.Marshal ten times
// slower (docs/BENCHMARKS.md, section 1). The worker decodes it with
// json.Unmarshal.
func NewDeliveryTask(d Delivery) (*asynq.Task, error) {
	if d.ID == "" {
		return nil, fmt.Errorf("delivery without an id")
	}
	if len(bytes.TrimSpace(d.Body)) == 0 {
		// The one invalid body that costs nothing to catch, and the one a
		// caller forgetting the body would pass.
		return nil, fmt.Errorf("delivery %s without a body", d.ID)
	}
	b := make([]byte, 0, len(`{"id":,"event":,"body":}`)+len(d.ID)+len(d.Event)+8+len(d.Body))
	b = append(b, `{"id":`...)
	b = appendJSONString(b, d.ID)
	b = append(b, `,"event":`...)
	b = appendJSONString(b, d.Event)
	b = append(b, `,"body":`...)
	b = append(b, d.Body...)
	b = append(b, '}')
	return asynq.NewTask(TypeDelivery, b,
		asynq.TaskID("delivery:"+d.ID), asynq.Queue(QueueName),
		asynq.MaxRetry(8), asynq.Timeout(5*time.Minute), asynq.Retention(DeliveryRetention)), nil
}

// appendJSONString appends s as a JSON string, as json.Marshal writes it.
// Delivery ids and event names are plain ASCII, copied as they are; anything
// else (quotes, control or non-ASCII characters, invalid UTF-8, <>&) goes
// through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
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
