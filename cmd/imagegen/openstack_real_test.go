package main

// `imagegen build` with the openstack driver against a real Keystone and a
// real Glance (servicetest.StartOpenStack), openstacktest as Nova and Neutron only, and
// the real `openstack` client (python3-openstackclient) reading the same
// clouds.yaml to list what the build left.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// realOpenStack is a region of the real Keystone whose Nova and Neutron are
// a fake beside the real Glance, and a clouds.yaml naming it twice: entry
// "lab" logs in with a password (domain names), "lab-ac" with an
// application credential.
type realOpenStack struct {
	os     *servicetest.OpenStack
	fake   *openstacktest.Fake
	region string
	file   string // clouds.yaml
}

func newRealOpenStack(t *testing.T, o openstacktest.Options) *realOpenStack {
	t.Helper()
	ostack := servicetest.StartOpenStack(t)
	region := ostack.Region(t)
	o.Regions = []string{region}
	o.Real = &openstacktest.Real{KeystoneURL: ostack.KeystoneURL, GlanceURL: ostack.GlanceURL,
		User: "admin", Password: ostack.AdminPassword, Project: "admin"}
	f := openstacktest.New(o)
	t.Cleanup(f.Close)
	ostack.Route(t, region, f.Endpoints(region))
	file := writeFile(t, "clouds.yaml", "clouds:\n"+
		ostack.CloudEntry(t, "lab", region, servicetest.PasswordDomainNames, "")+
		ostack.CloudEntry(t, "lab-ac", region, servicetest.AppCredential, ""))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the services' logs:\n%s", ostack.Logs())
		}
	})
	return &realOpenStack{os: ostack, fake: f, region: region, file: file}
}

