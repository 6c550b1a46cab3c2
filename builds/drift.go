package builds

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/manifest"
)

// Drift is what a build's manifests say: whether its clouds hold the same
// packages, and what changed on each cloud since its previous image. Every
// string in it came from a machine a user's script controlled: it holds no
// markup, and whoever shows it escapes it.
type Drift struct {
	Build string `json:"build"`
	// Across compares the manifests of the clouds that succeeded; nil until
	// every cloud of the build is final (Pending lists the others).
	Across  *manifest.CloudDrift `json:"across_clouds"`
	Pending []string             `json:"pending,omitempty"`
	// OverTime holds one entry per cloud with a manifest, by cloud name.
	OverTime []CloudChanges `json:"over_time"`
	// The spec's drift: settings the comparisons used.
	Ignore  []string `json:"ignore,omitempty"`
	OnDrift string   `json:"on_drift"`
}

// Differs reports whether at least two clouds were compared and they differ.
func (d *Drift) Differs() bool {
	return d != nil && d.Across != nil && len(d.Across.Clouds) >= 2 && !d.Across.Identical
}

// hasManifests reports whether any cloud of the build has a manifest: a
// build without any (simulated clouds without one) shows no drift at all.
func (d *Drift) hasManifests() bool {
	return d != nil && (len(d.OverTime) > 0 || d.Across != nil && len(d.Across.Clouds) > 0)
}

// CloudChanges is one cloud's image against an earlier one.
type CloudChanges struct {
	Cloud string `json:"cloud"`
	// Previous is the image compared with; nil when there is none.
	Previous *ImageRef `json:"previous,omitempty"`
	// Changes is nil when there is nothing to compare: Note says why.
	Changes *manifest.Changes `json:"changes,omitempty"`
	Note    string            `json:"note,omitempty"`
}

// ImageRef names an image a build made.
type ImageRef struct {
	Build     string    `json:"build"`
	Commit    string    `json:"commit,omitempty"`
	ImageID   string    `json:"image_id,omitempty"`
	ImageName string    `json:"image_name,omitempty"`
	Created   time.Time `json:"created,omitzero"`
}

// ManifestDocument returns a cloud's manifest of build id as CycloneDX
// JSON; ErrNotFound when the build or its manifest does not exist.
func ManifestDocument(ctx context.Context, st Store, id, cloud string) ([]byte, error) {
	gz, err := st.Manifest(ctx, id, cloud)
	if err != nil {
		return nil, err
	}
	doc, err := manifest.Decompress(gz)
	if err != nil {
		return nil, fmt.Errorf("manifest %s/%s: %w", id, cloud, err)
	}
	return doc, nil
}

// loadManifest reads a cloud's manifest of build id.
func loadManifest(ctx context.Context, st Store, id, cloud string) (*manifest.Manifest, error) {
	doc, err := ManifestDocument(ctx, st, id, cloud)
	if err != nil {
		return nil, err
	}
	return manifest.Decode(doc)
}

// driftOptions are the spec's drift: settings; sp may be nil.
func driftOptions(sp *spec.Spec) (manifest.DriftOptions, string) {
	if sp == nil {
		return manifest.DriftOptions{}, spec.OnDriftWarn
	}
	on := sp.Drift.OnDrift
	if on == "" {
		on = spec.OnDriftWarn
	}
	return manifest.DriftOptions{Ignore: sp.Drift.Ignore}, on
}

