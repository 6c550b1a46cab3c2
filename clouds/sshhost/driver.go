// Package sshhost is cloud type "ssh": an existing machine, reached over SSH with a configured key; it runs the script, makes no image.
// It knows clouds only, not builds, GitHub or Redis, and creates, stops or removes nothing on the machine: it is not imagegen's.
package sshhost

import (
	"context"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
)

// Cloud is a configured machine. It holds no per-build state, so one value
// serves every build.
type Cloud struct {
	addr    string
	user    string
	signer  ssh.Signer
	hostKey string
}

// Open returns the cloud itself: the machine needs no credentials per build.
func (c *Cloud) Open(context.Context, clouds.Credentials) (clouds.Cloud, error) { return c, nil }

// Features reports no image and no power-off (the machine is not ours to stop).
func (c *Cloud) Features() clouds.Features { return clouds.Features{} }

// Launch creates nothing: it says where the machine is and how to log in.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	inst.ID = c.addr
	inst.SSH = &clouds.Endpoint{
		Addr:          c.addr,
		HostKeys:      []string{c.hostKey},
		HostKeySource: clouds.SourceConfig,
		HostKeyPolicy: clouds.HostKeyRequire, // the machine exists: its key is known, never learned
		User:          c.user,
		Signer:        c.signer,
	}
	req.Log.Info("using the existing machine", "addr", c.addr)
	return nil
}

// Stop does nothing: the pipeline never calls it (no images), and the machine is not ours.
func (c *Cloud) Stop(context.Context, *clouds.Instance) error { return nil }

// Snapshot refuses: this cloud makes no images.
func (c *Cloud) Snapshot(context.Context, *clouds.Instance, clouds.SnapshotRequest, *clouds.Image) error {
	return clouds.Errorf(clouds.KindInvalid, "snapshot", "cloud type %s makes no images", Type)
}

// Terminate does nothing: Launch created nothing.
func (c *Cloud) Terminate(context.Context, *clouds.Instance) error { return nil }

// DeleteImage does nothing: there are never images.
func (c *Cloud) DeleteImage(context.Context, *clouds.Image) error { return nil }

// Leftovers is always empty.
func (c *Cloud) Leftovers(context.Context, string) ([]clouds.Resource, error) { return nil, nil }

// Remove does nothing.
func (c *Cloud) Remove(context.Context, clouds.Resource) error { return nil }
