package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
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

// Snapshot converts the stopped instance's overlay into a standalone,
// compressed qcow2 dir/<name>.qcow2, carries the base's boot sidecar over,
// and writes the provenance sidecar dir/<name>.json last: an image is
// listed only once it is complete.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	if !safeName.MatchString(req.Name) {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image name %q must be letters, digits, '.', '_' or '-'", req.Name)
	}
	if r, ok := lastOf(inst, clouds.KindServer, resQEMU); ok {
		if pid, start, err := parseProcID(r.ID); err == nil && alive(pid, start) {
			return clouds.Errorf(clouds.KindInvalid, "snapshot", "QEMU still runs for %q: Stop it first", inst.ID)
		}
	}
	ov, ok := lastOf(inst, clouds.KindFile, resOverlay)
	if !ok {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "instance %q has no overlay", inst.ID)
	}
	out := filepath.Join(c.cfg.Dir, req.Name+".qcow2")
	if _, err := os.Stat(out); err == nil {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image %s exists already", out)
	}
	imgBin, err := exec.LookPath(c.cfg.QEMUImg)
	if err != nil {
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "%w", err)
	}
	base, boot, baseErr := c.overlayBase(ctx, imgBin, ov.ID)
	img.ID, img.Name, img.Location, img.Tags = req.Name, req.Name, out, req.Tags

	// Converted inside the work directory, then renamed into dir: a crash
	// mid-convert leaves the partial file where the sweep finds it by build id.
	part := filepath.Join(filepath.Dir(ov.ID), "image.part")
	req.Log.Info("converting the overlay into a standalone image", "image", out)
	if b, err := exec.CommandContext(ctx, imgBin, "convert", "-q", "-c", "-O", "qcow2", ov.ID, part).CombinedOutput(); err != nil {
		_ = os.Remove(part)
		if ctx.Err() != nil {
			return fmt.Errorf("snapshot: %w", ctx.Err())
		}
		return clouds.Errorf(clouds.KindFailed, "snapshot", "qemu-img convert: %w: %s", err, strings.TrimSpace(string(b)))
	}
	// Link, not rename: it never replaces an image that appeared meanwhile.
	err = os.Link(part, out)
	_ = os.Remove(part)
	if errors.Is(err, os.ErrExist) {
		*img = clouds.Image{} // not ours: DeleteImage must not touch it
		return clouds.Errorf(clouds.KindInvalid, "snapshot", "image %s exists already", out)
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if baseErr != nil {
		req.Log.Warn("could not find the base disk's boot sidecar", "err", baseErr)
	}
	if boot != nil {
		if err := writeBoot(out, boot); err != nil {
			return fmt.Errorf("snapshot: write boot sidecar: %w", err)
		}
	}
	pv := Provenance{Name: req.Name, Disk: filepath.Base(out), Base: base, Created: time.Now().UTC(), Tags: req.Tags}
	b, err := json.MarshalIndent(pv, "", "  ")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.cfg.Dir, req.Name+".json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("snapshot: write provenance: %w", err)
	}
	req.Log.Info("image saved", "image", out)
	return nil
}

// overlayBase asks qemu-img which base the overlay was made on, and reads that base's boot sidecar.
func (c *Cloud) overlayBase(ctx context.Context, imgBin, overlay string) (string, *BootConfig, error) {
	b, err := exec.CommandContext(ctx, imgBin, "info", "--output=json", "-U", overlay).Output()
	if err != nil {
		return "", nil, fmt.Errorf("qemu-img info: %w", err)
	}
	var info struct {
		Backing string `json:"full-backing-filename"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return "", nil, fmt.Errorf("qemu-img info: %w", err)
	}
	if info.Backing == "" {
		return "", nil, nil
	}
	boot, err := readBoot(info.Backing)
	return info.Backing, boot, err
}

// DeleteImage removes an image's disk and sidecars.
func (c *Cloud) DeleteImage(_ context.Context, img *clouds.Image) error {
	loc := img.Location
	if loc == "" {
		if img.ID == "" {
			return nil
		}
		loc = filepath.Join(c.cfg.Dir, img.ID+".qcow2")
	}
	if !within(c.cfg.Dir, loc) {
		return clouds.Errorf(clouds.KindInvalid, "delete image", "%s is not in %s", loc, c.cfg.Dir)
	}
	stem := sidecarStem(loc)
	var errs []error
	// The provenance sidecar first: a half-deleted image is then no longer listed.
	for _, p := range []string{stem + ".json", loc, stem + ".boot.json"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete image: %w", err))
		}
	}
	return errors.Join(errs...)
}

var (
	_ clouds.ImageDescriber = (*Cloud)(nil)
	_ clouds.ImageTagger    = (*Cloud)(nil)
)

// readProvenance reads the sidecar of image id (its name) in dir; an id that
// is not a file name, or names no built image, is KindNotFound.
func (c *Cloud) readProvenance(op, id string) (string, Provenance, error) {
	var pv Provenance
	notFound := func(err error) error {
		return &clouds.Error{Kind: clouds.KindNotFound, Op: op, Err: fmt.Errorf("no image %q in %s: %w", id, c.cfg.Dir, err)}
	}
	if !safeName.MatchString(id) {
		return "", pv, notFound(clouds.ErrNotFound)
	}
	p := filepath.Join(c.cfg.Dir, id+".json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", pv, notFound(clouds.ErrNotFound)
	}
	if err != nil {
		return "", pv, fmt.Errorf("%s: %w", op, err)
	}
	if err := json.Unmarshal(b, &pv); err != nil || pv.Name != id || pv.Disk == "" {
		return "", pv, notFound(fmt.Errorf("%s is no image's provenance sidecar", p))
	}
	if _, err := os.Stat(filepath.Join(c.cfg.Dir, pv.Disk)); err != nil {
		return "", pv, notFound(err)
	}
	return p, pv, nil
}

// DescribeImage reads an image's provenance sidecar: clouds.ImageDescriber.
func (c *Cloud) DescribeImage(ctx context.Context, id string) (clouds.Image, error) {
	if err := ctx.Err(); err != nil {
		return clouds.Image{}, err
	}
	_, pv, err := c.readProvenance("describe image", id)
	if err != nil {
		return clouds.Image{}, err
	}
	return clouds.Image{ID: pv.Name, Name: pv.Name, Tags: pv.Tags, Location: filepath.Join(c.cfg.Dir, pv.Disk)}, nil
}

// TagImage sets tags in an image's provenance sidecar, rewritten whole
// (atomically), its other tags kept: clouds.ImageTagger. Two builds never
// tag one image, so read-modify-write needs no lock.
func (c *Cloud) TagImage(ctx context.Context, id string, tags map[string]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, pv, err := c.readProvenance("tag image", id)
	if err != nil {
		return err
	}
	if pv.Tags == nil {
		pv.Tags = map[string]string{}
	}
	for k, v := range tags {
		pv.Tags[k] = v
	}
	b, err := json.MarshalIndent(pv, "", "  ")
	if err != nil {
		return fmt.Errorf("tag image: %w", err)
	}
	if err := writeFileAtomic(p, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("tag image: %w", err)
	}
	return nil
}
