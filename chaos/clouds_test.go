package chaos

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// The AWS credentials the workers sign with: the fake checks the signature's
// shape, not the key, and the secret scan looks for the secret key.
const (
	awsAccessKey = "AKIACHAOS0000EXAMPLE"
	awsSecretKey = "chaos/aws-secret-key+5e1f2d3c4b5a69788796a5b4"
)

// chaosCloudSet is the run's two clouds, as the test sees them.
type chaosCloudSet struct {
	state string           // the simulated cloud's state file
	sim   *simulated.Cloud // the same cloud, read from the file
	ec2   *ec2test.Fake    // the EC2 API the workers' ec2 driver talks to (through a proxy)
	sshd  *servicetest.SSHD
}

// startClouds starts the fake EC2 endpoint, whose instances are a real sshd
// on 127.0.0.1: the build's key pair is installed on it when an instance runs
// (what cloud-init does), and the console shows the sshd's host key.
func startClouds(t *testing.T, dir string) *chaosCloudSet {
	t.Helper()
	sshd := servicetest.StartSSHD(t)
	state := filepath.Join(dir, "sim-cloud.json")
	f := ec2test.New(ec2test.Options{
		BootDelay: 150 * time.Millisecond, StopDelay: 50 * time.Millisecond, TerminateDelay: 50 * time.Millisecond, ImageDelay: 200 * time.Millisecond,
		PublicIP: "127.0.0.1", ConsoleHostKey: sshd.HostKey,
		InstallKey:  func(k string) { sshd.Authorize(t, k) },
		MaxRequests: 2000,
	})
	t.Cleanup(f.Close)
	return &chaosCloudSet{state: state, sim: simulated.New(simulated.Options{StateFile: state}), ec2: f, sshd: sshd}
}

// config is the clouds: section of the config: the ec2 cloud's API and its
// instances' SSH reached at the proxies' addresses. request_timeout is 15 s
// (default 60 s): each half-open API connection costs a build one of it.
func (c *chaosCloudSet) config(failRate, permRate float64, ec2API, ssh string) string {
	_, sshPort, _ := net.SplitHostPort(ssh)
	return fmt.Sprintf(`  %s: {type: simulated, launch_delay: 60ms, stop_delay: 20ms, snapshot_delay: 120ms, fail_rate: %g, permanent_fail_rate: %g, state_file: %q}
  %s: {type: ec2, region: chaos-1, endpoint: %q, ssh_port: %s, ssh_cidrs: [127.0.0.1/32], inject_host_key: false, poll_interval: 250ms, request_timeout: 15s}
`, simCloud, failRate, permRate, c.state, ec2Cloud, (&url.URL{Scheme: "http", Host: ec2API}).String(), sshPort)
}

// spec is push i's generator: a script that runs about a second on the ec2
// cloud's sshd (long enough for a fault to find it running).
func (c *chaosCloudSet) spec(i int) string {
	return fmt.Sprintf("script: |\n  echo chaos %d\n  sleep 1\n  echo built %d\nclouds:\n  %s: {image: debian-12, ssh_user: debian}\n  %s: {image: %s, ssh_user: %s}\n",
		i, i, simCloud, ec2Cloud, ec2test.BaseImage, c.sshd.User)
}

// env is what serve and the workers need in their environment: credentials
// for the ec2 driver, and no AWS config of the machine's.
func (c *chaosCloudSet) env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + awsAccessKey, "AWS_SECRET_ACCESS_KEY=" + awsSecretKey,
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true",
	}
}

// inFlight are the builds with resources on a cloud now.
func (c *chaosCloudSet) inFlight() map[string]bool {
	out := map[string]bool{}
	for _, r := range append(c.sim.Live(), c.ec2.Live()...) {
		if r.Build != "" {
			out[r.Build] = true
		}
	}
	return out
}

// leftovers lists what the clouds hold that a build left: servers, key
// pairs, security groups, volumes, snapshots of no image, and images no
// build record names (recorded).
func (c *chaosCloudSet) leftovers(recorded map[string]bool) []clouds.Resource {
	out := append(c.sim.Live(), c.ec2.Live()...)
	out = append(out, c.ec2.Volumes()...)
	images := map[string]bool{}
	for _, im := range append(c.sim.Images(), c.ec2.Images()...) {
		images[im.ID] = true
		if !recorded[im.ID] {
			out = append(out, clouds.Resource{Kind: clouds.KindImage, ID: im.ID, Name: im.Name, Build: im.Tags[clouds.TagBuild]})
		}
	}
	owned := map[string]bool{}
	for _, im := range c.ec2.Images() {
		for _, s := range im.Resources {
			owned[s.ID] = true
		}
	}
	for _, s := range c.ec2.Snapshots() {
		if !owned[s.ID] {
			out = append(out, s)
		}
	}
	return out
}
