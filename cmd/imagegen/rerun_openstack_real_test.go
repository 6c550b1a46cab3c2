package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/openstack/openstacktest"
	"github.com/imagegen/imagegen/github/githubtest"
	"github.com/imagegen/imagegen/internal/servicetest"
)

// TestRerunPasswordOpenStackReal: `imagegen serve` (with its worker) holds an
// OpenStack cloud marked password: ask whose clouds.yaml entry has no
// password. A push leaves it waiting; `imagegen rerun` with a wrong password
// fails it with "authentication failed for cloud locked" (Keystone said no);
// a re-run with the user's password builds the image in Glance. The
// passwords reach neither Redis nor the logs.
func TestRerunPasswordOpenStackReal(t *testing.T) {
	const (
		secret = "whsec-rerun-openstack-0123456789"
		token  = "api-token-rerun-openstack-0123456789"
		repo   = "Codertocat/Hello-World"
		sha    = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
		wrong  = "hunter2-not-the-password"
	)
	sshd := servicetest.StartSSHD(t)
	guests := newOSGuests(t, sshd, []string{"locked"})
	r := newRealOpenStack(t, openstacktest.Options{ConsoleHostKey: guests.hostKeyLine(), OnActive: guests.onActive})
	password := r.os.Password
	file := writeFile(t, "clouds.yaml", "clouds:\n"+r.os.CloudEntry(t, "lab", r.region, servicetest.PasswordDomainIDs, "-"))
	rd := servicetest.StartRedis(t)
	gh := githubtest.NewServer(t)
	app := gh.AppConfig(t)
	addr := freeAddr(t)
	base := "http://" + addr
	cfg := fmt.Sprintf(`listen: %s
redis: %s
github:
  app_id: %d
  private_key_file: %s
  webhook_secret: %s
  api_url: %s
api_tokens: [%q]
encryption_key: %s
build: {timeout: 2m, cleanup_timeout: 30s, ssh_timeout: 30s, concurrency: 2}
clouds:
  locked: {type: openstack, cloud: lab, clouds_file: %s, password: ask, network: private, flavor: m1.small, ssh_port: %d, inject_host_key: false, console_timeout: 10s}
`, addr, rd.URL, app.AppID, app.PrivateKeyFile, secret, gh.URL(), token, strings.Repeat("5a", 32), file, guests.byCloud["locked"].port)
	cfgFile := writeFile(t, "imagegen.yaml", cfg)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &servicetest.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- serveCmd(ctx, &env{stdin: strings.NewReader(""), stdout: logs, stderr: logs, lookup: func(string) (string, bool) { return "", false }},
			[]string{"--config", cfgFile}, registry())
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("serve's output:\n%s", logs.String())
		}
	})
	waitFor(t, "serve to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	push := githubtest.Example(t, "push", func(m map[string]any) bool {
		return m["ref"] == "refs/heads/master" && m["created"] == true && m["installation"] != nil
	})
	if !bytes.Contains(push, []byte(sha)) {
		t.Fatalf("the octokit push example no longer pushes %s", sha)
	}
	gh.SetFile(repo, sha, ".imagegen/hello.yaml", []byte(fmt.Sprintf("script: echo hi from the real cloud\nclouds:\n  locked: {image: %s, ssh_user: %s}\n",
		r.os.BaseImageID, sshd.User)))
	resp := githubtest.Delivery(t, base+"/webhook", "push", "rerun-os-1", []byte(secret), push)
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	var build string
	waitFor(t, "the check run to ask for the password", func() bool {
		for _, cr := range gh.CheckRuns(repo) {
			if cr.Name == "imagegen: hello" && cr.Status == "completed" {
				build = cr.ExternalID
				return true
			}
		}
		return false
	})

	rerun := func(from, pw string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		e := &env{stdin: strings.NewReader(pw + "\n"), stdout: &out, stderr: &errOut, lookup: func(k string) (string, bool) {
			if k == "IMAGEGEN_API_TOKEN" {
				return token, true
			}
			return "", false
		}}
		if code := run(context.Background(), e, []string{"rerun", "--server", base, "--cloud", "locked", from}); code != 0 {
			t.Fatalf("imagegen rerun: exit %d: %s", code, errOut.String())
		}
		return strings.TrimSpace(out.String()), errOut.String()
	}
	type cloudRecord struct{ State, Error, ImageID string }
	record := func(id string) cloudRecord {
		var b struct {
			Clouds map[string]struct {
				State   string `json:"state"`
				Error   string `json:"error"`
				ImageID string `json:"image_id"`
			} `json:"clouds"`
		}
		req, _ := http.NewRequest("GET", base+"/api/v1/builds/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token) // reads need a token too
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/builds/%s: %s", id, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		c := b.Clouds["locked"]
		return cloudRecord{State: c.State, Error: c.Error, ImageID: c.ImageID}
	}
	final := func(s string) bool { return s == "succeeded" || s == "failed" || s == "canceled" }

	bad, badOut := rerun(build, wrong)
	waitFor(t, "the re-run with the wrong password to end", func() bool { return final(record(bad).State) })
	t.Logf("the wrong password's build: %+v", record(bad))
	if rec := record(bad); rec.State != "failed" || !strings.Contains(rec.Error, "authentication failed for cloud locked") || strings.Contains(rec.Error, wrong) {
		t.Errorf("re-run with a wrong password: %+v; want failed, \"authentication failed for cloud locked\", no password", rec)
	}

	good, goodOut := rerun(bad, password)
	waitFor(t, "the re-run with the password to end", func() bool { return final(record(good).State) })
	rec := record(good)
	if rec.State != "succeeded" || rec.ImageID == "" {
		t.Fatalf("re-run with the password: %+v", rec)
	}
	im, ok := r.os.Image(t, rec.ImageID)
	if !ok || im.Status != "active" || im.Owner != r.os.ProjectID || im.Properties[clouds.TagBuild] != good {
		t.Errorf("Glance holds %+v (found %v), want the re-run's active image", im, ok)
	}
	if l := guests.byCloud["locked"].loginCount(); l == 0 {
		t.Error("nobody logged in to the server")
	}
	cancel()
	<-done
	done <- nil // for the cleanup

	for _, pw := range []string{password, wrong} {
		if hits, _ := rd.Find(t, pw); len(hits) > 0 {
			t.Errorf("a password is in Redis: %v", hits)
		}
		for name, out := range map[string]string{"serve": logs.String(), "rerun": badOut + goodOut} {
			if strings.Contains(out, pw) {
				t.Errorf("%s's output holds a password", name)
			}
		}
	}
}
