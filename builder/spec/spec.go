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
}

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
