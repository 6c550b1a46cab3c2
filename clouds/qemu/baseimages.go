package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagegen/imagegen/clouds"
)

// TagImage (clouds.ImageTagger), which the test's result uses as
// provenance does, is in images.go.
var _ clouds.ImageFinder = (*Cloud)(nil)

// FindImages finds disks in the cloud's dir by a glob on their file names
// (debian-12-*.qcow2; a name without an extension matches with .qcow2,
// .img or .raw too), newest first by modification time, or by the
// provenance of images imagegen built. Tags match a built image's
// provenance tags; a qemu cloud has no owners or visibility.
func (c *Cloud) FindImages(ctx context.Context, f clouds.ImageFilter) ([]clouds.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.Owner != "" || f.Visibility != "" {
		return nil, clouds.Errorf(clouds.KindInvalid, "find base images", "a qemu cloud's images have no owner or visibility: filter by name (a glob on the file names in %s) or tags", c.cfg.Dir)
	}
	entries, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("find base images: %w", err)
	}
	var out []clouds.Image
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".tmp") || !isDisk(name) {
			continue
		}
		stem := sidecarStem(name)
		if !f.MatchName(name) && !f.MatchName(stem) {
			continue
		}
		img := clouds.Image{ID: name, Name: stem, Location: filepath.Join(c.cfg.Dir, name)}
		if pv, err := readProvenance(filepath.Join(c.cfg.Dir, stem+".json")); err == nil && pv.Disk == name {
			img.ID, img.Tags, img.Created = pv.Name, pv.Tags, pv.Created
		}
		if img.Created.IsZero() {
			if fi, err := e.Info(); err == nil {
				img.Created = fi.ModTime().UTC()
			}
		}
		if !f.MatchTags(img.Tags) {
			continue
		}
		out = append(out, img)
	}
	clouds.SortNewestFirst(out)
	return out, nil
}

// isDisk says whether a file name has a disk's extension.
func isDisk(name string) bool {
	for _, ext := range diskExts {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

func readProvenance(p string) (Provenance, error) {
	var pv Provenance
	b, err := os.ReadFile(p)
	if err != nil {
		return pv, err
	}
	if err := json.Unmarshal(b, &pv); err != nil || pv.Name == "" || pv.Disk == "" {
		return pv, fmt.Errorf("%s is not an image's provenance", p)
	}
	return pv, nil
}
