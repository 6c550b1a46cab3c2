package openstack_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
)

// build runs the driver's part of a build (launch, stop, snapshot) and always
// terminates, as the pipeline does; it returns the first error and the image.
func build(t *testing.T, c *openstack.Cloud, id string) (*clouds.Image, error) {
	t.Helper()
	ctx := context.Background()
	inst := &clouds.Instance{Build: id}
	defer terminate(t, c, inst)
	if err := c.Launch(ctx, launchReq(t, id), inst); err != nil {
		return nil, err
	}
	if err := c.Stop(ctx, inst); err != nil {
		return nil, err
	}
	img := &clouds.Image{}
	err := c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + id, Tags: provenance(id), Log: testLog(t)}, img)
	if err != nil && img.ID != "" {
		if derr := c.DeleteImage(context.Background(), img); derr != nil {
			t.Errorf("DeleteImage: %v", derr)
		}
	}
	return img, err
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name    string
		opts    openstacktest.Options
		cfg     openstack.Config
		faults  []openstacktest.Fault
		kind    clouds.Kind // "" means the build succeeds
		msg     string      // the error names this
		check   func(t *testing.T, f *openstacktest.Fake)
		minTime time.Duration
	}{
		{name: "ERROR on boot, no host", opts: openstacktest.Options{BootFault: "No valid host was found. There are not enough hosts available."},
			kind: clouds.KindCapacity, msg: "No valid host was found"},
		{name: "ERROR on boot", opts: openstacktest.Options{BootFault: "Build of instance aborted: Failed to allocate the network(s)"},
			kind: clouds.KindFailed, msg: "Failed to allocate the network"},
		{name: "image killed", opts: openstacktest.Options{KillImages: true}, kind: clouds.KindFailed, msg: "killed",
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := len(f.Images("")); n != 1 {
					t.Errorf("%d images, want only the base image: the killed one is deleted", n)
				}
			}},
		{name: "volume upload killed", opts: openstacktest.Options{KillImages: true}, cfg: openstack.Config{VolumeSize: 10}, kind: clouds.KindFailed, msg: "killed"},
		{name: "429 storm on create server",
			faults: []openstacktest.Fault{{Method: "POST", Path: `/compute/v2\.1/servers$`, Status: 429, RetryAfter: "0", Times: 4}},
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST /RegionOne/compute/v2\.1/servers$`); n != 5 {
					t.Errorf("%d server creates, want 4 refused + 1", n)
				}
				if n := len(f.Images("")); n != 2 {
					t.Errorf("%d images, want base + new", n)
				}
			}},
		{name: "429 honours Retry-After", minTime: 900 * time.Millisecond,
			faults: []openstacktest.Fault{{Method: "POST", Path: `/os-keypairs$`, Status: 429, RetryAfter: "1", Times: 1}}},
		{name: "503 storm everywhere",
			faults: []openstacktest.Fault{
				{Method: "GET", Path: `/servers/[^/]+$`, Status: 503, Times: 4},
				{Method: "POST", Path: `/action$`, Status: 503, Times: 2},
				{Method: "GET", Path: `/image/v2/images/`, Status: 503, Times: 4, Skip: 1},
				{Method: "DELETE", Path: `/servers/`, Status: 503, Times: 3},
				{Method: "DELETE", Path: `/os-keypairs/`, Status: 502, Times: 3},
				{Method: "GET", Path: `/flavors/detail`, Status: 500, Times: 2},
			},
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^DELETE .*/servers/`); n < 4 {
					t.Errorf("%d server deletes, want 3 refused + 1", n)
				}
			}},
		{name: "answers lost after the cloud acted",
			cfg: openstack.Config{FloatingIPPool: "public"},
			faults: []openstacktest.Fault{
				{Method: "POST", Path: `/compute/v2\.1/servers$`, Status: 504, After: true, Times: 1},
				{Method: "POST", Path: `/floatingips$`, Status: 502, After: true, Times: 1},
				{Method: "POST", Path: `/action$`, Status: 504, After: true, Times: 1, Skip: 1}, // the createImage after os-stop
			},
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST .*/servers$`); n != 1 {
					t.Errorf("%d server creates: the server made before the lost answer must be adopted", n)
				}
				if n := f.Count(`^POST .*/floatingips$`); n != 1 {
					t.Errorf("%d floating IP creates, want 1 adopted", n)
				}
				if n := len(f.Images("")); n != 2 {
					t.Errorf("%d images, want base + one adopted", n)
				}
			}},
		{name: "volume upload answer lost after Cinder acted",
			cfg: openstack.Config{VolumeSize: 10},
			faults: []openstacktest.Fault{
				{Method: "POST", Path: `/volume/v3/volumes/[^/]+/action$`, Status: 504, After: true, Times: 1},
			},
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST .*/volume/v3/volumes/[^/]+/action$`); n != 1 {
					t.Errorf("%d volume uploads: the image made before the lost answer must be adopted", n)
				}
				if n := len(f.Images("")); n != 2 {
					t.Errorf("%d images, want base + one adopted", n)
				}
			}},
		{name: "glance 404 right after createImage is tolerated",
			faults: []openstacktest.Fault{{Method: "GET", Path: `/image/v2/images/`, Status: 404, Times: 2, Skip: 1}}},
		{name: "request timeout retried", cfg: openstack.Config{RequestTimeout: 150 * time.Millisecond},
			faults: []openstacktest.Fault{{Method: "GET", Path: `/flavors/detail`, Delay: time.Second, Times: 2}}},
		{name: "409 while the server is busy",
			faults: []openstacktest.Fault{{Method: "DELETE", Path: `/servers/`, Status: 409, Times: 2}}},
		{name: "quota exceeded", opts: openstacktest.Options{ServerQuota: -1}, kind: clouds.KindQuota, msg: "Quota exceeded for instances",
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST .*/servers$`); n != 1 {
					t.Errorf("%d server creates: a quota is not retried", n)
				}
			}},
		{name: "floating IP quota", opts: openstacktest.Options{FloatingIPQuota: -1}, cfg: openstack.Config{FloatingIPPool: "public"},
			kind: clouds.KindQuota, msg: "floatingip"},
		{name: "missing image", cfg: openstack.Config{}, kind: clouds.KindNotFound, msg: `image "no-such-image"`},
		{name: "missing flavor", cfg: openstack.Config{Flavor: "m9.huge"}, kind: clouds.KindNotFound, msg: `flavor "m9.huge"`},
		{name: "missing network", cfg: openstack.Config{Network: "nowhere"}, kind: clouds.KindNotFound, msg: `network "nowhere"`},
		{name: "missing pool", cfg: openstack.Config{FloatingIPPool: "outside"}, kind: clouds.KindNotFound, msg: `floating_ip_pool "outside"`},
		{name: "forbidden", faults: []openstacktest.Fault{{Method: "POST", Path: `/os-keypairs$`, Status: 403}},
			kind: clouds.KindAuth, msg: "403"},
		{name: "unclassified 400 fails at once", faults: []openstacktest.Fault{{Method: "POST", Path: `/servers$`, Status: 400, Body: `{"badRequest": {"message": "Invalid availability zone", "code": 400}}`}},
			kind: clouds.KindInvalid, msg: "Invalid availability zone"},
		{name: "token expiry renews the token",
			check: func(t *testing.T, f *openstacktest.Fake) {
				if n := f.Count(`^POST /identity/v3/auth/tokens$`); n < 2 {
					t.Errorf("%d logins, want a second after the revocation", n)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			c := open(t, f, tc.cfg)
			for _, ft := range tc.faults {
				f.Inject(ft)
			}
			id := "f-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			if tc.name == "token expiry renews the token" {
				f.RevokeTokens()
			}
			start := time.Now()
			var img *clouds.Image
			var err error
			if strings.HasPrefix(tc.name, "missing image") {
				inst := &clouds.Instance{Build: id}
				req := launchReq(t, id)
				req.Image = "no-such-image"
				err = c.Launch(context.Background(), req, inst)
				terminate(t, c, inst)
			} else {
				img, err = build(t, c, id)
			}
			switch {
			case tc.kind == "" && err != nil:
				t.Fatalf("build failed: %v", err)
			case tc.kind != "" && err == nil:
				t.Fatalf("build succeeded, want a %s error", tc.kind)
			case tc.kind != "":
				if k := clouds.KindOf(err); k != tc.kind {
					t.Errorf("kind %q, want %q: %v", k, tc.kind, err)
				}
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q does not say %q", err, tc.msg)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error leaks the password: %v", err)
				}
			default:
				if img == nil || img.ID == "" {
					t.Errorf("no image")
				}
			}
			if el := time.Since(start); el < tc.minTime {
				t.Errorf("took %s, want at least %s (Retry-After)", el, tc.minTime)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
			assertClean(t, f, "RegionOne", id)
		})
	}
}

// TestCancel presses Ctrl-C during each wait: the call returns promptly with
// the context's error, and Terminate on a fresh context leaves nothing behind.
func TestCancel(t *testing.T) {
	slow := 10 * time.Second
	tests := []struct {
		name  string
		opts  openstacktest.Options
		noKey bool                             // no injected host key: Launch reads the console
		until func(f *openstacktest.Fake) bool // cancel once this holds
		stage string                           // which call is canceled
	}{
		{"waiting for ACTIVE", openstacktest.Options{BootDelay: slow}, false,
			func(f *openstacktest.Fake) bool { return len(f.Servers("")) == 1 }, "launch"},
		{"reading the console", openstacktest.Options{ConsoleDelay: slow}, true,
			func(f *openstacktest.Fake) bool { return f.Count(`/action$`) > 0 }, "launch"},
		{"waiting for SHUTOFF", openstacktest.Options{StopDelay: slow}, false,
			func(f *openstacktest.Fake) bool { return f.Count(`/action$`) > 0 }, "stop"},
		{"waiting for the image", openstacktest.Options{SnapshotDelay: slow}, false,
			func(f *openstacktest.Fake) bool { return len(f.Images("")) == 2 }, "snapshot"},
		{"waiting for the server to go", openstacktest.Options{DeleteDelay: slow}, false,
			func(f *openstacktest.Fake) bool { return f.Count(`^DELETE .*/servers/`) > 0 }, "terminate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			c := open(t, f, openstack.Config{FloatingIPPool: "public", ConsoleTimeout: time.Minute})
			id := "c-" + strings.ReplaceAll(tc.name, " ", "-")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !tc.until(f) {
					time.Sleep(2 * time.Millisecond)
				}
				cancel()
			}()
			inst := &clouds.Instance{Build: id}
			img := &clouds.Image{}
			req := launchReq(t, id)
			if tc.noKey {
				req.HostKey = clouds.HostKey{}
			}
			var err error
			var canceledAt time.Time
			run := func(stage string, fn func(context.Context) error) {
				if err != nil {
					return
				}
				c := context.Background()
				if stage == tc.stage {
					c = ctx
				}
				err = fn(c)
				if stage == tc.stage {
					canceledAt = time.Now()
				}
			}
			run("launch", func(ctx context.Context) error { return c.Launch(ctx, req, inst) })
			run("stop", func(ctx context.Context) error { return c.Stop(ctx, inst) })
			run("snapshot", func(ctx context.Context) error {
				return c.Snapshot(ctx, inst, clouds.SnapshotRequest{Name: "img-" + id, Tags: provenance(id), Log: testLog(t)}, img)
			})
			run("terminate", func(ctx context.Context) error { return c.Terminate(ctx, inst) })
			wg.Wait()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: error %v, want context.Canceled", tc.stage, err)
			}
			_ = canceledAt
			if inst.ID == "" {
				t.Errorf("server id not recorded before the wait")
			}
			if tc.stage == "snapshot" && img.ID == "" {
				t.Errorf("image id not recorded before the wait")
			}
			if img.ID != "" {
				if err := c.DeleteImage(context.Background(), img); err != nil {
					t.Errorf("DeleteImage: %v", err)
				}
			}
			// Fresh context, as the pipeline's cleanup; the fake stays slow where it was slow.
			f.Update(func(o *openstacktest.Options) { o.BootDelay, o.StopDelay, o.SnapshotDelay, o.DeleteDelay = 0, 0, 0, 0 })
			start := time.Now()
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if err := c.Terminate(cctx, inst); err != nil {
				t.Fatalf("Terminate: %v", err)
			}
			t.Logf("cleanup took %s", time.Since(start))
			assertClean(t, f, "", id)
			if n := len(f.Images("")); n != 1 {
				t.Errorf("%d images, want only the base image", n)
			}
		})
	}
}
