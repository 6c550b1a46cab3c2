// Package spec reads generator specs (.imagegen/<name>.yaml): parses them,
// validates them with file:line:col errors, and computes their provenance digest.
package spec

import (
	"fmt"
	"slices"

	"github.com/imagegen/imagegen/internal/strictyaml"
)

// Dir is where generator specs live in a repository.
const Dir = ".imagegen"

// MaxFileSize is the largest spec or script file accepted.
const MaxFileSize = 1 << 20

// Spec is one generator.
type Spec struct {
	Name       string               // defaults to the file name without .yaml
	Script     string               // the script's text (read from ScriptFile when that is set)
	ScriptFile string               // the path in the repository the script came from, if any
	Branches   []string             // empty: the repository's default branch
	Clouds     map[string]CloudSpec // keyed by cloud name from the server config
	File       string               // the spec's path, as given to Parse
	Digest     string               // hex sha256 of the normalized spec and script: imagegen:script-sha256

	// Manifest and Drift say what a build records of its images and how
	// their differences are reported; they do not change what is built, so
	// they are not part of Digest.
	Manifest Manifest `json:",omitzero"`
	Drift    Drift    `json:",omitzero"`

	// Lifecycle is what happens to the images once made: their test, how
	// many are kept, the channel they move, rebuilds when a base changes
	// (lifecycle.go). It does not change what is built: not in Digest.
	Lifecycle

	namePos pos // where the name was set (1:1 when it comes from the file name)
}

// NameAt says where the spec's name was set, as file:line:col (line 1,
// column 1 when the name comes from the file name), for duplicate-name errors.
func (s *Spec) NameAt() string {
	return fmt.Sprintf("%s:%d:%d", s.File, s.namePos.line, s.namePos.col)
}

// CloudSpec is a generator's settings for one cloud.
type CloudSpec struct {
	Image   string // base image; optional only for clouds that make no image (type ssh)
	SSHUser string
	Size    string // flavor / instance type; "" means the cloud's default
	// Filter, set instead of Image, finds the base image at build time
	// (image: {name: ..., most_recent: true}); Image is then "".
	Filter *ImageFilter `json:",omitempty"`
}

// Manifest is the spec's manifest: key.
type Manifest struct {
	// Files are absolute paths or globs whose files' sha256 the manifest
	// holds (manifest's CheckFilePattern says which are allowed).
	Files []string `json:",omitempty"`
	// Required makes a cloud fail when no manifest could be collected;
	// otherwise that is a warning in the build log.
	Required bool `json:",omitempty"`
}

// Drift is the spec's drift: key.
type Drift struct {
	// Ignore are globs on package names left out of every comparison
	// ("linux-image-*"), and @os, @kernel, @arch for the system fields.
	Ignore []string `json:",omitempty"`
	// OnDrift is what clouds that differ do to the check run: OnDriftWarn
	// (the default; "" reads as it) or OnDriftFail.
	OnDrift string `json:",omitempty"`
}

// The values of drift.on_drift.
const (
	OnDriftWarn = "warn" // the check run says so and stays successful
	OnDriftFail = "fail" // the check run's conclusion is failure
)

// Fails reports whether clouds that differ fail the check run.
func (d Drift) Fails() bool { return d.OnDrift == OnDriftFail }

// CloudNames returns the spec's cloud names, sorted.
func (s *Spec) CloudNames() []string {
	names := make([]string, 0, len(s.Clouds))
	for n := range s.Clouds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Error is one problem in a spec, at a position: file:line:col: message.
type Error = strictyaml.Error

// Errors is every problem found in one or more specs, in file and line order.
type Errors = strictyaml.Errors
