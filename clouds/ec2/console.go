package ec2

import (
	"context"
	"encoding/base64"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudinit"
)

func (c *Cloud) copyConsole(ctx context.Context, id string, w io.Writer) {
	if w == nil {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	out, err := c.api.GetConsoleOutput(lctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
	if err != nil || out.Output == nil {
		return
	}
	if b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output)); err == nil {
		_, _ = w.Write(b)
	}
}

// consoleHostKeys reads the console until cloud-init has printed the host
// keys or ctx ends (images without cloud-init print none); the host_key
// policy sets how long (clouds.HostKeyLookup).
func (c *Cloud) consoleHostKeys(ctx context.Context, id string) ([]string, error) {
	var keys []string
	what := "read host keys from the console of " + id
	err := clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
		out, err := c.api.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
		if err != nil {
			return false, classify(what, err)
		}
		b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
		if err != nil {
			return false, nil //nolint:nilerr // a console not yet written (or garbled) is read again at the next poll
		}
		keys = cloudinit.ConsoleHostKeys(string(b))
		return len(keys) > 0, nil
	})
	return keys, err
}
