package builds

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// Deps are what the core's types share; each takes the ones its job needs.
type Deps struct {
	Config *config.Config
	Store  Store
	// GitHub reads specs and takes reports: the Planner, the Runner and the
	// Sweeper need it (a process that only serves HTTP has none).
	GitHub GitHub
	// Queue queues build tasks: the Planner and Reruns need it.
	Queue   Enqueuer
	Logger  *slog.Logger // nil: discard
	Metrics *Metrics     // nil: none
	// Provenance signs what the Runner builds (the zero value: unsigned).
	Provenance Provenance
	// BuildURL is the link statuses and check runs carry to a build (the
	// build's page, signed); nil: the build's API record (BuildURL).
	BuildURL func(id string) string
}

// withDefaults fills what Deps may leave out.
func (d Deps) withDefaults() Deps {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.BuildURL == nil {
		base := d.Config.BaseURL
		d.BuildURL = func(id string) string { return BuildURL(base, id) }
	}
	return d
}

// BuildURL is where a build's record is served.
func BuildURL(baseURL, id string) string {
	return strings.TrimSuffix(baseURL, "/") + "/api/v1/builds/" + id
}

// TaskTimeout bounds a build task: the build itself, then its cleanup, then
// a margin, so the queue never gives up on a task whose cleanup is still
// running. The sweep waits as long before removing what a build no record
// knows has left.
func TaskTimeout(cfg *config.Config) time.Duration {
	return cfg.Build.Timeout + cfg.Build.CleanupTimeout + time.Minute
}

// Store keeps the records; package store implements it in Redis. Every
// method is safe for concurrent use by many workers at once.
type Store interface {
	// Create stores a new build with its spec. It returns false, and changes
	// nothing, when a build with that id exists (a retried plan).
	Create(ctx context.Context, b *Build, sp *spec.Spec) (bool, error)
	// Get returns a build and its spec; ErrNotFound when it does not exist.
	Get(ctx context.Context, id string) (*Build, *spec.Spec, error)
	// UpdateMeta changes a build's own fields (not its clouds) atomically.
	UpdateMeta(ctx context.Context, id string, fn func(*Build)) error
	// UpdateCloud changes one cloud's record atomically and returns it as written.
	UpdateCloud(ctx context.Context, id, cloud string, fn func(*CloudRecord)) (*CloudRecord, error)
	// List returns builds, newest first.
	List(ctx context.Context, o ListOptions) ([]*Build, error)
	// BuildsSince returns the ids of the builds created since t.
	BuildsSince(ctx context.Context, t time.Time) ([]string, error)

	// SaveManifest stores a cloud's manifest (gzipped CycloneDX JSON) with
	// the build's record, kept as long as the record; ErrNotFound when the
	// build does not exist.
	SaveManifest(ctx context.Context, id, cloud string, gz []byte) error
	// Manifest returns what SaveManifest stored; ErrNotFound when the build
	// or the cloud's manifest does not exist.
	Manifest(ctx context.Context, id, cloud string) ([]byte, error)

	// AddImage records a new image in its generator's lineage, and indexes
	// it by its cloud and id.
	AddImage(ctx context.Context, e LineageEntry) error
	// SetProvenance stores the DSSE envelope of build's image on cloud with
	// the build's record, as the bytes given.
	SetProvenance(ctx context.Context, build, cloud string, envelope []byte) error
	// Images returns a generator's lineage, newest first.
	Images(ctx context.Context, repo, generator string) ([]LineageEntry, error)
	// LastClouds returns the cloud list a generator was last planned with.
	LastClouds(ctx context.Context, repo, generator string) ([]string, bool, error)
	// SetLastClouds records the cloud list a generator was planned with.
	SetLastClouds(ctx context.Context, repo, generator string, names []string) error

	// NewLogSink starts storing the log of build × cloud, every line passed
	// through redact; Close stores what is left.
	NewLogSink(ctx context.Context, build, cloud string, log *slog.Logger, redact secret.Redactor) LogSink

	// Lock takes the lock name (expiring after ttl, so a dead holder cannot
	// block forever), waiting until ctx ends; call the func to release it.
	Lock(ctx context.Context, name string, ttl time.Duration) (func(), error)
	// TryLock takes the lock name for ttl if it is free, and never releases
	// it: it says "done by someone" for that long.
	TryLock(ctx context.Context, name string, ttl time.Duration) (bool, error)
	// FirstSeen returns when key was first seen, recording now as that time
	// if it was not seen before; sightings are forgotten after keep.
	FirstSeen(ctx context.Context, key string, now time.Time, keep time.Duration) (time.Time, error)
	// ForgetSeen forgets key's sighting, best effort.
	ForgetSeen(ctx context.Context, key string)
}

// LogSink stores a build log as the builder hands it lines
// (builder.Observer's Line, builder.LineBatcher's Lines), without making the
// builder wait on the store.
type LogSink interface {
	Line(l builder.LogLine)
	Lines(ls []builder.LogLine)
	// Close stores the lines still waiting: the whole log is stored when it returns.
	Close()
}

// Enqueuer queues build tasks; package queue implements it.
type Enqueuer interface {
	// EnqueueBuild queues the task that runs build's part on cloud. A
	// non-zero password travels with that task alone, sealed. Queuing a task
	// that is queued already does nothing, so a retried plan queues nothing twice.
	EnqueueBuild(ctx context.Context, build, cloud string, password secret.String) error
}

// Tasks looks build tasks up in the queue, for the sweep; package queue
// implements it.
type Tasks interface {
	// BuildTask returns the state of the task of build × cloud.
	BuildTask(ctx context.Context, build, cloud string) (TaskInfo, error)
	// DeleteBuildTask deletes that task (an archived one may hold a sealed password).
	DeleteBuildTask(ctx context.Context, build, cloud string) error
	// PlanPending reports whether the delivery task that plans a push of
	// repo's ref at sha (delivery: its id) may still run: it then queues the
	// build tasks its plan recorded, and their absence is no loss yet.
	PlanPending(ctx context.Context, repo, ref, sha, delivery string) (bool, error)
}

// TaskInfo is a build task as the queue has it.
type TaskInfo struct {
	State   TaskState
	Retried int    // runs that failed and were retried
	LastErr string // the last run's error
}

// TaskState says whether a build task may still run.
type TaskState int

const (
	// TaskGone says the queue has no such task.
	TaskGone TaskState = iota
	// TaskPresent says the task is queued, running, or waiting for a retry.
	TaskPresent
	// TaskArchived says its retries are spent: it will never run again.
	TaskArchived
)

// Errors the queue acts on (package queue maps them to its own).
var (
	// ErrNoRetry marks an error no retry can fix: the task is given up at once.
	ErrNoRetry = errors.New("no retry can fix this")
	// ErrDropTask marks the end of a task that must not be kept, even
	// failed, as it carries a sealed password: it is deleted, not archived.
	ErrDropTask = errors.New("task dropped")
	// ErrShutdown is the cause with which a worker shutting down cancels the
	// contexts of the builds it runs: the Runner then hands them back to
	// the queue, to run again, instead of failing them.
	ErrShutdown = errors.New("worker shutting down")
)
