// Package manifest says what is inside an image and how images differ: it
// collects a VM's OS, kernel, packages and file hashes over one command
// (Collect), stores them as CycloneDX JSON (Encode, Decode, Compress), and
// compares manifests across clouds and over time in each distribution's own
// version order (AcrossClouds, OverTime), with Markdown and text renderers.
//
// It owns the collection script, its parsing, the document format and the
// drift rules. It knows nothing of clouds, GitHub, Redis or SSH and imports
// no imagegen package (a cloud is a name to it): the caller runs the script
// through a Runner, fills in Provenance, stores the bytes, tags the image
// with SHA256, and decides whether a failed collection is a warning or a
// failure (see Collect).
//
// Everything a manifest holds came from a machine the user's script
// controlled: it is what that machine said, not a verified fact, and every
// string in it is untrusted. The parsers bound memory and drop what is not a
// well-formed package; the renderers escape what they print.
package manifest

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Manager is a package manager: it names the purl type and the version order.
type Manager string

// The package managers Collect reads.
const (
	Deb Manager = "deb" // dpkg: Debian, Ubuntu
	RPM Manager = "rpm" // rpm: RHEL, Fedora, SUSE
	APK Manager = "apk" // apk: Alpine
)

// Manifest is what one image holds.
type Manifest struct {
	OS     OS     `json:"os"`
	Kernel string `json:"kernel,omitempty"` // uname -r at collection time
	Arch   string `json:"arch,omitempty"`   // uname -m

	// Packages are sorted by Manager, Name, Arch, Version (Sort does it).
	// A name may appear with several versions (rpm installs kernels side by
	// side) or several architectures (multiarch, multilib).
	Packages []Package `json:"packages"`
	Files    []File    `json:"files,omitempty"` // sorted by Path

	// Partial is set when something was dropped or not collected: output
	// past the size cap, a timeout, lines that were not well-formed packages.
	// Notes say what, in plain sentences (they may quote machine output, so
	// escape them like any other string in the manifest).
	Partial bool     `json:"partial,omitempty"`
	Notes   []string `json:"notes,omitempty"`

	Provenance Provenance `json:"provenance"`
	Collected  time.Time  `json:"collected,omitzero"`
}

// OS is the machine's /etc/os-release.
type OS struct {
	ID         string `json:"id,omitempty"`         // ID: debian, ubuntu, alpine, rhel, ...
	VersionID  string `json:"version_id,omitempty"` // VERSION_ID: 12, 22.04, 3.20.3
	PrettyName string `json:"pretty_name,omitempty"`
}

// String is "ID VERSION_ID", or "unknown".
func (o OS) String() string {
	s := strings.TrimSpace(o.ID + " " + o.VersionID)
	if s == "" {
		return "unknown"
	}
	return s
}

// Package is one installed package.
type Package struct {
	Manager Manager `json:"manager"`
	Name    string  `json:"name"`
	// Version is the manager's full version: deb "1:2.3-4", rpm
	// "[EPOCH:]VERSION-RELEASE", apk "1.2.3-r0".
	Version string `json:"version"`
	Arch    string `json:"arch,omitempty"` // amd64, x86_64, noarch, all; empty when the manager has none
}

// File is one file a spec asked to hash.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Provenance is how the image was made. The caller fills it in; Collect
// leaves it empty. It is stored in the document, not checked.
type Provenance struct {
	Repo            string `json:"repo,omitempty"`
	Commit          string `json:"commit,omitempty"`
	Generator       string `json:"generator,omitempty"`
	ScriptSHA256    string `json:"script_sha256,omitempty"`
	BaseImage       string `json:"base_image,omitempty"`
	Cloud           string `json:"cloud,omitempty"`
	Build           string `json:"build,omitempty"`
	Image           string `json:"image,omitempty"`            // the new image's id, when known
	ImagegenVersion string `json:"imagegen_version,omitempty"` // the tool that wrote the document
}

// comparePackages is the manifest's package order.
func comparePackages(a, b Package) int {
	return cmp.Or(
		cmp.Compare(a.Manager, b.Manager),
		cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Arch, b.Arch),
		cmp.Compare(a.Version, b.Version),
	)
}

// Sort puts Packages and Files in their order, removes duplicate packages
// and keeps the first File of each path. It returns how many it removed.
func (m *Manifest) Sort() int {
	n := len(m.Packages) + len(m.Files)
	if !slices.IsSortedFunc(m.Packages, comparePackages) {
		slices.SortFunc(m.Packages, comparePackages)
	}
	m.Packages = slices.Compact(m.Packages)
	// One entry a path: a path is a file's identity (and its bom-ref).
	slices.SortStableFunc(m.Files, func(a, b File) int { return cmp.Compare(a.Path, b.Path) })
	m.Files = slices.CompactFunc(m.Files, func(a, b File) bool { return a.Path == b.Path })
	return n - len(m.Packages) - len(m.Files)
}

// Clone returns a deep copy.
func (m *Manifest) Clone() *Manifest {
	c := *m
	c.Packages = slices.Clone(m.Packages)
	c.Files = slices.Clone(m.Files)
	c.Notes = slices.Clone(m.Notes)
	return &c
}

// note adds a note once.
func (m *Manifest) note(s string) {
	if !slices.Contains(m.Notes, s) {
		m.Notes = append(m.Notes, s)
	}
}
