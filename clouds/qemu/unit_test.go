package qemu

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/servicetest"
)

func configure(text string) (*Cloud, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, err
	}
	op, err := Configure(clouds.Config{Name: "local", Type: Type, Node: doc.Content[0], File: "imagegen.yaml"})
	if err != nil {
		return nil, err
	}
	return op.(*Cloud), nil
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", yaml: "{type: qemu, dir: /var/lib/imagegen}", check: func(t *testing.T, c config) {
			if c.Memory != 1024 || c.CPUs != 1 || c.Accel != "auto" || c.QEMU != "qemu-system-x86_64" ||
				c.BootTimeout != DefaultBootTimeout || c.ShutdownTimeout != DefaultShutdownTimeout {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "all keys", yaml: "{type: qemu, dir: /d, memory: 2048, cpus: 2, accel: tcg, qemu: /opt/q, qemu_img: /opt/qi, boot_timeout: 90s, shutdown_timeout: 10s}", check: func(t *testing.T, c config) {
			if c.Memory != 2048 || c.CPUs != 2 || c.Accel != "tcg" || c.QEMU != "/opt/q" || c.QEMUImg != "/opt/qi" || c.BootTimeout != 90*time.Second || c.ShutdownTimeout != 10*time.Second {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "relative dir made absolute", yaml: "{type: qemu, dir: images}", check: func(t *testing.T, c config) {
			if !filepath.IsAbs(c.Dir) || filepath.Base(c.Dir) != "images" {
				t.Errorf("dir = %q", c.Dir)
			}
		}},
		{name: "no dir", yaml: "{type: qemu}", wantErr: "dir is required"},
		{name: "unknown key", yaml: "{type: qemu, dir: /d, memroy: 5}", wantErr: `imagegen.yaml:1:23: cloud "local": unknown key "memroy"`},
		{name: "bad accel", yaml: "{type: qemu, dir: /d, accel: hvf}", wantErr: `accel "hvf"`},
		{name: "tiny memory", yaml: "{type: qemu, dir: /d, memory: 8}", wantErr: "memory 8"},
		{name: "bad cpus", yaml: "{type: qemu, dir: /d, cpus: -1}", wantErr: "cpus -1"},
		{name: "bad duration", yaml: "{type: qemu, dir: /d, boot_timeout: soon}", wantErr: "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := configure(tt.yaml)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Configure = %v; want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c.cfg)
			if f := c.Features(); !f.Images || !f.PoweroffOverSSH {
				t.Errorf("Features = %+v", f)
			}
		})
	}
}

func TestSeedFiles(t *testing.T) {
	k := newKeys(t)
	tests := []struct {
		user      string
		wantUsers bool
	}{
		{user: "root"},
		{user: "ubuntu"},
		{user: "builder", wantUsers: true},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			req := clouds.LaunchRequest{User: tt.user, AuthorizedKey: k.authorized + "\n", HostKey: k.hostKey}
			ud, md, err := seedFiles(req, "imagegen-b1-gen")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(ud), "#cloud-config\n") {
				t.Errorf("user-data does not start with #cloud-config:\n%s", ud)
			}
			var got struct {
				DisableRoot bool              `yaml:"disable_root"`
				SSHKeys     map[string]string `yaml:"ssh_keys"`
				Keys        []string          `yaml:"ssh_authorized_keys"`
				Users       []any             `yaml:"users"`
			}
			if err := yaml.Unmarshal(ud, &got); err != nil {
				t.Fatal(err)
			}
			if got.SSHKeys["ed25519_private"] != k.hostKey.PrivatePEM.Reveal() || got.SSHKeys["ed25519_public"] != k.hostKey.Public {
				t.Errorf("ssh_keys = %v", got.SSHKeys)
			}
			if len(got.Keys) != 1 || got.Keys[0] != k.authorized || got.DisableRoot {
				t.Errorf("ssh_authorized_keys = %q, disable_root = %v", got.Keys, got.DisableRoot)
			}
			if (len(got.Users) > 0) != tt.wantUsers {
				t.Errorf("users = %v; want a users entry: %v", got.Users, tt.wantUsers)
			}
			if tt.wantUsers && !strings.Contains(string(ud), "name: builder") {
				t.Errorf("no user builder in:\n%s", ud)
			}
			var meta map[string]string
			if err := yaml.Unmarshal(md, &meta); err != nil || meta["instance-id"] != "imagegen-b1-gen" || meta["local-hostname"] != "imagegen-b1-gen" {
				t.Errorf("meta-data = %v, %v", meta, err)
			}
		})
	}
	_, _, err := seedFiles(clouds.LaunchRequest{HostKey: clouds.HostKey{PrivatePEM: secret.New("x"), Public: "ssh-dss AAAA"}}, "i")
	if clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("a DSA host key: %v; want an invalid-request error", err)
	}
}

