package builds

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sort"
	"time"

	"github.com/imagegen/imagegen/builder"
)

// ErrNotFound says a build does not exist (or has expired).
var ErrNotFound = errors.New("not found")

// Build is the record of one generator built at one commit.
type Build struct {
	ID           string                  `json:"id"`
	Repo         string                  `json:"repo"`
	Commit       string                  `json:"commit"`
	Ref          string                  `json:"ref,omitempty"`
	Generator    string                  `json:"generator"`
	SpecFile     string                  `json:"spec_file"`
	Digest       string                  `json:"script_sha256"`
	Created      time.Time               `json:"created"`
	Delivery     string                  `json:"delivery,omitempty"`
	RerunOf      string                  `json:"rerun_of,omitempty"`
	Installation int64                   `json:"installation,omitempty"`
	CheckRunID   int64                   `json:"check_run_id,omitempty"`
	State        builder.State           `json:"state"` // summed up from the clouds
	Clouds       map[string]*CloudRecord `json:"clouds"`
}

// CloudRecord is one cloud's part of a build.
type CloudRecord struct {
	Cloud        string                `json:"cloud"`
	State        builder.State         `json:"state"`
	AsksPassword bool                  `json:"asks_password,omitempty"`
	BaseImage    string                `json:"base_image"`
	ImageID      string                `json:"image_id,omitempty"`
	ImageName    string                `json:"image_name,omitempty"`
	Phase        builder.Phase         `json:"phase,omitempty"`
	Attempts     int                   `json:"attempts"`
	Queued       time.Time             `json:"queued"`
	Started      time.Time             `json:"started,omitzero"`
	Finished     time.Time             `json:"finished,omitzero"`
	Phases       []builder.PhaseTiming `json:"phases,omitempty"`
	ExitCode     int                   `json:"exit_code,omitempty"`
	Error        string                `json:"error,omitempty"`
	Leftovers    int                   `json:"leftovers,omitempty"` // resources cleanup could not remove

	// The image's manifest (stored beside the record, served by the API):
	// its sha256 (the image's imagegen:manifest-sha256 tag), how many
	// packages it lists, and whether some of it is missing; or why there
	// is none. All empty when the build ended before its script did.
	ManifestSHA256   string `json:"manifest_sha256,omitempty"`
	ManifestPackages int    `json:"manifest_packages,omitempty"`
	ManifestPartial  bool   `json:"manifest_partial,omitempty"`
	ManifestError    string `json:"manifest_error,omitempty"`
	// ProvenanceSHA256 is the SHA-256 of the image's provenance envelope
	// (stored beside the record; the image's imagegen:provenance-sha256).
	ProvenanceSHA256 string `json:"provenance_sha256,omitempty"`
}

// Duration is how long the cloud's part ran (so far).
func (c *CloudRecord) Duration(now time.Time) time.Duration {
	switch {
	case c.Started.IsZero():
		return 0
	case c.Finished.IsZero():
		return now.Sub(c.Started)
	default:
		return c.Finished.Sub(c.Started)
	}
}

// CloudNames returns the build's clouds, sorted.
func (b *Build) CloudNames() []string {
	names := make([]string, 0, len(b.Clouds))
	for n := range b.Clouds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Summarize sets b.State from its clouds: failed when any failed, running while
// any runs or is queued, waiting when the rest is done but some wait for a password.
func (b *Build) Summarize() {
	counts := map[builder.State]int{}
	for _, c := range b.Clouds {
		counts[c.State]++
	}
	switch {
	case counts[builder.StateRunning] > 0:
		b.State = builder.StateRunning
	case counts[builder.StateQueued] > 0:
		if counts[builder.StateSucceeded]+counts[builder.StateFailed]+counts[builder.StateCanceled] > 0 {
			b.State = builder.StateRunning
		} else {
			b.State = builder.StateQueued
		}
	case counts[builder.StateWaiting] > 0:
		b.State = builder.StateWaiting
	case counts[builder.StateFailed] > 0:
		b.State = builder.StateFailed
	case counts[builder.StateCanceled] > 0:
		b.State = builder.StateCanceled
	default:
		b.State = builder.StateSucceeded
	}
}

// LineageEntry is one image built for a generator.
type LineageEntry struct {
	Build     string    `json:"build"`
	Repo      string    `json:"repo"`
	Generator string    `json:"generator"`
	Cloud     string    `json:"cloud"`
	Commit    string    `json:"commit"`
	Ref       string    `json:"ref,omitempty"`
	Digest    string    `json:"script_sha256"`
	BaseImage string    `json:"base_image"`
	ImageID   string    `json:"image_id"`
	ImageName string    `json:"image_name"`
	Created   time.Time `json:"created"`
}

// LogEntry is a stored build log line.
type LogEntry = builder.LogLine

// ListOptions filter a list of builds.
type ListOptions struct {
	Repo      string
	Generator string
	Limit     int // default 50
	// Match, when set, keeps only the builds of the repositories it
	// accepts (those an API token is limited to).
	Match func(repo string) bool
}

// NewID returns a random build id.
func NewID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
