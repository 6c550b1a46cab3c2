package openstack_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// BenchmarkRealBuildImages measures the sweep's image listing against the
// real Glance holding realBenchImages images of 50 builds (queued: listing
// does not care): one build's (Glance filters on the property) and every
// build's (every page, filtered by the driver). Not part of go test; run
//
//	go test -run '^$' -bench RealBuildImages -benchtime 5x ./clouds/openstack/
func BenchmarkRealBuildImages(b *testing.B) {
	const realBenchImages = 1500
	ostack := servicetest.StartOpenStack(b)
	start := time.Now()
	tok := ostack.UserToken(b)
	var wg sync.WaitGroup
	work := make(chan int)
	var mu sync.Mutex
	var errs []error
	for range 4 {
		wg.Go(func() {
			for i := range work {
				body := fmt.Sprintf(`{"name": "bench-%d", "disk_format": "raw", "container_format": "bare", "imagegen:build": "bench-%d", "imagegen:generator": "g"}`, i, i%50)
				req, _ := http.NewRequest("POST", ostack.GlanceURL+"/v2/images", strings.NewReader(body))
				req.Header.Set("X-Auth-Token", tok)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("create: %d", resp.StatusCode)
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range realBenchImages {
		work <- i
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		b.Fatalf("%d creates failed, the first: %v", len(errs), errs[0])
	}
	b.Logf("created %d images in %s", realBenchImages, time.Since(start).Round(time.Millisecond))
	b.Cleanup(func() {
		for _, im := range ostack.Images(b) {
			if strings.HasPrefix(im.Name, "bench-") {
				ostack.DeleteImage(b, im.ID)
			}
		}
	})

	region := ostack.Region(b)
	f := openstacktest.New(openstacktest.Options{Regions: []string{region}, Real: &openstacktest.Real{KeystoneURL: ostack.KeystoneURL,
		GlanceURL: ostack.GlanceURL, User: "admin", Password: ostack.AdminPassword, Project: "admin"}})
	b.Cleanup(f.Close)
	ostack.Route(b, region, f.Endpoints(region))
	file := filepath.Join(b.TempDir(), "clouds.yaml")
	if err := os.WriteFile(file, []byte("clouds:\n"+ostack.CloudEntry(b, "hotel", region, servicetest.PasswordDomainNames, "")), 0o600); err != nil {
		b.Fatal(err)
	}
	op, err := openstack.New("bench", openstack.Config{Cloud: "hotel", CloudsFile: file}, false, fastOpts)
	if err != nil {
		b.Fatal(err)
	}
	cl, err := op.Open(context.Background(), clouds.Credentials{})
	if err != nil {
		b.Fatal(err)
	}
	c := cl.(*openstack.Cloud)
	for _, bc := range []struct {
		name, build string
		want        int
	}{{"one build", "bench-7", realBenchImages / 50}, {"every build", "", realBenchImages}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				imgs, err := c.BuildImages(context.Background(), bc.build)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, im := range imgs {
					if strings.HasPrefix(im.Name, "bench-") {
						n++
					}
				}
				if n != bc.want {
					b.Fatalf("listed %d bench images, want %d", n, bc.want)
				}
			}
		})
	}
}
