package openstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudtest"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestRealBuilderEndToEnd runs the whole pipeline (builder.Run) against the
// real Keystone and Glance, the script on a real sshd: the image is a Glance
// image with the provenance, nothing of the build is left, and a failed
// script leaves no image.
func TestRealBuilderEndToEnd(t *testing.T) {
	sshd := servicetest.StartSSHD(t)
	_, portStr, _ := net.SplitHostPort(sshd.Addr)
	port, _ := strconv.Atoi(portStr)
	for _, tc := range []struct {
		name   string
		script string
		state  builder.State
	}{
		{"script succeeds", "echo built by imagegen\n", builder.StateSucceeded},
		{"script fails", "echo about to fail >&2\nexit 3\n", builder.StateFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRealEnv(t, openstacktest.Options{
				ConsoleHostKey: sshd.HostKey,
				OnActive:       func(_ openstacktest.Server, pub string) { sshd.Authorize(t, pub) },
			})
			no := false
			c := e.open(t, openstack.Config{SSHPort: port, Network: "private", InjectHostKey: &no})
			id := "real-e2e-" + strings.ReplaceAll(tc.name, " ", "-")
			sp := &spec.Spec{Name: "dstat", Script: tc.script, Digest: strings.Repeat("c", 64),
				Clouds: map[string]spec.CloudSpec{"hotel": {Image: e.os.BaseImageID, SSHUser: sshd.User}}}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res := builder.Run(ctx, builder.Job{Build: id, CloudName: "hotel", Cloud: c, Spec: sp,
				Repo: "example/generators", Commit: strings.Repeat("d", 40), SSHTimeout: 30 * time.Second, CleanupTimeout: time.Minute})
			for _, ph := range res.Phases {
				t.Logf("phase %s took %s", ph.Phase, ph.Duration)
			}
			if res.State != tc.state {
				t.Fatalf("state %s (%v), want %s; log tail %q", res.State, res.Err, tc.state, res.LogTail)
			}
			if len(res.Leftovers) > 0 {
				t.Errorf("leftovers %+v", res.Leftovers)
			}
			assertRealClean(t, e, id)
			imgs := e.buildImages(t, id)
			if tc.state != builder.StateSucceeded {
				if len(imgs) != 0 {
					t.Errorf("a failed build left images %+v", imgs)
				}
				return
			}
			if res.Image == nil || len(imgs) != 1 || imgs[0].ID != res.Image.ID {
				t.Fatalf("Glance holds %+v of the build, the result says %+v", imgs, res.Image)
			}
			im := imgs[0]
			for k, want := range map[string]string{clouds.TagRepo: "example/generators", clouds.TagCommit: strings.Repeat("d", 40),
				clouds.TagGenerator: "dstat", clouds.TagScriptSHA: strings.Repeat("c", 64), clouds.TagBaseImage: e.os.BaseImageID, clouds.TagBuild: id} {
				if im.Properties[k] != want {
					t.Errorf("Glance property %s = %q, want %q", k, im.Properties[k], want)
				}
			}
			if im.Status != "active" || im.Name != res.Image.Name {
				t.Errorf("image %+v, want active and named %s", im, res.Image.Name)
			}
			e.os.DeleteImage(t, im.ID)
		})
	}
}

