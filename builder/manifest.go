package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/sshexec"
	"github.com/imagegen/imagegen/manifest"
)

// ManifestResult is what a build found inside its image (package
// manifest): the encoded document and a summary of it, or why there
// is none.
type ManifestResult struct {
	// Document is the CycloneDX JSON document (manifest.Encode); nil when
	// none was collected.
	Document []byte `json:"-"`
	// Manifest is Document as a value, for drift; nil when none.
	Manifest *manifest.Manifest `json:"-"`
	SHA256   string             `json:"sha256,omitempty"` // manifest.SHA256(Document): the image's imagegen:manifest-sha256
	Packages int                `json:"packages"`
	Partial  bool               `json:"partial,omitempty"` // some of it is missing: see the manifest's notes
	// Error says why there is no manifest (redacted); "" when there is one.
	Error string `json:"error,omitempty"`
}

// collectManifest is the step after the script: it records what the machine
// holds (manifest's Collect over the build's SSH connection, or the
// cloud's own account of it, clouds.ManifestSource, when there is no SSH),
// so the snapshot can carry its digest. A manifest that cannot be had is a
// warning, unless the spec says manifest: {required: true}; a partial one
// is kept, flagged, with its notes in the log.
func (p *pipeline) collectManifest(ctx context.Context) error {
	mr := &ManifestResult{}
	p.res.Manifest = mr
	m, err := p.manifest(ctx)
	var doc []byte
	if err == nil {
		p.redactManifest(m)
		m.Provenance = p.provenance()
		doc, err = manifest.Encode(m)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mr.Error = p.log.redact.Redact(err.Error())
		if p.job.Spec.Manifest.Required {
			return fmt.Errorf("no manifest, and the spec requires one (manifest: {required: true}): %s", mr.Error)
		}
		if errors.Is(err, errNoSource) || errors.Is(err, clouds.ErrNoManifest) {
			p.slog.Info("no manifest: " + mr.Error)
		} else {
			p.slog.Warn("no manifest of the image (a warning; manifest: {required: true} in the spec makes it fail the build): " + mr.Error)
		}
		return nil
	}
	mr.Document, mr.Manifest = doc, m
	mr.SHA256, mr.Packages, mr.Partial = manifest.SHA256(doc), len(m.Packages), m.Partial
	for _, n := range m.Notes {
		// Notes quote machine output in ASCII escapes: safe for a log line.
		p.slog.Warn("manifest: " + n)
	}
	what := "manifest collected"
	if m.Partial {
		what = "partial manifest collected (some of it is missing: see the notes above)"
	}
	p.slog.Info(what, "os", m.OS.String(), "kernel", m.Kernel, "arch", m.Arch, "packages", len(m.Packages),
		"files", len(m.Files), "sha256", mr.SHA256)
	return nil
}

// errNoSource: the instance has no SSH endpoint and the cloud keeps no manifest.
var errNoSource = errors.New("the instance has no SSH endpoint and the cloud keeps no manifest of it")

// manifest collects the manifest over SSH, or asks the cloud when there is no SSH.
func (p *pipeline) manifest(ctx context.Context) (*manifest.Manifest, error) {
	if p.client != nil {
		return manifest.Collect(ctx, sshRunner{p.client}, manifest.Options{Files: p.job.Spec.Manifest.Files})
	}
	src, ok := p.job.Cloud.(clouds.ManifestSource)
	if !ok {
		return nil, errNoSource
	}
	sctx, cancel := context.WithTimeout(ctx, manifest.DefaultTimeout)
	defer cancel()
	doc, err := src.Manifest(sctx, &p.inst)
	if err != nil {
		return nil, fmt.Errorf("the cloud's manifest: %w", err)
	}
	m, err := manifest.Decode(doc)
	if err != nil {
		return nil, fmt.Errorf("the cloud's manifest: %w", err)
	}
	if m.Collected.IsZero() {
		m.Collected = p.now().UTC().Truncate(time.Second)
	}
	return m, nil
}

// redactManifest hides the job's secrets in the manifest's free text: the
// notes quote what the machine printed, and the OS fields are the machine's
// word. Package names and versions are restricted to package managers'
// characters, which no secret worth the name is made of alone.
func (p *pipeline) redactManifest(m *manifest.Manifest) {
	r := p.log.redact
	if r.IsZero() {
		return
	}
	for i, n := range m.Notes {
		m.Notes[i] = r.Redact(n)
	}
	m.OS.ID, m.OS.VersionID, m.OS.PrettyName = r.Redact(m.OS.ID), r.Redact(m.OS.VersionID), r.Redact(m.OS.PrettyName)
	m.Kernel, m.Arch = r.Redact(m.Kernel), r.Redact(m.Arch)
}

// provenance is how the image was made, for the manifest's document.
func (p *pipeline) provenance() manifest.Provenance {
	return manifest.Provenance{
		Repo:         p.job.Repo,
		Commit:       p.job.Commit,
		Generator:    p.job.Spec.Name,
		ScriptSHA256: p.job.Spec.Digest,
		BaseImage:    p.job.Spec.Clouds[p.job.CloudName].Image,
		Cloud:        p.job.CloudName,
		Build:        p.job.Build,
	}
}

// sshRunner is the build's SSH connection as the manifest's Runner.
type sshRunner struct{ c *sshexec.Client }

func (r sshRunner) Run(ctx context.Context, cmd string, stdout, stderr io.Writer) (int, error) {
	return r.c.RunRaw(ctx, cmd, stdout, stderr)
}

// manifestTags adds the manifest's digest to an image's tags, when there is one.
func (p *pipeline) manifestTags(tags map[string]string) {
	if mr := p.res.Manifest; mr != nil && mr.SHA256 != "" {
		tags[clouds.TagManifestSHA] = mr.SHA256
	}
}