// cli runs the real openstack client on the clouds.yaml's entry cloud and
// decodes its JSON output; a failure is an error of the test (cli runs in
// goroutines too).
func (r *realOpenStack) cli(t *testing.T, cloud string, out any, args ...string) {
	t.Helper()
	args = append([]string{"--os-cloud", cloud, "--os-region-name", r.region}, args...)
	args = append(args, "-f", "json")
	cmd := exec.Command(servicetest.OpenStackPython, append([]string{"/usr/bin/openstack"}, args...)...)
	cmd.Env = append(cmd.Environ(), "OS_CLIENT_CONFIG_FILE="+r.file, "HOME="+t.TempDir())
	start := time.Now()
	b, err := cmd.Output()
	t.Logf("openstack %s: %s", strings.Join(args[4:], " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Errorf("openstack %s: %v\n%s", strings.Join(args, " "), err, stderr)
		return
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Errorf("openstack %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// TestBuildOpenStackReal: `imagegen build` on two clouds of one region, one
// logging in with a password, the other with an application credential,
// builds both; the images are in Glance with the provenance; the openstack
// client, on the same clouds.yaml, lists them with their imagegen:*
// properties and nothing else the build made: no server, key pair, security
// group, floating IP or queued image.
func TestBuildOpenStackReal(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/openstack"); err != nil {
		t.Fatal("/usr/bin/openstack not found: install python3-openstackclient (scripts/install-deps.sh test)")
	}
	names := []string{"os-pw", "os-ac"}
	entries := map[string]string{"os-pw": "lab", "os-ac": "lab-ac"}
	sshd := servicetest.StartSSHD(t)
	guests := newOSGuests(t, sshd, names)
	r := newRealOpenStack(t, openstacktest.Options{ConsoleHostKey: guests.hostKeyLine(), OnActive: guests.onActive})
	t.Setenv("OS_CLIENT_CONFIG_FILE", r.file)
	t.Setenv("OS_CLOUD", "")
	t.Setenv("OS_REGION_NAME", "")
	conf := "build: {ssh_timeout: 30s, timeout: 60s, cleanup_timeout: 30s}\nclouds:\n"
	for _, n := range names {
		conf += fmt.Sprintf("  %s: {type: openstack, cloud: %s, network: private, flavor: m1.small, ssh_port: %d, inject_host_key: false, console_timeout: 10s}\n",
			n, entries[n], guests.byCloud[n].port)
	}
	cfgPath := writeFile(t, "imagegen.yaml", conf)
	repo := newGeneratorRepo(t, rendezvousScript(filepath.Join(t.TempDir(), "rendezvous")), sshd.User,
		map[string]string{"os-pw": r.os.BaseImageID, "os-ac": r.os.BaseImageID})

	code, stdout, stderr := runBuildCmd(t, nil, "--config", cfgPath, repo.spec)
	defer logOnFailure(t, stdout, stderr)
	rows := checkOutput(t, code, stdout, stderr, 0, "succeeded", names, []string{"built by imagegen", "met the other build"})
	build := buildID(t, stderr)
	for _, s := range []string{r.os.Password, r.os.AppCredSecret} {
		if strings.Contains(stdout+stderr, s) {
			t.Error("a secret of clouds.yaml is in build's output")
		}
	}

	// Glance, read as the admin.
	made := map[string]servicetest.GlanceImage{}
	for _, im := range r.os.Images(t) {
		if im.Properties[clouds.TagBuild] == build {
			made[im.Properties[clouds.TagCloud]] = im
		}
	}
	for _, n := range names {
		if l := guests.byCloud[n].loginCount(); l == 0 {
			t.Errorf("%s: nobody logged in to the server", n)
		}
		im, ok := made[n]
		if !ok {
			// imagegen:cloud is on servers, not images: find by id.
			for _, x := range r.os.Images(t) {
				if x.ID == rows[n].imageID {
					im, ok = x, true
				}
			}
		}
		if !ok {
			t.Fatalf("%s: Glance has no image %s", n, rows[n].imageID)
		}
		if im.ID != rows[n].imageID || im.Name != rows[n].imageName || im.Status != "active" || im.Owner != r.os.ProjectID {
			t.Errorf("%s: the table says %s %s, Glance holds %+v", n, rows[n].imageID, rows[n].imageName, im)
		}
		checkProvenance(t, n+" image "+im.ID, im.Properties, repo, build, r.os.BaseImageID)
	}
	if v := r.fake.Violations(); len(v) > 0 {
		t.Errorf("ordering violations: %q", v)
	}
	if rj := r.fake.Rejected(); len(rj) > 0 {
		t.Errorf("the fake refused request bodies: %q", rj)
	}

	// The openstack client, logged in as clouds.yaml says. Its calls take
	// seconds each (Python starting), so the independent ones run at once.
	var listed []struct {
		ID, Name, Status string
	}
	r.cli(t, "lab", &listed, "image", "list", "--long", "--property", clouds.TagBuild+"="+build)
	if len(listed) != 2 {
		t.Fatalf("openstack image list --property %s=%s: %+v, want the build's 2 images", clouds.TagBuild, build, listed)
	}
	type shownImage struct {
		ID, Name, Status string
		Properties       map[string]any `json:"properties"`
	}
	shown := make([]shownImage, len(listed))
	var none [4][]map[string]any
	var groups []struct{ ID, Name string }
	var wg sync.WaitGroup
	for i, l := range listed {
		// Any state: a queued image of the build would be listed too.
		if l.Status != "active" {
			t.Errorf("image %s (%s) is %s", l.ID, l.Name, l.Status)
		}
		wg.Go(func() { r.cli(t, "lab-ac", &shown[i], "image", "show", l.ID) })
	}
	leftovers := [][]string{{"server", "list"}, {"keypair", "list"}, {"floating", "ip", "list"}, {"image", "list", "--status", "queued"}}
	for i, what := range leftovers {
		wg.Go(func() { r.cli(t, "lab", &none[i], what...) })
	}
	wg.Go(func() { r.cli(t, "lab", &groups, "security", "group", "list") })
	wg.Wait()
	for _, im := range shown {
		tags := map[string]string{}
		for k, v := range im.Properties {
			if s, ok := v.(string); ok && strings.HasPrefix(k, "imagegen:") {
				tags[k] = s
			}
		}
		t.Logf("openstack image show %s: %s %s %v", im.ID, im.Name, im.Status, tags)
		checkProvenance(t, "openstack image show "+im.ID, tags, repo, build, r.os.BaseImageID)
	}
	for i, what := range leftovers {
		if len(none[i]) != 0 {
			t.Errorf("openstack %s: %v, want nothing left", strings.Join(what, " "), none[i])
		}
	}
	for _, g := range groups {
		if strings.Contains(g.Name, build) || strings.HasPrefix(g.Name, "imagegen") {
			t.Errorf("security group %s left", g.Name)
		}
	}
}