// TestRealSweep: two workers died, one before its snapshot was recorded:
// Leftovers finds their servers, key pairs and floating IPs by build, the
// image lister finds the snapshot by its imagegen:build property in Glance
// (and not an image the user uploaded), and removing them all leaves nothing.
func TestRealSweep(t *testing.T) {
	e := newRealEnv(t, openstacktest.Options{})
	c := e.open(t, openstack.Config{FloatingIPPool: "public"})
	ctx := context.Background()
	var orphan clouds.Image
	for _, id := range []string{"crashed-1", "crashed-2"} {
		inst := &clouds.Instance{Build: id}
		req := launchReq(t, id)
		req.Image = e.os.BaseImageID
		if err := c.Launch(ctx, req, inst); err != nil {
			t.Fatal(err)
		}
		if id == "crashed-2" {
			if err := c.Stop(ctx, inst); err != nil {
				t.Fatal(err)
			}
			tags := provenance(id)
			tags[clouds.TagBaseImage] = e.os.BaseImageID
			if err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + id, Tags: tags, Log: testLog(t)}, &orphan); err != nil {
				t.Fatal(err)
			}
		}
		// The worker dies here: inst is lost.
	}
	upload := e.os.CreateImage(t, "users-own-upload", map[string]string{"os_distro": "debian"})
	defer e.os.DeleteImage(t, upload)

	all, err := c.Leftovers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Errorf("Leftovers(\"\") = %+v, want a server, key pair and floating IP of each build", all)
	}
	for _, r := range all {
		if err := c.Remove(ctx, r); err != nil {
			t.Errorf("Remove %+v: %v", r, err)
		}
	}
	imgs, err := c.BuildImages(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var mine []clouds.Image
	for _, im := range imgs {
		if im.ID == upload || im.ID == e.os.BaseImageID {
			t.Errorf("BuildImages(\"\") lists %s, which no build made", im.Name)
		}
		if strings.HasPrefix(im.Tags[clouds.TagBuild], "crashed-") {
			mine = append(mine, im)
		}
	}
	cloudtest.CheckListed(t, mine, "crashed-2", []string{"img-crashed-2"}, func(t testing.TB, im clouds.Image) {
		if im.ID != orphan.ID {
			t.Errorf("listed %s, the orphan is %s", im.ID, orphan.ID)
		}
	})
	cloudtest.DeleteListed(t, c, mine)
	for _, id := range []string{"crashed-1", "crashed-2"} {
		assertRealClean(t, e, id)
		if imgs := e.buildImages(t, id); len(imgs) != 0 {
			t.Errorf("Glance still holds %+v", imgs)
		}
	}
	if _, ok := e.os.Image(t, upload); !ok {
		t.Error("the sweep deleted the user's own upload")
	}
	if left, _ := c.Leftovers(ctx, ""); len(left) != 0 {
		t.Errorf("after the sweep: %+v", left)
	}
}

// TestRealGlanceSavesWholeRecords pins down the Glance behaviour the volume
// path works around and openstacktest's own Glance counts as a violation: a
// property set while the image's data is uploading is gone once the upload
// ends (Glance's last save writes the image as it read it when the upload began).
func TestRealGlanceSavesWholeRecords(t *testing.T) {
	o := servicetest.StartOpenStack(t)
	tok := o.UserToken(t)
	call := func(method, path, ctype string, body io.Reader) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, o.GlanceURL+path, body)
		req.Header.Set("X-Auth-Token", tok)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	st, im := call("POST", "/v2/images", "application/json",
		strings.NewReader(`{"name": "glance-race", "disk_format": "raw", "container_format": "bare"}`))
	if st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, im)
	}
	id := im["id"].(string)
	defer o.DeleteImage(t, id)

	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		st, _ := call("PUT", "/v2/images/"+id+"/file", "application/octet-stream", pr)
		done <- st
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("x"), 4096)); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, im := call("GET", "/v2/images/"+id, "", nil); im["status"] == "saving" {
			break
		}
		if i == 100 {
			t.Fatal("the image never went to saving")
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, im = call("PATCH", "/v2/images/"+id, "application/openstack-images-v2.1-json-patch",
		strings.NewReader(`[{"op": "add", "path": "/imagegen:build", "value": "b-1"}]`))
	if st != http.StatusOK || im["imagegen:build"] != "b-1" {
		t.Fatalf("PATCH during the upload: %d %v", st, im)
	}
	_, _ = pw.Write(bytes.Repeat([]byte("y"), 4096))
	pw.Close()
	if st := <-done; st != http.StatusNoContent {
		t.Fatalf("upload: %d", st)
	}
	_, im = call("GET", "/v2/images/"+id, "", nil)
	if im["status"] != "active" {
		t.Fatalf("after the upload: %v", im)
	}
	if v, ok := im["imagegen:build"]; ok {
		t.Errorf("the property set during the upload survived (%v): Glance no longer saves whole records; "+
			"openstacktest's violation for a PATCH before active may be relaxed", v)
	}
}