// TestSeedISO checks the seed with util-linux's blkid, the probe cloud-init
// uses to find the NoCloud volume; the QEMU tests check a kernel mounts it.
func TestSeedISO(t *testing.T) {
	blkid, err := exec.LookPath("blkid")
	if err != nil {
		servicetest.Need(t, "blkid (Debian package util-linux)", "blkid")
	}
	files := []isoFile{{Name: "user-data", Data: []byte("#cloud-config\n")}, {Name: "meta-data", Data: []byte(strings.Repeat("x", 5000))}}
	iso, err := buildISO(SeedLabel, files, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if len(iso)%sectorSize != 0 || len(iso) != (dataSector+1+3)*sectorSize {
		t.Errorf("image is %d bytes; want %d sectors", len(iso), dataSector+4)
	}
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := os.WriteFile(p, iso, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(blkid, "-p", "-o", "export", p).CombinedOutput()
	if err != nil {
		t.Fatalf("blkid: %v\n%s", err, out)
	}
	for _, want := range []string{"LABEL=cidata", "TYPE=iso9660"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("blkid says:\n%s\nwant %s", out, want)
		}
	}
	// The files sit in name order (META-DATA;1 before USER-DATA;1), each from a sector boundary.
	for _, f := range []struct {
		sector int
		data   []byte
	}{{dataSector, files[1].Data}, {dataSector + 3, files[0].Data}} {
		at := f.sector * sectorSize
		if got := string(iso[at : at+len(f.data)]); got != string(f.data) {
			t.Errorf("sector %d holds %.20q, want %.20q", f.sector, got, f.data)
		}
	}
}

func TestResolveImage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("deb.qcow2", "QFI\xfb....")
	write("deb.boot.json", `{"kernel": "k/vmlinuz", "initrd": "/abs/initrd", "append": "root=/dev/vda"}`)
	write("plain.img", "raw bytes")
	write("bad.raw", "x")
	write("bad.boot.json", `{"kernal": "typo"}`)
	tests := []struct {
		image    string
		wantDisk string
		wantBoot *BootConfig
		wantKind clouds.Kind
	}{
		{image: "deb", wantDisk: "deb.qcow2", wantBoot: &BootConfig{Kernel: filepath.Join(dir, "k", "vmlinuz"), Initrd: "/abs/initrd", Append: "root=/dev/vda"}},
		{image: "deb.qcow2", wantDisk: "deb.qcow2", wantBoot: &BootConfig{Kernel: filepath.Join(dir, "k", "vmlinuz"), Initrd: "/abs/initrd", Append: "root=/dev/vda"}},
		{image: filepath.Join(dir, "plain.img"), wantDisk: "plain.img"},
		{image: "./plain.img", wantDisk: "plain.img"},
		{image: "plain", wantDisk: "plain.img"},
		{image: "bad", wantKind: clouds.KindInvalid},
		{image: "missing", wantKind: clouds.KindNotFound},
		{image: "deb.boot.json", wantKind: clouds.KindNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			disk, boot, err := resolveImage(dir, tt.image)
			if tt.wantKind != "" {
				if clouds.KindOf(err) != tt.wantKind {
					t.Fatalf("resolveImage = %q, %v; want kind %s", disk, err, tt.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(disk) != tt.wantDisk {
				t.Errorf("disk = %s, want %s", disk, tt.wantDisk)
			}
			if (boot == nil) != (tt.wantBoot == nil) || (boot != nil && *boot != *tt.wantBoot) {
				t.Errorf("boot = %+v, want %+v", boot, tt.wantBoot)
			}
		})
	}
	for file, want := range map[string]string{"deb.qcow2": "qcow2", "plain.img": "raw"} {
		if got, err := diskFormat(filepath.Join(dir, file)); err != nil || got != want {
			t.Errorf("diskFormat(%s) = %q, %v; want %s", file, got, err, want)
		}
	}
}

func TestListImagesAndDeleteImage(t *testing.T) {
	dir := t.TempDir()
	c, err := configure("{type: qemu, dir: " + dir + "}")
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, created time.Time, disk bool) {
		if disk {
			if err := os.WriteFile(filepath.Join(dir, name+".qcow2"), []byte("QFI\xfb"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, _ := json.Marshal(Provenance{Name: name, Disk: name + ".qcow2", Created: created, Tags: map[string]string{clouds.TagGenerator: name}})
		if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	put("old", t0, true)
	put("new", t0.Add(time.Hour), true)
	put("nodisk", t0.Add(2*time.Hour), false)
	if err := os.WriteFile(filepath.Join(dir, "base.boot.json"), []byte(`{"kernel":"k"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other.json"), []byte(`[1,2]`), 0o644); err != nil {
		t.Fatal(err)
	}
	imgs, err := ListImages(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range imgs {
		names = append(names, im.Name)
	}
	if strings.Join(names, ",") != "new,old" || imgs[0].Tags[clouds.TagGenerator] != "new" || imgs[0].Location != filepath.Join(dir, "new.qcow2") {
		t.Fatalf("ListImages = %+v; want new, old", imgs)
	}
	for range 2 {
		if err := c.DeleteImage(context.Background(), &imgs[0]); err != nil {
			t.Fatalf("DeleteImage: %v", err)
		}
	}
	if imgs, _ := ListImages(dir); len(imgs) != 1 || imgs[0].Name != "old" {
		t.Errorf("after DeleteImage: %+v", imgs)
	}
	if err := c.DeleteImage(context.Background(), &clouds.Image{ID: "x", Location: "/etc/passwd"}); clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("DeleteImage outside dir = %v; want refused", err)
	}
}

func TestRemoveRefusesForeignResources(t *testing.T) {
	dir := t.TempDir()
	c, err := configure("{type: qemu, dir: " + dir + "}")
	if err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(dir, "base.qcow2")
	if err := os.WriteFile(outside, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []clouds.Resource{
		{Kind: clouds.KindFile, ID: outside},
		{Kind: clouds.KindFile, ID: filepath.Join(dir, "work")},
		{Kind: clouds.KindFile, ID: filepath.Join(dir, "work", "..", "base.qcow2")},
		{Kind: clouds.KindServer, ID: "1:0"},
		{Kind: clouds.KindServer, ID: "garbage"},
		{Kind: "bucket", ID: "x"},
	}
	for _, r := range tests {
		if err := c.Remove(context.Background(), r); clouds.KindOf(err) != clouds.KindInvalid {
			t.Errorf("Remove(%+v) = %v; want refused", r, err)
		}
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("a file outside dir/work was touched: %v", err)
	}
	// A process that is gone (or never was ours) is success: Remove is idempotent.
	if err := c.Remove(context.Background(), clouds.Resource{Kind: clouds.KindServer, ID: "999999999:1"}); err != nil {
		t.Errorf("Remove of a gone process: %v", err)
	}
	if _, err := c.Leftovers(context.Background(), "../etc"); clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("Leftovers with a path for a build id = %v; want refused", err)
	}
}

func TestLaunchRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	c, err := configure("{type: qemu, dir: " + dir + "}")
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	tests := []struct {
		name    string
		req     clouds.LaunchRequest
		kind    clouds.Kind
		wantErr string
	}{
		{"build id with a slash", clouds.LaunchRequest{Build: "../x", Name: "n", Image: "i", HostKey: k.hostKey}, clouds.KindInvalid, ""},
		{"no such image", clouds.LaunchRequest{Build: "b", Name: "n", Image: "nope", HostKey: k.hostKey}, clouds.KindNotFound, ""},
		// The seed's key is all imagegen could pin: qemu is always host_key: require.
		{"no host key to inject", clouds.LaunchRequest{Build: "b", Name: "n", Image: "nope"}, clouds.KindInvalid,
			"launch: invalid: no SSH host key: the build brought no host key to put in the guest's seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Log = testLog(t)
			var inst clouds.Instance
			err := c.Launch(context.Background(), tt.req, &inst)
			if clouds.KindOf(err) != tt.kind {
				t.Errorf("Launch = %v; want kind %s", err, tt.kind)
			}
			if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Errorf("Launch = %v; want %q", err, tt.wantErr)
			}
			if len(inst.Resources) != 0 {
				t.Errorf("a refused Launch recorded %+v", inst.Resources)
			}
		})
	}
	if err := os.WriteFile(filepath.Join(dir, "img.raw"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var inst clouds.Instance
	err = c.Launch(context.Background(), clouds.LaunchRequest{Build: "b", Name: "n", Image: "img", Size: "lots", HostKey: k.hostKey, Log: testLog(t)}, &inst)
	if clouds.KindOf(err) != clouds.KindInvalid || !strings.Contains(err.Error(), "MiB") {
		t.Errorf("Launch with size lots = %v; want invalid", err)
	}
}

func TestProcIDs(t *testing.T) {
	start, zombie, err := procStart(os.Getpid())
	if err != nil || zombie || start == 0 {
		t.Fatalf("procStart(self) = %d, %v, %v", start, zombie, err)
	}
	id := procID(os.Getpid(), start)
	pid, st, err := parseProcID(id)
	if err != nil || pid != os.Getpid() || st != start || !alive(pid, st) {
		t.Fatalf("parseProcID(%q) = %d, %d, %v", id, pid, st, err)
	}
	if alive(pid, st+1) {
		t.Error("a different start time matched: a recycled pid would be killed")
	}
	for _, bad := range []string{"", "12", "x:1", "1:1", "12:y"} {
		if _, _, err := parseProcID(bad); err == nil {
			t.Errorf("parseProcID(%q) accepted", bad)
		}
	}
}

// TestSeedUserDataIsValidCloudConfig checks the user-data with cloud-init's
// own schema validator, for the users stock Ubuntu and Debian images have and
// for one they lack.
func TestSeedUserDataIsValidCloudConfig(t *testing.T) {
	ci, err := exec.LookPath("cloud-init")
	if err != nil {
		servicetest.Need(t, "cloud-init's schema validator (Debian package cloud-init)", "cloud-init")
	}
	k := newKeys(t)
	for _, user := range []string{"ubuntu", "root", "builder"} {
		t.Run(user, func(t *testing.T) {
			ud, _, err := seedFiles(clouds.LaunchRequest{User: user, AuthorizedKey: k.authorized, HostKey: k.hostKey}, "imagegen-b-n")
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "user-data")
			if err := os.WriteFile(p, ud, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(ci, "schema", "--config-file", p).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
				t.Errorf("cloud-init schema: %v\n%s", err, out)
			}
		})
	}
}

// TestSnapshotFiles converts an overlay (made with qemu-img, no VM needed)
// and checks the files a snapshot leaves: the image, the boot sidecar carried
// over with paths relative to the new image, the provenance; a second
// snapshot under the same name is refused and leaves the first alone.
func TestSnapshotFiles(t *testing.T) {
	needQEMU(t)
	dir := t.TempDir()
	c, err := configure("{type: qemu, dir: " + dir + "}")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "kernels"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base.boot.json"), []byte(`{"kernel": "kernels/vmlinuz", "append": "root=/dev/vda"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work", "b1", "vm")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(work, overlayFile)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", filepath.Join(dir, "base.raw"), overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	inst := &clouds.Instance{Build: "b1", ID: "b1/vm"}
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: work, Name: resWorkDir})
	inst.Add(clouds.Resource{Kind: clouds.KindFile, ID: overlay, Name: resOverlay})
	req := clouds.SnapshotRequest{Name: "gen-20260101-0000-abcdef0", Tags: map[string]string{clouds.TagCommit: "abcdef0"}, Log: testLog(t)}

	var img clouds.Image
	if err := c.Snapshot(context.Background(), inst, req, &img); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if img.ID != req.Name || img.Location != filepath.Join(dir, req.Name+".qcow2") {
		t.Errorf("image = %+v", img)
	}
	if f, err := diskFormat(img.Location); err != nil || f != "qcow2" {
		t.Errorf("the image is %q (%v), want qcow2", f, err)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", img.Location).Output()
	if err != nil || strings.Contains(string(out), "backing-filename") {
		t.Errorf("the image is not standalone (%v):\n%s", err, out)
	}
	_, boot, err := resolveImage(dir, req.Name)
	if err != nil || boot == nil || boot.Kernel != filepath.Join(dir, "kernels", "vmlinuz") || boot.Append != "root=/dev/vda" {
		t.Errorf("the image's boot sidecar = %+v, %v", boot, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, req.Name+".boot.json")); !strings.Contains(string(b), `"kernel": "kernels/vmlinuz"`) {
		t.Errorf("the carried-over sidecar should keep relative paths:\n%s", b)
	}
	imgs, err := ListImages(dir)
	if err != nil || len(imgs) != 1 || imgs[0].Tags[clouds.TagCommit] != "abcdef0" {
		t.Errorf("ListImages = %+v, %v", imgs, err)
	}
	if _, err := os.Stat(filepath.Join(work, "image.part")); !os.IsNotExist(err) {
		t.Errorf("the partial file is still there: %v", err)
	}

	var again clouds.Image
	if err := c.Snapshot(context.Background(), inst, req, &again); clouds.KindOf(err) != clouds.KindInvalid {
		t.Errorf("second Snapshot under the same name = %v; want refused", err)
	}
	if again.ID != "" || again.Location != "" {
		t.Errorf("a refused Snapshot recorded %+v: the pipeline would delete someone else's image", again)
	}
	if _, err := os.Stat(img.Location); err != nil {
		t.Errorf("the first image is gone: %v", err)
	}
}
