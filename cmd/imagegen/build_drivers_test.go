package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// These tests run the real `imagegen build` (config.Load with registry(), the
// drivers, builder.RunAll, the table) against the OpenStack and EC2 fakes, the
// scripts running on a real sshd.

// origin is the generator repository's remote, the images' imagegen:repo.
const origin = "https://github.com/octo/gens.git"

// rendezvousScript succeeds only when the other cloud's script runs at the
// same time: each announces itself in dir and waits (up to 10 s) for the
// other, so builds run one after the other fail.
func rendezvousScript(dir string) string {
	return `echo built by imagegen
d=` + strconv.Quote(dir) + `
mkdir -p "$d" && : > "$d/$$"
end=$(($(date +%s) + 10))
while [ "$(ls "$d" | wc -l)" -lt 2 ]; do
  if [ "$(date +%s)" -ge "$end" ]; then echo "alone: no other build ran meanwhile" >&2; exit 1; fi
  sleep 0.05
done
echo met the other build`
}

const failingScript = "echo about to fail >&2\nexit 3"

// generatorRepo is a git repository with one committed spec, .imagegen/hello.yaml.
type generatorRepo struct {
	dir, spec, commit string
	digest            string // the spec's imagegen:script-sha256
}

// newGeneratorRepo writes spec hello building script on each of clouds (name →
// base image), logging in as user, and commits it with origin as its remote.
func newGeneratorRepo(t *testing.T, script, user string, cloudImages map[string]string) *generatorRepo {
	t.Helper()
	servicetest.Need(t, "git (the build's provenance, imagegen:commit, comes from git)", "git")
	dir := filepath.Join(t.TempDir(), "gens")
	if err := os.MkdirAll(filepath.Join(dir, ".imagegen"), 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("name: hello\nscript: |\n")
	for _, l := range strings.Split(script, "\n") {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("clouds:\n")
	names := make([]string, 0, len(cloudImages))
	for n := range cloudImages {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %s: {image: %s, ssh_user: %s}\n", n, cloudImages[n], user)
	}
	specPath := filepath.Join(dir, ".imagegen", "hello.yaml")
	if err := os.WriteFile(specPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.org"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitRun("init", "-q")
	gitRun("remote", "add", "origin", origin)
	gitRun("add", ".")
	gitRun("commit", "-q", "-m", "hello")
	r := &generatorRepo{dir: dir, spec: specPath, commit: gitRun("rev-parse", "HEAD")}

	// The digest the images must carry, computed by the spec package directly.
	fsys, err := spec.OpenRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := spec.Options{Clouds: map[string]bool{}}
	for _, n := range names {
		opts.Clouds[n] = true
	}
	s, err := spec.Parse(fsys, ".imagegen/hello.yaml", opts)
	if err != nil {
		t.Fatalf("the test's spec: %v", err)
	}
	r.digest = s.Digest
	return r
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tableRow is one line of build's table of results.
type tableRow struct{ state, imageID, imageName string }

// parseTable reads build's stdout: a header, then CLOUD STATE ID NAME
// DURATION, up to the blank line before the drift table.
func parseTable(t *testing.T, stdout string) map[string]tableRow {
	t.Helper()
	table, _, _ := strings.Cut(stdout, "\n\n")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "CLOUD") {
		t.Fatalf("no table on stdout:\n%s", stdout)
	}
	rows := map[string]tableRow{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 5 {
			t.Fatalf("table line %q: want 5 columns", l)
		}
		rows[f[0]] = tableRow{state: f[1], imageID: f[2], imageName: f[3]}
	}
	return rows
}

var buildIDRE = regexp.MustCompile(`\(build (local-[0-9]{8}-[0-9]{6}-[0-9a-f]{8})\)`)

// buildID is the build's id, from the line build prints when it starts.
func buildID(t *testing.T, stderr string) string {
	t.Helper()
	m := buildIDRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no build id on stderr:\n%s", stderr)
	}
	return m[1]
}

func logOnFailure(t *testing.T, stdout, stderr string) {
	if t.Failed() {
		t.Logf("build's stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

// checkOutput checks the exit code, each cloud's row and streamed lines.
func checkOutput(t *testing.T, code int, stdout, stderr string, wantCode int, wantState string, cloudNames, lines []string) map[string]tableRow {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, wantCode, stdout, stderr)
	}
	rows := parseTable(t, stdout)
	if len(rows) != len(cloudNames) {
		t.Errorf("table has %d rows, want %d:\n%s", len(rows), len(cloudNames), stdout)
	}
	for _, c := range cloudNames {
		r, ok := rows[c]
		if !ok {
			t.Errorf("no row for %s:\n%s", c, stdout)
			continue
		}
		if r.state != wantState {
			t.Errorf("%s is %s, want %s\nstderr:\n%s", c, r.state, wantState, stderr)
		}
		if (r.imageID != "-") != (wantState == "succeeded") {
			t.Errorf("%s: image id %q in the table of a build that %s", c, r.imageID, wantState)
		}
		for _, l := range lines {
			if !strings.Contains(stderr, "["+c+"] "+l+"\n") {
				t.Errorf("stderr lacks %q:\n%s", "["+c+"] "+l, stderr)
			}
		}
	}
	if wantState == "succeeded" && len(rows) == 2 {
		ids := []string{}
		for _, r := range rows {
			ids = append(ids, r.imageID)
		}
		if ids[0] == ids[1] {
			t.Errorf("both clouds report image %s", ids[0])
		}
	}
	return rows
}

// checkProvenance compares an image's tags (or properties) with the build's provenance.
func checkProvenance(t *testing.T, what string, tags map[string]string, repo *generatorRepo, build, base string) {
	t.Helper()
	for k, want := range map[string]string{
		clouds.TagRepo: origin, clouds.TagCommit: repo.commit, clouds.TagGenerator: "hello",
		clouds.TagScriptSHA: repo.digest, clouds.TagBaseImage: base, clouds.TagBuild: build,
	} {
		if tags[k] != want {
			t.Errorf("%s: %s = %q, want %q", what, k, tags[k], want)
		}
	}
}

// TestBuildOpenStack: `imagegen build` with two OpenStack clouds, two regions
// of one clouds.yaml entry on the fake, builds both in parallel and reports
// both image ids; a failing script leaves nothing behind.
func TestBuildOpenStack(t *testing.T) {
	regions := map[string]string{"os-one": "RegionOne", "os-two": "RegionTwo"}
	names := []string{"os-one", "os-two"}
	tests := []struct {
		name      string
		script    func(dir string) string
		wantCode  int
		wantState string
		lines     []string // streamed from each cloud
	}{
		{"two regions build in parallel", rendezvousScript, 0, "succeeded", []string{"built by imagegen", "met the other build"}},
		{"script exits 3", func(string) string { return failingScript }, 1, "failed", []string{"about to fail"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sshd := servicetest.StartSSHD(t)
			guests := newOSGuests(t, sshd, names)
			f := openstacktest.New(openstacktest.Options{
				Regions:        []string{"RegionOne", "RegionTwo"},
				ConsoleHostKey: guests.hostKeyLine(),
				OnActive:       guests.onActive,
			})
			t.Cleanup(f.Close)

			t.Setenv("OS_CLIENT_CONFIG_FILE", writeFile(t, "clouds.yaml", "clouds:\n  lab:\n    auth:\n"+
				"      auth_url: "+f.AuthURL+"\n      username: demo\n      password: secret\n      project_name: demo\n"+
				"      user_domain_name: Default\n      project_domain_name: Default\n"+
				"    region_name: RegionOne\n    interface: public\n"))
			t.Setenv("OS_CLOUD", "")
			t.Setenv("OS_REGION_NAME", "")
			conf := "build: {ssh_timeout: 20s, timeout: 60s, cleanup_timeout: 30s}\nclouds:\n"
			for _, n := range names {
				conf += fmt.Sprintf("  %s: {type: openstack, cloud: lab, region: %s, network: private, flavor: m1.small, ssh_port: %d, inject_host_key: false, console_timeout: 10s}\n",
					n, regions[n], guests.byCloud[n].port)
			}
			cfgPath := writeFile(t, "imagegen.yaml", conf)
			repo := newGeneratorRepo(t, tc.script(filepath.Join(t.TempDir(), "rendezvous")), sshd.User,
				map[string]string{"os-one": openstacktest.BaseImageID, "os-two": openstacktest.BaseImageID})

			code, stdout, stderr := runBuildCmd(t, nil, "--config", cfgPath, repo.spec)
			defer logOnFailure(t, stdout, stderr)
			rows := checkOutput(t, code, stdout, stderr, tc.wantCode, tc.wantState, names, tc.lines)
			if tc.wantState == "failed" && !strings.Contains(stderr, "exited with code 3") {
				t.Errorf("stderr does not give the exit code:\n%s", stderr)
			}
			build := buildID(t, stderr)

			for _, n := range names {
				region := regions[n]
				// Each cloud built in its own region, once.
				if c := f.Count(`^POST /` + region + `/compute/v2\.1/servers$`); c != 1 {
					t.Errorf("%s: %d servers created in %s, want 1", n, c, region)
				}
				// The script ran over SSH with the cloud's key pair, pinning the console's host key.
				if l := guests.byCloud[n].loginCount(); l == 0 {
					t.Errorf("%s: nobody logged in to the server", n)
				}
				if s := f.Servers(region); len(s) != 0 {
					t.Errorf("%s: servers left in %s: %+v", n, region, s)
				}
				if k := f.KeyPairs(region); len(k) != 0 {
					t.Errorf("%s: key pairs left in %s: %q", n, region, k)
				}
				if x := f.FloatingIPs(region); len(x) != 0 {
					t.Errorf("%s: floating IPs left in %s: %+v", n, region, x)
				}
				var made []openstacktest.Image
				for _, im := range f.Images(region) {
					if im.ID != openstacktest.BaseImageID {
						made = append(made, im)
					}
				}
				if tc.wantState != "succeeded" {
					if len(made) != 0 {
						t.Errorf("%s: a failed build left images %+v", n, made)
					}
					continue
				}
				if len(made) != 1 {
					t.Fatalf("%s: %d new images in %s, want 1: %+v", n, len(made), region, made)
				}
				im := made[0]
				if im.ID != rows[n].imageID || im.Name != rows[n].imageName || im.Status != "active" {
					t.Errorf("%s: the table says %s %s, %s holds %+v", n, rows[n].imageID, rows[n].imageName, region, im)
				}
				checkProvenance(t, n+" image "+im.ID, im.Properties, repo, build, openstacktest.BaseImageID)
			}
			if r := f.Rejected(); len(r) > 0 {
				t.Errorf("the fake refused request bodies the real API would refuse: %q", r)
			}
			if v := f.Violations(); len(v) > 0 {
				t.Errorf("ordering violations: %q", v)
			}
		})
	}
}

// EC2 test credentials, read by the SDK's default chain from the environment.
const (
	ec2KeyID  = "AKIDIMAGEGENCLI"
	ec2Secret = "imagegen-cli-test-secret-do-not-print"
)

// TestBuildEC2: `imagegen build` with an AWS region and an EC2-compatible
// endpoint (both on fakes) builds both and reports both AMI ids with their
// tags; a failing script leaves nothing behind.
func TestBuildEC2(t *testing.T) {
	regions := map[string]string{"aws-east": "us-east-1", "nimbus": "nimbus"}
	names := []string{"aws-east", "nimbus"}
	tests := []struct {
		name      string
		script    func(dir string) string
		wantCode  int
		wantState string
		lines     []string
	}{
		{"AWS region and EC2-compatible cloud build in parallel", rendezvousScript, 0, "succeeded", []string{"built by imagegen", "met the other build"}},
		{"script exits 3", func(string) string { return failingScript }, 1, "failed", []string{"about to fail"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range map[string]string{
				"AWS_ACCESS_KEY_ID": ec2KeyID, "AWS_SECRET_ACCESS_KEY": ec2Secret, "AWS_SESSION_TOKEN": "",
				"AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_EC2": "",
				// Nothing from the machine's ~/.aws, and no instance metadata service.
				"AWS_CONFIG_FILE": filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(t.TempDir(), "none"),
				"AWS_EC2_METADATA_DISABLED": "true",
			} {
				t.Setenv(k, v)
			}
			sshd := servicetest.StartSSHD(t)
			fakes := map[string]*ec2test.Fake{}
			guests := map[string]*guest{}
			conf := "build: {ssh_timeout: 20s, timeout: 60s, cleanup_timeout: 30s}\nclouds:\n"
			for _, n := range names {
				f := ec2test.New(ec2test.Options{PublicIP: "127.0.0.1"})
				t.Cleanup(f.Close)
				fakes[n] = f
				guests[n] = ec2Guest(t, f, sshd)
				conf += fmt.Sprintf("  %s: {type: ec2, region: %s, endpoint: %q, ssh_port: %d, ssh_cidrs: [127.0.0.1/32], poll_interval: 50ms, console_timeout: 5s, delete_timeout: 20s}\n",
					n, regions[n], f.URL, guests[n].port)
			}
			cfgPath := writeFile(t, "imagegen.yaml", conf)
			repo := newGeneratorRepo(t, tc.script(filepath.Join(t.TempDir(), "rendezvous")), sshd.User,
				map[string]string{"aws-east": ec2test.BaseImage, "nimbus": ec2test.BaseImage})

			code, stdout, stderr := runBuildCmd(t, nil, "--config", cfgPath, repo.spec)
			defer logOnFailure(t, stdout, stderr)
			rows := checkOutput(t, code, stdout, stderr, tc.wantCode, tc.wantState, names, tc.lines)
			if tc.wantState == "failed" && !strings.Contains(stderr, "exited with code 3") {
				t.Errorf("stderr does not give the exit code:\n%s", stderr)
			}
			if strings.Contains(stdout+stderr, ec2Secret) {
				t.Error("the secret access key is in the output")
			}
			build := buildID(t, stderr)

			for _, n := range names {
				f := fakes[n]
				// Each cloud spoke to its own endpoint, signing for its region
				// with the environment's key, and launched once.
				for _, r := range f.Requests() {
					if r.Region != regions[n] || r.AccessKey != ec2KeyID {
						t.Errorf("%s: %s signed for region %q with key %q, want %q with %q", n, r.Action, r.Region, r.AccessKey, regions[n], ec2KeyID)
						break
					}
				}
				if c := f.Calls("RunInstances"); c != 1 {
					t.Errorf("%s: %d RunInstances, want 1", n, c)
				}
				// The script ran over SSH with the key and host key the build
				// passed in the instance's user data.
				if l := guests[n].loginCount(); l == 0 {
					t.Errorf("%s: nobody logged in to the instance", n)
				}
				if live := f.Live(); len(live) != 0 {
					t.Errorf("%s: instances, key pairs or security groups left: %+v", n, live)
				}
				if v := f.Volumes(); len(v) != 0 {
					t.Errorf("%s: volumes left: %+v", n, v)
				}
				if v := f.Violations(); len(v) > 0 {
					t.Errorf("%s: the driver did what EC2 forbids or risks: %q", n, v)
				}
				imgs, snaps := f.Images(), f.Snapshots()
				if tc.wantState != "succeeded" {
					if len(imgs) != 0 || len(snaps) != 0 {
						t.Errorf("%s: a failed build left images %+v and snapshots %+v", n, imgs, snaps)
					}
					continue
				}
				if len(imgs) != 1 {
					t.Fatalf("%s: %d AMIs, want 1: %+v", n, len(imgs), imgs)
				}
				im := imgs[0]
				if im.ID != rows[n].imageID || im.Name != rows[n].imageName || !strings.HasPrefix(im.ID, "ami-") {
					t.Errorf("%s: the table says %s %s, the cloud holds %s %s", n, rows[n].imageID, rows[n].imageName, im.ID, im.Name)
				}
				checkProvenance(t, n+" AMI "+im.ID, im.Tags, repo, build, ec2test.BaseImage)
				// Only the image's own snapshots remain.
				var own []string
				for _, r := range im.Resources {
					own = append(own, r.ID)
				}
				var left []string
				for _, s := range snaps {
					left = append(left, s.ID)
				}
				slices.Sort(own)
				slices.Sort(left)
				if len(own) == 0 || !slices.Equal(own, left) {
					t.Errorf("%s: snapshots %q, the AMI's %q", n, left, own)
				}
			}
		})
	}
}

// guest stands in for the SSH server of a build's VM once cloud-init has run:
// it answers on its own port with the host key and authorized keys that setup
// says the VM has, and carries every session through to the real sshd, which
// runs the commands. Two things differ from the bare sshd: each guest has a
// host key of its own (the ec2 driver pins the build's generated one, which
// the sshd cannot take), and each keeps the build's scripts in a directory of
// its own, as VMs have their own /tmp: the pipeline uploads the script to
// /tmp/imagegen-<build>.sh on every cloud of the build, and here all the
// "VMs" are this one machine.
type guest struct {
	t     *testing.T
	up    *servicetest.SSHD
	setup func() (*ssh.ServerConfig, error)
	ln    net.Listener
	port  int
	tmp   string

	mu     sync.Mutex
	logins int
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startGuest(t *testing.T, up *servicetest.SSHD, setup func() (*ssh.ServerConfig, error)) *guest {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{t: t, up: up, setup: setup, ln: ln, port: ln.Addr().(*net.TCPAddr).Port, tmp: t.TempDir()}
	g.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.conns = append(g.conns, c)
			g.mu.Unlock()
			g.wg.Go(func() { g.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
		g.wg.Wait()
	})
	return g
}

func (g *guest) loginCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.logins
}

// serverConfig lets in user with one of keys, presenting hostKey.
func serverConfig(user string, hostKey ssh.Signer, keys []ssh.PublicKey) *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() != user {
				return nil, fmt.Errorf("user %s: cloud-init set up %s", c.User(), user)
			}
			for _, k := range keys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return nil, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(hostKey)
	return cfg
}

func (g *guest) serve(conn net.Conn) {
	defer conn.Close()
	cfg, err := g.setup()
	if err != nil {
		// Like a VM still booting: the client retries.
		g.t.Logf("guest :%d: %v", g.port, err)
		return
	}
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		g.t.Logf("guest :%d: handshake: %v", g.port, err)
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	up, err := ssh.Dial("tcp", g.up.Addr, g.up.ClientConfig())
	if err != nil {
		g.t.Errorf("guest :%d: the real sshd: %v", g.port, err)
		return
	}
	defer up.Close()
	g.mu.Lock()
	g.logins++
	g.mu.Unlock()
	var wg sync.WaitGroup
	for nc := range chans {
		wg.Go(func() { g.relay(nc, up) })
	}
	wg.Wait()
}

// relay carries one channel (a session) to the real sshd and back: data,
// stderr, EOFs and requests both ways (exec, signal, exit-status).
func (g *guest) relay(nc ssh.NewChannel, up *ssh.Client) {
	uch, ureqs, err := up.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		uch.Close()
		return
	}
	go func() {
		for r := range reqs {
			payload := r.Payload
			if r.Type == "exec" {
				var m struct{ Command string }
				if err := ssh.Unmarshal(payload, &m); err == nil {
					m.Command = strings.ReplaceAll(m.Command, "/tmp/imagegen-", g.tmp+"/imagegen-")
					payload = ssh.Marshal(&m)
				}
			}
			ok, err := uch.SendRequest(r.Type, r.WantReply, payload)
			if r.WantReply {
				_ = r.Reply(ok && err == nil, nil)
			}
		}
		uch.Close()
	}()
	go func() {
		_, _ = io.Copy(uch, ch)
		_ = uch.CloseWrite()
	}()
	var out sync.WaitGroup
	out.Go(func() { _, _ = io.Copy(ch, uch) })
	out.Go(func() { _, _ = io.Copy(ch.Stderr(), uch.Stderr()) })
	out.Wait()
	_ = ch.CloseWrite()
	// exit-status and exit-signal come after the output, before the close.
	for r := range ureqs {
		ok, err := ch.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			_ = r.Reply(ok && err == nil, nil)
		}
	}
	ch.Close()
}

