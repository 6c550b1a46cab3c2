package simulated

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Launch implements clouds.Cloud: a key pair, then a server, each recorded in
// inst before the fake "boots" it for LaunchDelay+SSHDelay. A build waits
// here for minutes: the work before and after the waits is in functions of
// their own, so the waiting goroutine's stack stays small.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	at := time.Now()
	c.mu.Lock()
	onLaunch := c.onLaunch
	c.mu.Unlock()
	if onLaunch != nil {
		onLaunch(req.Build, at)
	}
	log := logger(req.Log)
	id, err := c.create(ctx, &req, inst, log)
	if err != nil {
		return err
	}
	if err := c.waitRunning(ctx, id); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, c.opts.SSHDelay); err != nil {
		return err
	}
	c.running(id, inst, log)
	return nil
}

// create makes the key pair and the server, and returns the server's id.
func (c *Cloud) create(ctx context.Context, req *clouds.LaunchRequest, inst *clouds.Instance, log *slog.Logger) (string, error) {
	if inst.Build == "" {
		inst.Build = req.Build
	}
	switch {
	case req.Build == "":
		return "", clouds.Errorf(clouds.KindInvalid, "launch server", "no build id")
	case req.Image == "":
		return "", clouds.Errorf(clouds.KindInvalid, "launch server", "no base image")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if !c.knowsImage(req.Image) {
		return "", &clouds.Error{Kind: clouds.KindNotFound, Op: "launch server", Code: "ImageNotFound",
			Err: fmt.Errorf("base image %q does not exist", req.Image), Hint: "check the image id in the generator spec"}
	}
	name := req.Name
	if name == "" {
		name = "imagegen-" + req.Build
	}
	tags := map[string]string{clouds.TagBuild: req.Build}

	var kp *resource
	err := c.api(ctx, OpImportKey, func() error {
		kp = c.createLocked(clouds.KindKeyPair, "kp", name, req.Build, tags, stateActive, time.Time{})
		return nil
	})
	if err != nil {
		return "", err
	}
	inst.Add(kp.Resource)
	log.Info("simulated cloud: key pair created", "key_pair", kp.ID)

	stags := maps.Clone(req.Tags)
	if stags == nil {
		stags = map[string]string{}
	}
	stags[clouds.TagBuild] = req.Build
	var srv *resource
	err = c.api(ctx, OpLaunch, func() error {
		srv = c.createLocked(clouds.KindServer, "srv", name, req.Build, stags, stateBuilding, time.Now().Add(c.opts.LaunchDelay))
		return nil
	})
	if err != nil {
		return "", err
	}
	inst.ID = srv.ID
	inst.Add(srv.Resource)
	log.Info("simulated cloud: server created; booting", "server", srv.ID, "image", req.Image, "size", req.Size)
	return srv.ID, nil
}

// running gives the booted server inst its SSH endpoint, if the cloud has one.
func (c *Cloud) running(id string, inst *clouds.Instance, log *slog.Logger) {
	if c.opts.SSH == nil {
		log.Info("simulated cloud: the instance has no SSH endpoint, so the script will not run (configure ssh: to run it on a local sshd)")
		return
	}
	ep := *c.opts.SSH
	ep.HostKeys = slices.Clone(ep.HostKeys)
	inst.SSH = &ep
	log.Info("simulated cloud: server running", "server", id, "ssh", ep.Addr)
}

func (c *Cloud) knowsImage(id string) bool {
	if len(c.opts.BaseImages) == 0 || slices.Contains(c.opts.BaseImages, id) {
		return true
	}
	ok := false
	_ = c.withState(func() error { _, ok = c.imgs()[id]; ok = ok || c.isBaseImageLocked(id); return nil })
	return ok
}

// waitRunning waits until the server has booted, checking its status once
// before the wait (where a fault may hit) and once after.
func (c *Cloud) waitRunning(ctx context.Context, id string) error {
	var readyAt time.Time
	check := func() error {
		r, ok := c.resources[id]
		if !ok {
			return &clouds.Error{Kind: clouds.KindFailed, Op: "wait server", Err: fmt.Errorf("server %s disappeared while booting", id)}
		}
		readyAt = r.readyAt
		return nil
	}
	if err := c.api(ctx, OpWaitRunning, check); err != nil {
		return err
	}
	if err := clouds.Sleep(ctx, time.Until(readyAt)); err != nil {
		return err
	}
	return c.api(ctx, OpWaitRunning, func() error {
		if err := check(); err != nil {
			return err
		}
		if r := c.resources[id]; r.state == stateBuilding {
			r.state = stateActive
		}
		return nil
	})
}
