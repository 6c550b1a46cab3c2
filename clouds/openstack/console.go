package openstack

import (
	"context"
	"io"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudinit"
)

// consoleHostKeys reads the console log until cloud-init has printed the host
// keys or ctx ends (images without cloud-init print none); the host_key
// policy sets how long (clouds.HostKeyLookup).
func (c *Cloud) consoleHostKeys(ctx context.Context, id string) ([]string, error) {
	var keys []string
	err := clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
		out, err := servers.ShowConsoleOutput(ctx, c.compute, id, servers.ShowConsoleOutputOpts{}).Extract()
		if err != nil {
			return false, classify("read console", err)
		}
		keys = cloudinit.ConsoleHostKeys(out)
		return len(keys) > 0, nil
	})
	return keys, err
}

func (c *Cloud) copyConsole(ctx context.Context, server *servers.Server, req clouds.LaunchRequest) {
	if req.Console == nil || server == nil {
		return
	}
	out, err := servers.ShowConsoleOutput(ctx, c.compute, server.ID, servers.ShowConsoleOutputOpts{Length: 200}).Extract()
	if err == nil {
		_, _ = io.WriteString(req.Console, out)
	}
}
