package simulated

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// A fake cloud with Options.StateFile keeps its resources and images in files
// instead of in memory, so they outlive the process: several workers, and a
// worker killed and restarted, see one cloud, as they would a real one. Every
// API call takes an exclusive flock, reads the resources (StateFile), acts,
// and writes them back. Images, which pile up over a long run (a 2 000-build
// chaos run makes about as many), live in StateFile.images, read only by the
// calls that look at images and written only when they changed: with them in
// the one file, every call decoded and wrote every image (60 ms a call at
// 1 500 images, under a flock all workers share).

// stateDoc is the state file's JSON.
type stateDoc struct {
	Seq       int                 `json:"seq"`
	Resources []persistedResource `json:"resources"`
	// BaseImages are the base images AddBaseImage added (a few: they stay
	// in the state file).
	BaseImages []BaseImage `json:"base_images,omitempty"`
}

// imagesDoc is the images file's JSON.
type imagesDoc struct {
	Images []persistedImage `json:"images"`
}

type persistedResource struct {
	clouds.Resource
	Tags    map[string]string `json:"tags"`
	State   string            `json:"state"`
	Created time.Time         `json:"created"`
	ReadyAt time.Time         `json:"ready_at"`
	Seq     int               `json:"seq"`
}

type persistedImage struct {
	clouds.Image
	Build   string    `json:"build"`
	Server  string    `json:"server"`
	State   string    `json:"state"`
	Created time.Time `json:"created"`
	ReadyAt time.Time `json:"ready_at"`
	Seq     int       `json:"seq"`
}

// syncState loads the shared state (c.mu held) and returns the function that
// writes it back and releases the file; a no-op without a state file.
func (c *Cloud) syncState() (func() error, error) {
	if c.opts.StateFile == "" {
		return func() error { return nil }, nil
	}
	// The lock lives in its own file: the state file is replaced by rename
	// (so a process killed mid-write never leaves it torn), and a lock on a
	// replaced inode would lock nothing.
	lf, err := os.OpenFile(c.opts.StateFile+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("simulated cloud state: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("simulated cloud state: lock %s: %w", c.opts.StateFile, err)
	}
	release := func() { _ = syscall.Flock(int(lf.Fd()), syscall.LOCK_UN); lf.Close() }
	raw, err := os.ReadFile(c.opts.StateFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		release()
		return nil, fmt.Errorf("simulated cloud state: read %s: %w", c.opts.StateFile, err)
	}
	var doc stateDoc
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &doc); err != nil {
			release()
			return nil, fmt.Errorf("simulated cloud state: decode %s: %w", c.opts.StateFile, err)
		}
	}
	c.seq = doc.Seq
	c.resources = make(map[string]*resource, len(doc.Resources))
	c.byBuild = map[string][]*resource{}
	for _, r := range doc.Resources {
		c.addLocked(&resource{Resource: r.Resource, tags: r.Tags, state: r.State, created: r.Created, readyAt: r.ReadyAt, seq: r.Seq})
	}
	c.images, c.imagesLoaded, c.imagesDirty, c.imagesErr = nil, false, false, nil
	c.added = doc.BaseImages
	return func() error {
		defer release()
		out := stateDoc{Seq: c.seq, BaseImages: c.added}
		for _, r := range c.resources {
			out.Resources = append(out.Resources, persistedResource{Resource: r.Resource, Tags: r.tags, State: r.state, Created: r.created, ReadyAt: r.readyAt, Seq: r.seq})
		}
		if err := writeJSON(c.opts.StateFile, out); err != nil {
			return err
		}
		if c.imagesErr != nil {
			return c.imagesErr // never write over images that could not be read
		}
		if !c.imagesDirty {
			return nil
		}
		var imgs imagesDoc
		for _, im := range c.images {
			imgs.Images = append(imgs.Images, persistedImage{Image: im.Image, Build: im.build, Server: im.server, State: im.state, Created: im.created, ReadyAt: im.readyAt, Seq: im.seq})
		}
		return writeJSON(c.imagesFile(), imgs)
	}, nil
}

func (c *Cloud) imagesFile() string { return c.opts.StateFile + ".images" }

// imgs returns the images; with a state file, read from its images file the
// first time a call needs them (c.mu held, the state synced).
func (c *Cloud) imgs() map[string]*image {
	if c.opts.StateFile == "" || c.imagesLoaded {
		return c.images
	}
	c.imagesLoaded = true
	c.images = map[string]*image{}
	raw, err := os.ReadFile(c.imagesFile())
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.imagesErr = fmt.Errorf("simulated cloud state: read %s: %w", c.imagesFile(), err)
		}
		return c.images
	}
	var doc imagesDoc
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &doc); err != nil {
			c.imagesErr = fmt.Errorf("simulated cloud state: decode %s: %w", c.imagesFile(), err)
			return c.images
		}
	}
	for _, im := range doc.Images {
		c.images[im.ID] = &image{Image: im.Image, build: im.Build, server: im.Server, state: im.State, created: im.Created, readyAt: im.ReadyAt, seq: im.Seq}
	}
	return c.images
}

// imagesChanged marks the images to be written back (c.mu held).
func (c *Cloud) imagesChanged() { c.imagesDirty = true }

// writeJSON replaces file with v's JSON, by rename: a process killed
// mid-write never leaves it torn.
func writeJSON(file string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("simulated cloud state: encode: %w", err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", file, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("simulated cloud state: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("simulated cloud state: %w", err)
	}
	return nil
}

// withState runs fn on the current state, c.mu held, saving what fn changed.
func (c *Cloud) withState(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	save, err := c.syncState()
	if err != nil {
		return err
	}
	ferr := fn()
	return errors.Join(ferr, save())
}
