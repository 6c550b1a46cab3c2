// Package builder runs a generator on one cloud: launch, wait for SSH, run the
// script, stop, snapshot, tag — and always clean up, in reverse, on a fresh context.
package builder

import (
	"time"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
)

// State is the state of one cloud's part of a build (and, summed up, of a build).
type State string

// The states, in the order a cloud's part goes through them.
const (
	StateQueued    State = "queued"
	StateWaiting   State = "waiting" // a password: ask cloud waiting for its password
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
)

// Final reports whether s is an end state.
func (s State) Final() bool {
	return s == StateSucceeded || s == StateFailed || s == StateCanceled
}

// Phase is a step of the pipeline, as shown in progress and timings.
type Phase string

// The phases, in the order the pipeline runs them.
const (
	PhaseKey      Phase = "generating keys"
	PhaseLaunch   Phase = "launching"
	PhaseSSH      Phase = "waiting for SSH"
	PhaseScript   Phase = "running script"
	PhaseManifest Phase = "collecting manifest"
	PhaseStop     Phase = "stopping"
	PhaseSnapshot Phase = "saving image"
	PhaseCleanup  Phase = "cleaning up"
	PhaseDone     Phase = "done"
)

// Job is one generator on one cloud.
type Job struct {
	Build     string       // build id: the imagegen:build tag
	CloudName string       // the cloud's name in the server config
	Cloud     clouds.Cloud // opened for this build
	Spec      *spec.Spec
	Repo      string // provenance: "owner/name", or a local path for imagegen build
	Commit    string // provenance: full sha, or "" when unknown
	// Provenance, when set, makes the image's signed provenance statement
	// after Snapshot (Result.Provenance) and tags the image with its digest.
	Provenance *Provenance

	SSHTimeout     time.Duration   // waiting for SSH; default 15 min
	CleanupTimeout time.Duration   // cleanup's own context; default 10 min
	Secrets        []secret.String // redacted from every log line
	Observer       Observer        // may be nil
}

// Result is how one cloud's part of a build ended.
type Result struct {
	Cloud     string            `json:"cloud"`
	State     State             `json:"state"`
	BaseImage string            `json:"base_image"`
	Image     *clouds.Image     `json:"image,omitempty"` // the new image; nil when none was made
	ExitCode  int               `json:"exit_code"`       // the script's exit code; -1 when it did not finish
	Error     string            `json:"error,omitempty"` // why it failed, secrets redacted
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Phases    []PhaseTiming     `json:"phases,omitempty"`
	LogTail   []string          `json:"log_tail,omitempty"`  // the last lines of the script's output on failure
	Leftovers []clouds.Resource `json:"leftovers,omitempty"` // what cleanup could not remove (the sweep will)
	// Manifest is what the image holds, or why that is not known; nil when
	// the build ended before the script succeeded.
	Manifest *ManifestResult `json:"manifest,omitempty"`
	Err      error           `json:"-"` // the error itself, for errors.Is / clouds.KindOf
	// Provenance is the image's DSSE envelope, byte for byte as signed (its
	// SHA-256 is the image's TagProvenance); nil without Job.Provenance.
	Provenance []byte `json:"-"`
}

// PhaseTiming is how long a phase took.
type PhaseTiming struct {
	Phase    Phase         `json:"phase"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
}

// Observer sees a build as it runs. Calls for one cloud come from one goroutine,
// in order; calls for different clouds may be concurrent.
type Observer interface {
	Phase(cloud string, p Phase, at time.Time)
	Line(l LogLine)
}

// LineBatcher is an Observer that also takes log lines in batches: the lines
// the script's output brought in one read come in one call, in order, with
// one lock and one call for hundreds of lines rather than per line. When a
// Job's Observer implements it, the builder calls Lines for the script's
// output and Line for everything else; both under the same ordering rules.
// The slice is reused once Lines returns: keep the LogLines, not the slice.
// (An addition to the contract: Observers without it are called per line.)
type LineBatcher interface {
	Lines(ls []LogLine)
}

// LogLine is one line of a build log: the script's output, imagegen's own
// messages, or the VM's console. Text is already redacted.
type LogLine struct {
	Time   time.Time `json:"time"`
	Cloud  string    `json:"cloud"`
	Stream string    `json:"stream"` // StreamStdout, StreamStderr, StreamImagegen, StreamConsole
	Text   string    `json:"text"`
}

// The streams of a build log.
const (
	StreamStdout   = "stdout"
	StreamStderr   = "stderr"
	StreamImagegen = "imagegen"
	StreamConsole  = "console"
)