// ec2Guest is an EC2 instance of f after cloud-init: the host key and the
// authorized key are those the build put in the one live instance's user data.
func ec2Guest(t *testing.T, f *ec2test.Fake, up *servicetest.SSHD) *guest {
	return startGuest(t, up, func() (*ssh.ServerConfig, error) {
		var ids []string
		for _, r := range f.Live() {
			if r.Kind == clouds.KindServer {
				ids = append(ids, r.ID)
			}
		}
		if len(ids) != 1 {
			return nil, fmt.Errorf("%d instances running, want 1", len(ids))
		}
		ud := f.UserData(ids[0])
		body, ok := strings.CutPrefix(ud, "#cloud-config\n")
		if !ok {
			return nil, fmt.Errorf("instance %s: user data is no cloud-config: %q", ids[0], ud)
		}
		var ci struct {
			AuthorizedKeys []string          `yaml:"ssh_authorized_keys"`
			Keys           map[string]string `yaml:"ssh_keys"`
		}
		if err := yaml.Unmarshal([]byte(body), &ci); err != nil {
			return nil, fmt.Errorf("instance %s: user data: %w", ids[0], err)
		}
		hostKey, err := ssh.ParsePrivateKey([]byte(ci.Keys["ed25519_private"]))
		if err != nil {
			return nil, fmt.Errorf("instance %s: no ed25519 host key in the user data: %w", ids[0], err)
		}
		var keys []ssh.PublicKey
		for _, k := range ci.AuthorizedKeys {
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				return nil, fmt.Errorf("instance %s: authorized key %q: %w", ids[0], k, err)
			}
			keys = append(keys, pk)
		}
		return serverConfig(up.User, hostKey, keys), nil
	})
}