// BuildDrift compares build b's manifests across its clouds (once every
// cloud is final) and, for each cloud with a manifest, against the previous
// image of the same generator on that cloud (the lineage knows it). sp is
// b's spec (its drift: settings); nil means none.
func BuildDrift(ctx context.Context, st Store, b *Build, sp *spec.Spec) (*Drift, error) {
	opts, on := driftOptions(sp)
	d := &Drift{Build: b.ID, OverTime: []CloudChanges{}, Ignore: opts.Ignore, OnDrift: on}
	var across []manifest.CloudManifest
	mans := map[string]*manifest.Manifest{}
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		if !c.State.Final() {
			d.Pending = append(d.Pending, name)
		}
		var m *manifest.Manifest
		if c.ManifestSHA256 != "" {
			var err error
			if m, err = loadManifest(ctx, st, b.ID, name); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			mans[name] = m
		}
		if c.State == builder.StateSucceeded {
			across = append(across, manifest.CloudManifest{Cloud: name, Manifest: m})
		}
	}
	if len(d.Pending) == 0 {
		var err error
		if d.Across, err = manifest.AcrossClouds(across, opts); err != nil {
			return nil, err
		}
	}
	if len(mans) == 0 {
		return d, nil
	}
	lineage, err := st.Images(ctx, b.Repo, b.Generator)
	if err != nil {
		return nil, err
	}
	for _, name := range b.CloudNames() {
		m, ok := mans[name]
		if !ok || m == nil {
			continue
		}
		cc := CloudChanges{Cloud: name}
		cc.Previous = previousImage(lineage, b, name)
		if cc.Previous == nil {
			cc.Note = "no earlier image of this generator on this cloud to compare with"
			d.OverTime = append(d.OverTime, cc)
			continue
		}
		old, err := loadManifest(ctx, st, cc.Previous.Build, name)
		switch {
		case errors.Is(err, ErrNotFound):
			cc.Note = "the previous image has no manifest"
		case err != nil:
			cc.Note = "the previous image's manifest could not be read: " + err.Error()
		default:
			if cc.Changes, err = manifest.OverTime(old, m, opts); err != nil {
				return nil, err
			}
		}
		d.OverTime = append(d.OverTime, cc)
	}
	return d, nil
}

// previousImage is the newest image of lineage (newest first) on cloud made
// by another build before b's image on that cloud (before now, when b made
// none there yet).
func previousImage(lineage []LineageEntry, b *Build, cloud string) *ImageRef {
	before := b.Clouds[cloud].Finished
	if before.IsZero() {
		before = time.Now()
	}
	for _, e := range lineage {
		if e.Cloud == cloud && e.Build != b.ID && e.Created.Before(before) {
			return &ImageRef{Build: e.Build, Commit: e.Commit, ImageID: e.ImageID, ImageName: e.ImageName, Created: e.Created}
		}
	}
	return nil
}

// BuildDiff is how the images of one build differ from another's, cloud by
// cloud: what `GET /api/v1/drift?from=&to=` and `imagegen diff` show.
type BuildDiff struct {
	From   string         `json:"from"`
	To     string         `json:"to"`
	Clouds []CloudChanges `json:"clouds"` // Previous is the from build's image
}

// DiffBuilds compares the manifests of build to with those of build from,
// on every cloud both have (or only on cloud, when it is not ""), with to's
// drift: settings. A build that does not exist is ErrNotFound; a cloud
// neither build has is a *RequestError.
func DiffBuilds(ctx context.Context, st Store, from, to, cloud string) (*BuildDiff, error) {
	fb, _, err := st.Get(ctx, from)
	if err != nil {
		return nil, err
	}
	tb, tsp, err := st.Get(ctx, to)
	if err != nil {
		return nil, err
	}
	opts, _ := driftOptions(tsp)
	var names []string
	for _, n := range tb.CloudNames() {
		if fb.Clouds[n] != nil && (cloud == "" || n == cloud) {
			names = append(names, n)
		}
	}
	if cloud != "" && len(names) == 0 {
		return nil, &RequestError{fmt.Sprintf("cloud %q is not a cloud of both builds (%s has %v, %s has %v)", cloud, from, fb.CloudNames(), to, tb.CloudNames())}
	}
	out := &BuildDiff{From: from, To: to, Clouds: []CloudChanges{}}
	for _, n := range names {
		fc := fb.Clouds[n]
		cc := CloudChanges{Cloud: n, Previous: &ImageRef{Build: from, Commit: fb.Commit, ImageID: fc.ImageID, ImageName: fc.ImageName, Created: fc.Finished}}
		old, oerr := loadManifest(ctx, st, from, n)
		cur, cerr := loadManifest(ctx, st, to, n)
		switch {
		case errors.Is(oerr, ErrNotFound) && errors.Is(cerr, ErrNotFound):
			cc.Note = "neither build has a manifest from this cloud"
		case errors.Is(oerr, ErrNotFound):
			cc.Note = "build " + from + " has no manifest from this cloud"
		case errors.Is(cerr, ErrNotFound):
			cc.Note = "build " + to + " has no manifest from this cloud"
		case oerr != nil:
			return nil, oerr
		case cerr != nil:
			return nil, cerr
		default:
			if cc.Changes, err = manifest.OverTime(old, cur, opts); err != nil {
				return nil, err
			}
		}
		out.Clouds = append(out.Clouds, cc)
	}
	return out, nil
}
