package ec2_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// Test credentials: the fake checks only that requests are signed with them.
const (
	testKeyID  = "AKIDIMAGEGENTEST"
	testSecret = "imagegen-test-secret-key-do-not-log"
)

// fastOpts make every wait in the driver take milliseconds.
func fastOpts() ec2.Options {
	return ec2.Options{
		Poll:         clouds.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 1.5},
		Retry:        clouds.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Factor: 1.5, Attempts: 6},
		MaxBackoff:   5 * time.Millisecond,
		NoRetryQuota: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""),
	}
}

func newFake(t *testing.T, opts ec2test.Options) *ec2test.Fake {
	t.Helper()
	f := ec2test.New(opts)
	t.Cleanup(f.Close)
	return f
}

// testConfig points a config at the fake with short timeouts.
func testConfig(f *ec2test.Fake, cfg ec2.Config) ec2.Config {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	cfg.Endpoint = f.URL
	if len(cfg.SSHCIDRs) == 0 && len(cfg.SecurityGroupIDs) == 0 && cfg.CheckIPURL == "" {
		cfg.SSHCIDRs = []string{"127.0.0.1/32"}
	}
	if cfg.ConsoleTimeout == 0 {
		cfg.ConsoleTimeout = 2 * time.Second
	}
	if cfg.DeleteTimeout == 0 {
		cfg.DeleteTimeout = 10 * time.Second
	}
	return cfg
}

func open(t *testing.T, f *ec2test.Fake, cfg ec2.Config) clouds.Cloud {
	t.Helper()
	return openWith(t, f, cfg, fastOpts())
}

func openWith(t *testing.T, f *ec2test.Fake, cfg ec2.Config, opts ec2.Options) clouds.Cloud {
	t.Helper()
	o, err := ec2.New("test-ec2", testConfig(f, cfg), false, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c, err := o.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return c
}

func launchReq(t *testing.T, build string) (clouds.LaunchRequest, *servicetest.Buffer) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spub, _ := ssh.NewPublicKey(pub)
	hpub, hpriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(hpriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hspub, _ := ssh.NewPublicKey(hpub)
	logs := &servicetest.Buffer{}
	return clouds.LaunchRequest{
		Build:         build,
		Name:          "imagegen-" + build,
		Image:         ec2test.BaseImage,
		User:          "ubuntu",
		AuthorizedKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))),
		HostKey: clouds.HostKey{
			PrivatePEM: secret.New(string(pem.EncodeToMemory(block))),
			Public:     strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hspub))),
		},
		Tags: map[string]string{clouds.TagBuild: build, clouds.TagGenerator: "dstat", clouds.TagImageName: "dstat-" + build},
		Log:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

func snapReq(build string, log *slog.Logger) clouds.SnapshotRequest {
	return clouds.SnapshotRequest{
		Name: "dstat-20261123-2100-" + build,
		Tags: map[string]string{
			clouds.TagBuild: build, clouds.TagRepo: "lab/images", clouds.TagCommit: "0123456789abcdef0123456789abcdef01234567",
			clouds.TagGenerator: "dstat", clouds.TagScriptSHA: strings.Repeat("cd", 32), clouds.TagBaseImage: ec2test.BaseImage,
		},
		Log: log,
	}
}

// assertClean fails when the fake holds anything of the build: instance, key
// pair, security group, volume, image or snapshot.
func assertClean(t *testing.T, f *ec2test.Fake, build string) {
	t.Helper()
	var left []clouds.Resource
	for _, rs := range [][]clouds.Resource{f.Live(), f.Volumes(), f.Snapshots()} {
		for _, r := range rs {
			if r.Build == build {
				left = append(left, r)
			}
		}
	}
	for _, im := range f.Images() {
		if im.Tags[clouds.TagBuild] == build {
			left = append(left, clouds.Resource{Kind: clouds.KindImage, ID: im.ID})
		}
	}
	if len(left) > 0 {
		t.Errorf("build %s left %v", build, left)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Errorf("the driver did what EC2 forbids or risks: %q", v)
	}
}

func terminate(t *testing.T, c clouds.Cloud, inst *clouds.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Terminate(ctx, inst); err != nil {
		t.Errorf("Terminate: %v", err)
	}
}

func deleteImage(t *testing.T, c clouds.Cloud, img *clouds.Image) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.DeleteImage(ctx, img); err != nil {
		t.Errorf("DeleteImage: %v", err)
	}
}

func hasAction(f *ec2test.Fake, action string) bool {
	return slices.ContainsFunc(f.Requests(), func(r ec2test.Request) bool { return r.Action == action })
}
