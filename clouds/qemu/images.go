package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// BootConfig is a disk's boot sidecar, <disk minus extension>.boot.json: a
// kernel, initrd and command line QEMU boots directly, for disks without a
// boot loader. Relative paths are relative to the sidecar's directory.
type BootConfig struct {
	Kernel string `json:"kernel"`
	Initrd string `json:"initrd,omitempty"`
	Append string `json:"append,omitempty"`
}

// Provenance is a built image's sidecar, <name>.json next to <name>.qcow2.
type Provenance struct {
	Name    string            `json:"name"`
	Disk    string            `json:"disk"` // file name, next to the sidecar
	Base    string            `json:"base"` // the base disk it was built from
	Created time.Time         `json:"created"`
	Tags    map[string]string `json:"tags"`
}

// diskExts are tried, in order, after a bare name.
var diskExts = []string{".qcow2", ".img", ".raw"}

// sidecarStem is a disk path without its extension: the sidecars' prefix.
func sidecarStem(disk string) string {
	for _, ext := range diskExts {
		if strings.HasSuffix(disk, ext) {
			return strings.TrimSuffix(disk, ext)
		}
	}
	return disk
}

// resolveImage finds a spec's image: a path (absolute, or relative to dir), or
// a name in dir tried as is and with .qcow2, .img, .raw. It returns the disk
// and its boot sidecar (nil when there is none: the disk boots itself).
func resolveImage(dir, image string) (string, *BootConfig, error) {
	if image == "" {
		return "", nil, clouds.Errorf(clouds.KindInvalid, "find image", "no image given")
	}
	var cands []string
	if strings.Contains(image, "/") {
		p := image
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		cands = []string{p}
	} else {
		p := filepath.Join(dir, image)
		cands = []string{p}
		for _, ext := range diskExts {
			cands = append(cands, p+ext)
		}
	}
	for _, c := range cands {
		st, err := os.Stat(c)
		if err != nil || !st.Mode().IsRegular() || strings.HasSuffix(c, ".json") {
			continue
		}
		boot, err := readBoot(c)
		if err != nil {
			return "", nil, err
		}
		return c, boot, nil
	}
	return "", nil, &clouds.Error{Kind: clouds.KindNotFound, Op: "find image",
		Err:  fmt.Errorf("no disk %q in %s", image, dir),
		Hint: "name a qcow2 or raw file in the cloud's dir (with or without .qcow2/.img/.raw) or give its path"}
}

func readBoot(disk string) (*BootConfig, error) {
	p := sidecarStem(disk) + ".boot.json"
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read boot sidecar: %w", err)
	}
	var bc BootConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&bc); err != nil {
		return nil, clouds.Errorf(clouds.KindInvalid, "read boot sidecar", "%s: %w", p, err)
	}
	if bc.Kernel == "" {
		return nil, clouds.Errorf(clouds.KindInvalid, "read boot sidecar", "%s: kernel is required", p)
	}
	base := filepath.Dir(p)
	abs := func(s string) string {
		if s == "" || filepath.IsAbs(s) {
			return s
		}
		return filepath.Join(base, s)
	}
	bc.Kernel, bc.Initrd = abs(bc.Kernel), abs(bc.Initrd)
	return &bc, nil
}

// writeBoot writes bc (absolute paths) as the sidecar of disk, with paths
// relative to it where they lie under its directory, so a directory of images
// can be moved as a whole.
func writeBoot(disk string, bc *BootConfig) error {
	dir := filepath.Dir(disk)
	rel := func(s string) string {
		if s == "" {
			return s
		}
		if r, err := filepath.Rel(dir, s); err == nil && !strings.HasPrefix(r, "..") {
			return r
		}
		return s
	}
	out := BootConfig{Kernel: rel(bc.Kernel), Initrd: rel(bc.Initrd), Append: bc.Append}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(sidecarStem(disk)+".boot.json", append(b, '\n'), 0o644)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// ListImages lists the images imagegen built in dir (those with a provenance
// sidecar whose disk exists), newest first.
func ListImages(dir string) ([]clouds.Image, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	type dated struct {
		img     clouds.Image
		created time.Time
	}
	var out []dated
	for _, p := range paths {
		if strings.HasSuffix(p, ".boot.json") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		var pv Provenance
		if err := json.Unmarshal(b, &pv); err != nil || pv.Name == "" || pv.Disk == "" {
			continue // some other JSON file: not ours
		}
		disk := filepath.Join(dir, pv.Disk)
		if _, err := os.Stat(disk); err != nil {
			continue
		}
		out = append(out, dated{img: clouds.Image{ID: pv.Name, Name: pv.Name, Tags: pv.Tags, Location: disk}, created: pv.Created})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].created.Equal(out[j].created) {
			return out[i].created.After(out[j].created)
		}
		return out[i].img.Name < out[j].img.Name
	})
	imgs := make([]clouds.Image, len(out))
	for i, d := range out {
		imgs[i] = d.img
	}
	return imgs, nil
}

var _ clouds.ImageLister = (*Cloud)(nil)

// BuildImages lists the images in dir whose provenance sidecar names build
// (any build when build is ""), for the sweep. A disk without its sidecar is
// not listed: Snapshot writes the sidecar last, right after the disk appears,
// and an attempt killed while converting leaves only its work directory,
// which Leftovers finds.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	all, err := ListImages(c.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []clouds.Image
	for _, im := range all {
		if b := im.Tags[clouds.TagBuild]; b != "" && (build == "" || b == build) {
			out = append(out, im)
		}
	}
	return out, nil
}

// diskFormat tells qcow2 from raw by qcow2's magic, so a base named .img works either way.
func diskFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.Read(magic); err != nil {
		return "raw", nil //nolint:nilerr // an empty or tiny file is raw
	}
	if bytes.Equal(magic, []byte{'Q', 'F', 'I', 0xfb}) {
		return "qcow2", nil
	}
	return "raw", nil
}
