package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/provenance"
)

// TestTraceAndVerifyThroughDrivers: with no imagegen records at all (no
// Redis, no server), imagegen trace --config reads an image's provenance
// from the cloud's own tags through the OpenStack and EC2 drivers (against
// their fakes), and imagegen verify checks a signed envelope against those
// tags: it passes as tagged, and fails naming imagegen:commit once the tag
// is edited on the cloud.
func TestTraceAndVerifyThroughDrivers(t *testing.T) {
	const (
		commit = "3f786850e387550fdab836ed7e6dc881de23001b"
		build  = "0123456789abcdef"
		digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	)
	tags := func(base string) map[string]string {
		return map[string]string{
			clouds.TagRepo: "fg/images", clouds.TagCommit: commit, clouds.TagGenerator: "dstat",
			clouds.TagScriptSHA: digest, clouds.TagBaseImage: base, clouds.TagBuild: build,
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) (conf, id, base string)
	}{
		{"openstack", func(t *testing.T) (string, string, string) {
			f := openstacktest.New(openstacktest.Options{Regions: []string{"RegionOne"}})
			t.Cleanup(f.Close)
			t.Setenv("OS_CLIENT_CONFIG_FILE", writeFile(t, "clouds.yaml", "clouds:\n  lab:\n    auth:\n"+
				"      auth_url: "+f.AuthURL+"\n      username: demo\n      password: secret\n      project_name: demo\n"+
				"      user_domain_name: Default\n      project_domain_name: Default\n"+
				"    region_name: RegionOne\n    interface: public\n"))
			t.Setenv("OS_CLOUD", "")
			t.Setenv("OS_REGION_NAME", "")
			id := f.AddImage("RegionOne", openstacktest.Image{Name: "dstat-20260301-1200-3f78685", Properties: tags(openstacktest.BaseImageID)})
			return "  os: {type: openstack, cloud: lab, region: RegionOne, network: private, flavor: m1.small}\n", id, openstacktest.BaseImageID
		}},
		{"ec2", func(t *testing.T) (string, string, string) {
			for k, v := range map[string]string{
				"AWS_ACCESS_KEY_ID": ec2KeyID, "AWS_SECRET_ACCESS_KEY": ec2Secret, "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
				"AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_EC2": "",
				"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
				"AWS_EC2_METADATA_DISABLED": "true",
			} {
				t.Setenv(k, v)
			}
			f := ec2test.New(ec2test.Options{})
			t.Cleanup(f.Close)
			id := f.AddImage("dstat-20260301-1200-3f78685", "available", tags(ec2test.BaseImage))
			return fmt.Sprintf("  os: {type: ec2, region: us-east-1, endpoint: %q, poll_interval: 50ms}\n", f.URL), id, ec2test.BaseImage
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf, id, base := tc.setup(t)
			cfgPath := writeFile(t, "imagegen.yaml", "clouds:\n"+conf)
			e := &traceEnv{t: t} // the CLI only: no server
			code, out, errOut := e.cli("trace", "--config", cfgPath, "--cloud", "os", id)
			t.Logf("imagegen trace --config FILE --cloud os %s:\n%s", id, out)
			wantOut(t, "trace --config", code, out, errOut, 0, "image              "+id, "repository         fg/images",
				"commit             "+commit, "generator          dstat", "base image         "+base, "build              "+build,
				"provenance sha256  (no imagegen:provenance-sha256 tag)")

			// A statement of the image, signed, its digest put on the image.
			signer, err := provenance.LoadSigner(newKeyFile(t, "provenance.key"))
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			st, err := provenance.NewStatement(provenance.Facts{BuilderID: "https://imagegen.example.org", Repo: "fg/images", Commit: commit,
				Generator: "dstat", Cloud: "os", ImageID: id, ScriptSHA256: digest, BaseImage: base, BuildID: build, Started: t0, Finished: t0.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			envelope, err := signer.Sign(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			envFile := filepath.Join(t.TempDir(), "envelope.json")
			pubFile := filepath.Join(t.TempDir(), "provenance.pub")
			pub, _ := signer.PublicKeyPEM()
			if os.WriteFile(envFile, envelope, 0o600) != nil || os.WriteFile(pubFile, pub, 0o600) != nil {
				t.Fatal("write files")
			}
			tagThrough(t, cfgPath, "os", id, map[string]string{clouds.TagProvenance: provenance.Digest(envelope)})

			verify := func() (int, string, string) {
				return e.cli("verify", "--key", pubFile, "--envelope", envFile, "--config", cfgPath, "--cloud", "os", id)
			}
			code, out, errOut = verify()
			wantOut(t, "verify (as tagged)", code, out, errOut, 0, "ok    tags:")
			tagThrough(t, cfgPath, "os", id, map[string]string{clouds.TagCommit: strings.Repeat("0", 40)})
			code, out, errOut = verify()
			wantOut(t, "verify (commit edited)", code, out, errOut, 1, `FAIL  tag imagegen:commit changed from "`+commit+`" to "`+strings.Repeat("0", 40)+`"`)
		})
	}
}

// tagThrough sets tags on an image through its cloud's driver, as the
// pipeline tags an image with its provenance (and as anyone with access to
// the cloud can).
func tagThrough(t *testing.T, cfgPath, cloud, id string, tags map[string]string) {
	t.Helper()
	cfg, err := config.Load(cfgPath, registry())
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Clouds[cloud].Open(context.Background(), clouds.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(clouds.ImageTagger).TagImage(context.Background(), id, tags); err != nil {
		t.Fatal(err)
	}
}
