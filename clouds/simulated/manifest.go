package simulated

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/manifest"
)

// The simulated cloud is a clouds.ManifestSource: its instances run no
// script (without ssh:), so it says itself what they hold, from its config,
// so that manifests and drift can be shown and tested without a VM.
var _ clouds.ManifestSource = (*Cloud)(nil)

// Manifest implements clouds.ManifestSource: the CycloneDX document of
// Options.Manifest, or of Options.ManifestFile read now (so a file changed
// between two builds shows as a change over time). Without either it
// returns an error wrapping clouds.ErrNoManifest.
func (c *Cloud) Manifest(ctx context.Context, _ *clouds.Instance) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case c.opts.ManifestFile != "":
		doc, err := readManifestFile(c.opts.ManifestFile)
		if err != nil {
			return nil, fmt.Errorf("simulated cloud: %w", err)
		}
		return doc, nil
	case c.opts.Manifest != nil:
		m := c.opts.Manifest.Clone()
		if m.Collected.IsZero() {
			m.Collected = c.now().UTC().Truncate(time.Second)
		}
		return manifest.Encode(m)
	}
	return nil, fmt.Errorf("simulated cloud: no manifest: configured (manifest: {file: ...} or {os: ..., packages: [...]}): %w", clouds.ErrNoManifest)
}

// readManifestFile reads a CycloneDX JSON file, refusing one the manifest
// package would not read.
func readManifestFile(file string) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("manifest.file: %w", err)
	}
	if fi.Size() > manifest.MaxDocument {
		return nil, fmt.Errorf("manifest.file %s: %d bytes, over the limit of %d", file, fi.Size(), manifest.MaxDocument)
	}
	doc, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("manifest.file: %w", err)
	}
	if _, err := manifest.Decode(doc); err != nil {
		return nil, fmt.Errorf("manifest.file %s: %w", file, err)
	}
	return doc, nil
}

// manifestConfig is the manifest: key of a simulated cloud's config: a
// CycloneDX file, or the machine described inline.
type manifestConfig struct {
	File     string   `yaml:"file"`
	OS       osConfig `yaml:"os"`
	Kernel   string   `yaml:"kernel"`
	Arch     string   `yaml:"arch"`
	Manager  string   `yaml:"manager"`  // deb (default), rpm, apk
	Packages []string `yaml:"packages"` // "name=version" or "name:arch=version"
}

type osConfig struct {
	ID         string `yaml:"id"`
	VersionID  string `yaml:"version_id"`
	PrettyName string `yaml:"pretty_name"`
}

// options turns the config into Options' Manifest or ManifestFile.
func (mc *manifestConfig) options(file string, o *Options) error {
	inline := mc.OS != (osConfig{}) || mc.Kernel != "" || mc.Arch != "" || mc.Manager != "" || len(mc.Packages) > 0
	if mc.File != "" {
		if inline {
			return fmt.Errorf("%s: manifest: give either file or the inline keys (os, kernel, arch, manager, packages), not both", file)
		}
		if _, err := readManifestFile(mc.File); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		o.ManifestFile = mc.File
		return nil
	}
	mgr := manifest.Deb
	switch mc.Manager {
	case "", "deb":
	case "rpm":
		mgr = manifest.RPM
	case "apk":
		mgr = manifest.APK
	default:
		return fmt.Errorf("%s: manifest.manager %q is not deb, rpm or apk", file, mc.Manager)
	}
	m := &manifest.Manifest{
		OS:     manifest.OS{ID: mc.OS.ID, VersionID: mc.OS.VersionID, PrettyName: mc.OS.PrettyName},
		Kernel: mc.Kernel, Arch: mc.Arch, Packages: []manifest.Package{},
	}
	for _, p := range mc.Packages {
		name, version, ok := strings.Cut(p, "=")
		name, arch, _ := strings.Cut(name, ":")
		if !ok || name == "" || version == "" {
			return fmt.Errorf("%s: manifest.packages: %q is not name=version or name:arch=version", file, p)
		}
		m.Packages = append(m.Packages, manifest.Package{Manager: mgr, Name: name, Version: version, Arch: arch})
	}
	o.Manifest = m
	return nil
}