// osGuests are the OpenStack servers of clouds after cloud-init: each has the
// key pair of its cloud's server (from the fake's OnActive, routed by the
// server's imagegen:cloud metadata) and hostKey, which the fake prints on
// the console (inject_host_key: false).
type osGuests struct {
	hostKey ssh.Signer
	mu      sync.Mutex
	keys    map[string][]ssh.PublicKey // by cloud
	byCloud map[string]*guest
}

func newOSGuests(t *testing.T, up *servicetest.SSHD, cloudNames []string) *osGuests {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	o := &osGuests{hostKey: hk, keys: map[string][]ssh.PublicKey{}, byCloud: map[string]*guest{}}
	for _, n := range cloudNames {
		o.byCloud[n] = startGuest(t, up, func() (*ssh.ServerConfig, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if len(o.keys[n]) == 0 {
				return nil, fmt.Errorf("no server of %s is active yet", n)
			}
			return serverConfig(up.User, hk, slices.Clone(o.keys[n])), nil
		})
	}
	return o
}

// hostKeyLine is the host key as the console prints it.
func (o *osGuests) hostKeyLine() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(o.hostKey.PublicKey())))
}

// onActive is openstacktest's OnActive: cloud-init installs the key pair.
func (o *osGuests) onActive(s openstacktest.Server, pub string) {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return // the guest then refuses the build, which fails
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := s.Metadata[clouds.TagCloud]
	o.keys[c] = append(o.keys[c], pk)
}
