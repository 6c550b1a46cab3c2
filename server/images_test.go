package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/manifest"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config/configtest"
	"github.com/imagegen/imagegen/internal/servicetest"
	"github.com/imagegen/imagegen/provenance"
	"github.com/imagegen/imagegen/queue"
	"github.com/imagegen/imagegen/server"
	"github.com/imagegen/imagegen/store"
)

const (
	imgToken   = "api-token-images-0123456789abcdef"
	otherToken = "api-token-other-repos-0123456789ab"
)

// imagesServer is the server on a store holding two builds of generator
// "g" in octo/images: b1 (image "img-1" on clouds a and b, the same id) and
// b2 (image "img-2" on a), with b2's envelope stored. signer may be nil.
func imagesServer(t *testing.T, signer *provenance.Signer) (*httptest.Server, []byte) {
	t.Helper()
	rd := servicetest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := configtest.Config(t, fmt.Sprintf(`redis: %s
base_url: https://ig.example
github: {token: t, webhook_secret: whsec-images-0123456789}
api_tokens: [%s, {token: %s, scopes: [read], repos: ["other/*"]}]
clouds:
  a: {type: simulated}
  b: {type: simulated}
`, rd.URL, imgToken, otherToken))
	qc, err := queue.NewClient(rdb, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	ctx := context.Background()
	t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for i, script := range []string{"echo one\n", "echo one\necho <script>alert(1)</script>\n"} {
		id := fmt.Sprintf("b%d", i+1)
		commit := strings.Repeat(fmt.Sprint(i+1), 40)
		b := &builds.Build{ID: id, Repo: "octo/images", Commit: commit, Ref: "refs/heads/main", Generator: "g", Digest: fmt.Sprintf("d%d", i+1), Created: t0,
			Clouds: map[string]*builds.CloudRecord{"a": {Cloud: "a", State: builder.StateSucceeded, Queued: t0}}}
		sp := &spec.Spec{Name: "g", Script: script, File: ".imagegen/g.yaml", Clouds: map[string]spec.CloudSpec{"a": {Image: "debian"}}, Digest: b.Digest}
		if _, err := st.Create(ctx, b, sp); err != nil {
			t.Fatal(err)
		}
		clouds := []string{"a"}
		if i == 0 {
			clouds = append(clouds, "b")
		}
		for _, c := range clouds {
			if err := st.AddImage(ctx, builds.LineageEntry{Build: id, Repo: "octo/images", Generator: "g", Cloud: c, Commit: commit, Ref: b.Ref,
				Digest: b.Digest, BaseImage: "debian", ImageID: fmt.Sprintf("img-%d", i+1), ImageName: fmt.Sprintf("g-%d", i+1), Created: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Both images on a have a manifest: dstat came, openssl moved up.
	for id, pkgs := range map[string][]manifest.Package{
		"b1": {{Manager: manifest.Deb, Name: "openssl", Version: "3.0.11-1~deb12u2", Arch: "amd64"}},
		"b2": {{Manager: manifest.Deb, Name: "dstat", Version: "0.7.4-6.1", Arch: "all"}, {Manager: manifest.Deb, Name: "openssl", Version: "3.0.13-1~deb12u1", Arch: "amd64"}},
	} {
		doc, err := manifest.Encode(&manifest.Manifest{OS: manifest.OS{ID: "debian", VersionID: "12"}, Arch: "x86_64", Packages: pkgs})
		if err != nil {
			t.Fatal(err)
		}
		gz, err := manifest.Compress(doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SaveManifest(ctx, id, "a", gz); err != nil {
			t.Fatal(err)
		}
	}
	envelope := []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}` + "\n")
	if err := st.SetProvenance(ctx, "b2", "a", envelope); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Config: cfg, Store: st, Queue: qc, Reruns: builds.NewReruns(builds.Deps{Config: cfg, Store: st, Queue: qc}), Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts, envelope
}

func getWith(t *testing.T, ts *httptest.Server, path, token string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// TestImageRoutes: the answers a user sees for each image route, their
// errors included: an id on two clouds, an image never recorded, another
// repository's image, an image without provenance, a server without a key.
func TestImageRoutes(t *testing.T) {
	ts, envelope := imagesServer(t, nil)
	tests := []struct {
		name, path, token string
		code              int
		want              []string
	}{
		{"story", "/api/v1/images/a/img-2", imgToken, 200, []string{`"image_id":"img-2"`, `"cloud":"a"`, `"build":"b2"`, `"branch":"main"`, `"previous":{"cloud":"a","image_id":"img-1"`, `"next":null`, `"siblings":[]`, `"build_url":"https://ig.example/api/v1/builds/b2"`}},
		{"story of the first, with its sibling", "/api/v1/images/a/img-1", imgToken, 200, []string{`"siblings":[{"cloud":"b","image_id":"img-1"`, `"previous":null`, `"next":{"cloud":"a","image_id":"img-2"`}},
		{"unique id without cloud", "/api/v1/images/img-2", imgToken, 200, []string{`"image_id":"img-2"`, `"cloud":"a"`}},
		{"id on two clouds", "/api/v1/images/img-1", imgToken, 409, []string{`{"clouds":["a","b"],"error":"image \"img-1\" is on more than one cloud (a, b): name the cloud"}`}},
		{"never recorded", "/api/v1/images/a/img-9", imgToken, 404, []string{`no record of image \"img-9\" on cloud \"a\" (records are kept for 2160h0m0s; the cloud's own tags still say where an image came from: imagegen trace --config FILE --cloud NAME ID)`}},
		{"never recorded, no cloud", "/api/v1/images/img-9", imgToken, 404, []string{`no record of image \"img-9\" (records`}},
		{"another repository's image", "/api/v1/images/a/img-2", otherToken, 404, []string{`no record of image \"img-2\" on cloud \"a\"`}},
		{"another repository's image, id on two clouds", "/api/v1/images/img-1", otherToken, 404, []string{`no record of image \"img-1\" (records`}},
		{"no token", "/api/v1/images/a/img-2", "", 401, []string{"missing Authorization"}},
		{"changes", "/api/v1/images/a/img-2/changes", imgToken, 200, []string{`"from":{"cloud":"a","image_id":"img-1"`, `"script_changed":true`, `+echo \u003cscript\u003ealert(1)\u003c/script\u003e`, `"compare_url":"https://github.com/octo/images/compare/1111111111111111111111111111111111111111...2222222222222222222222222222222222222222"`, `"commits":null`, `"commits_note":"this server does not read commits from GitHub: follow the compare link"`, `"base_image_change":null`, `"packages":{"recorded":true,"changes":{"identical":false,"packages":2,"changes":[{"kind":"added","manager":"deb","name":"dstat","to":"0.7.4-6.1"},{"kind":"upgraded","manager":"deb","name":"openssl","from":"3.0.11-1~deb12u2","to":"3.0.13-1~deb12u1"}],"added":1,"removed":0,"upgraded":1`}},
		{"changes of the first", "/api/v1/images/a/img-1/changes", imgToken, 200, []string{`"from":null`, `"script_note":"this is the generator's first image on this cloud: nothing to compare with"`}},
		{"changes since an unknown image", "/api/v1/images/a/img-2/changes?since=img-9", imgToken, 404, []string{`no record of image \"img-9\" on cloud \"a\"`}},
		{"changes of another repository's image", "/api/v1/images/a/img-2/changes", otherToken, 404, []string{`no record of image \"img-2\"`}},
		{"provenance not stored", "/api/v1/images/a/img-1/provenance", imgToken, 404, []string{`image \"img-1\" on cloud \"a\" has no stored provenance`}},
		{"provenance of another repository's image", "/api/v1/images/a/img-2/provenance", otherToken, 404, []string{`no record of image \"img-2\"`}},
		{"no key", "/api/v1/provenance/key", imgToken, 404, []string{`this server signs no provenance: provenance.signing_key_file is not set`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := getWith(t, ts, tc.path, tc.token)
			if code != tc.code {
				t.Errorf("GET %s: %d, want %d: %s", tc.path, code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s: body lacks %s:\n%s", tc.path, w, body)
				}
			}
			if strings.Contains(body, "<script>") {
				t.Errorf("GET %s: the script's text is not escaped in JSON: %s", tc.path, body)
			}
		})
	}

	// The envelope, byte for byte, with its digest.
	code, h, body := getWith(t, ts, "/api/v1/images/a/img-2/provenance", imgToken)
	if code != 200 || body != string(envelope) || h.Get("Content-Type") != server.EnvelopeType || h.Get("X-Imagegen-Provenance-Sha256") != provenance.Digest(envelope) {
		t.Errorf("provenance: %d %q %v", code, body, h)
	}
}

// TestProvenanceKeyRoute: the signing key's public half, as verify --key takes it.
func TestProvenanceKeyRoute(t *testing.T) {
	s, err := provenance.ParseSigner([]byte(testKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := imagesServer(t, s)
	code, h, body := getWith(t, ts, "/api/v1/provenance/key", imgToken)
	want, _ := s.PublicKeyPEM()
	if code != 200 || body != string(want) || h.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("key: %d %v %q", code, h, body)
	}
	if _, err := provenance.ParseVerifier([]byte(body)); err != nil {
		t.Errorf("the served key does not load: %v", err)
	}
	var e map[string]any
	if code, _, body := getWith(t, ts, "/api/v1/provenance/key", ""); code != 401 || json.Unmarshal([]byte(body), &e) != nil {
		t.Errorf("key without a token (read_access: token): %d %s", code, body)
	}
}

// testKeyPEM is an ed25519 key for tests (openssl genpkey -algorithm ed25519).
const testKeyPEM = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
`
