package openstacktest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Real links the fake to a real Keystone and a real Glance: the fake is then
// only the cloud's Nova, Neutron and Cinder, as they would run beside those
// two. It takes the tokens Keystone issued (checking each with Keystone, as
// keystonemiddleware does, and keeping the answer a while as its cache
// does), finds servers' images in Glance, and makes snapshots (createImage)
// and volume uploads the way Nova and Cinder do: the image is created in
// Glance with the user's token, queued, and its data uploaded after
// SnapshotDelay/2 (the time the disk snapshot or the volume's conversion
// takes), the upload itself lasting SnapshotDelay/2, which makes it active. The fake's own Keystone and Glance
// stay unused: the catalog (Keystone's) names Glance and the fake's Endpoints.
// KillImages has no effect: Glance has no way to be told to kill an image.
type Real struct {
	KeystoneURL string // Keystone's v3 endpoint
	GlanceURL   string // Glance's root
	// The fake's own account, Nova's service user: an admin of the Default
	// domain's project Project. It checks users' tokens and uploads snapshot data.
	User, Password, Project string
}

// tokenCacheTime is how long a checked token is taken without asking
// Keystone again: keystonemiddleware's token_cache_time default.
const tokenCacheTime = 5 * time.Minute

type realLink struct {
	Real
	client *http.Client

	mu      sync.Mutex
	svc     string // the service token
	svcExp  time.Time
	tokens  map[string]tokenInfo
	uploads map[string]*upload // image id → its pending upload
}

type tokenInfo struct {
	userID, userName, projectID, projectName string
	until                                    time.Time
}

type upload struct {
	server string
	timer  *time.Timer
}

func newRealLink(r Real) *realLink {
	return &realLink{Real: r, client: &http.Client{Timeout: time.Minute}, tokens: map[string]tokenInfo{}, uploads: map[string]*upload{}}
}

// Endpoints are the fake's services of region, for a catalog: service type → URL.
func (f *Fake) Endpoints(region string) map[string]string {
	base := f.srv.URL + "/" + region
	return map[string]string{"compute": base + "/compute/v2.1", "network": base + "/network", "block-storage": base + "/volume/v3"}
}

// ForgetTokens empties the cache of tokens checked with the real Keystone,
// as its expiry would: the next request with a revoked token is refused.
func (f *Fake) ForgetTokens() {
	if f.real == nil {
		return
	}
	f.real.mu.Lock()
	defer f.real.mu.Unlock()
	f.real.tokens = map[string]tokenInfo{}
}

// PendingUploads counts the snapshots whose data the fake has not yet
// uploaded to the real Glance.
func (f *Fake) PendingUploads() int {
	if f.real == nil {
		return 0
	}
	f.real.mu.Lock()
	defer f.real.mu.Unlock()
	return len(f.real.uploads)
}

// call is one request to Keystone or Glance; raw bodies go as they are.
func (l *realLink) call(method, u, token string, in any, contentType string, out any) (int, http.Header, string, error) {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case io.Reader:
		body = v
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return 0, nil, "", err
		}
		body = bytes.NewReader(b)
		if contentType == "" {
			contentType = "application/json"
		}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return 0, nil, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 && out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, string(data), err
		}
	}
	return resp.StatusCode, resp.Header, string(data), nil
}

// serviceToken is the fake's own token, renewed before it ends.
func (l *realLink) serviceToken() (string, error) {
	l.mu.Lock()
	if l.svc != "" && time.Until(l.svcExp) > 5*time.Minute {
		defer l.mu.Unlock()
		return l.svc, nil
	}
	l.mu.Unlock()
	in := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"}, "password": map[string]any{"user": map[string]any{
			"name": l.User, "domain": map[string]any{"id": "default"}, "password": l.Password}}},
		"scope": map[string]any{"project": map[string]any{"name": l.Project, "domain": map[string]any{"id": "default"}}},
	}}
	var out struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
		} `json:"token"`
	}
	st, h, body, err := l.call("POST", l.KeystoneURL+"/auth/tokens", "", in, "", &out)
	if err != nil {
		return "", fmt.Errorf("openstacktest: the service login: %w", err)
	}
	if st != http.StatusCreated {
		return "", fmt.Errorf("openstacktest: the service login: %d %s", st, body)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.svc, l.svcExp = h.Get("X-Subject-Token"), out.Token.ExpiresAt
	return l.svc, nil
}

// check asks Keystone whether token is valid (GET /v3/auth/tokens), keeping
// a yes for tokenCacheTime or until the token ends, whichever is first.
func (l *realLink) check(token string) (tokenInfo, bool) {
	if token == "" {
		return tokenInfo{}, false
	}
	l.mu.Lock()
	ti, ok := l.tokens[token]
	l.mu.Unlock()
	if ok && time.Now().Before(ti.until) {
		return ti, true
	}
	svc, err := l.serviceToken()
	if err != nil {
		return tokenInfo{}, false
	}
	req, _ := http.NewRequest("GET", l.KeystoneURL+"/auth/tokens?nocatalog", nil)
	req.Header.Set("X-Auth-Token", svc)
	req.Header.Set("X-Subject-Token", token)
	resp, err := l.client.Do(req)
	if err != nil {
		return tokenInfo{}, false
	}
	defer resp.Body.Close()
	var out struct {
		Token struct {
			ExpiresAt time.Time `json:"expires_at"`
			User      struct{ ID, Name string }
			Project   *struct{ ID, Name string }
		} `json:"token"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil || out.Token.Project == nil {
		// Nova takes only project-scoped tokens.
		return tokenInfo{}, false
	}
	ti = tokenInfo{userID: out.Token.User.ID, userName: out.Token.User.Name, projectID: out.Token.Project.ID,
		projectName: out.Token.Project.Name, until: time.Now().Add(tokenCacheTime)}
	if out.Token.ExpiresAt.Before(ti.until) {
		ti.until = out.Token.ExpiresAt
	}
	l.mu.Lock()
	l.tokens[token] = ti
	l.mu.Unlock()
	return ti, true
}

// getImage reads an image from Glance with the user's token.
func (l *realLink) getImage(token, id string) (map[string]any, int, error) {
	var im map[string]any
	st, _, _, err := l.call("GET", l.GlanceURL+"/v2/images/"+url.PathEscape(id), token, nil, "", &im)
	return im, st, err
}

// glanceCore are the attributes of Glance's image schema; a snapshot
// inherits its base image's other properties, as Nova copies them.
var glanceCore = map[string]bool{"id": true, "name": true, "status": true, "visibility": true, "protected": true,
	"os_hidden": true, "checksum": true, "os_hash_algo": true, "os_hash_value": true, "owner": true, "size": true,
	"virtual_size": true, "min_ram": true, "min_disk": true, "container_format": true, "disk_format": true,
	"created_at": true, "updated_at": true, "tags": true, "direct_url": true, "locations": true, "self": true,
	"file": true, "schema": true, "stores": true}

// nonInheritable are the properties Nova does not copy to a snapshot
// (nova.compute.utils.NON_INHERITABLE_IMAGE_PROPERTIES and the
// non_inheritable_image_properties default).
var nonInheritable = map[string]bool{"cache_in_nova": true, "bittorrent": true, "img_signature": true,
	"img_signature_hash_method": true, "img_signature_certificate_uuid": true, "img_signature_key_type": true,
	"os_glance_importing_to_stores": true, "os_glance_failed_import": true}

// imageUsable says whether a server may boot from image ref: active in Glance
// (real) or in the fake's own images.
func (f *Fake) imageUsable(req *http.Request, r *region, ref string) bool {
	if f.real == nil {
		im, ok := r.images[ref]
		return ok && im.Status == "active"
	}
	im, st, err := f.real.getImage(req.Header.Get("X-Auth-Token"), ref)
	return err == nil && st == http.StatusOK && im["status"] == "active"
}

// realSnapshot answers createImage as Nova does beside a real Glance: the
// image record is created in Glance with the user's token (the base image's
// properties, Nova's own and the request's metadata; no disk or container
// format, which the upload sets), 202 with its Location, and the data is
// uploaded later.
func (f *Fake) realSnapshot(w http.ResponseWriter, req *http.Request, s *server, name string, md map[string]string) {
	tok := req.Header.Get("X-Auth-Token")
	ti, _ := f.real.check(tok)
	props := map[string]any{}
	if base, st, err := f.real.getImage(tok, s.ImageRef); err == nil && st == http.StatusOK {
		for k, v := range base {
			if str, ok := v.(string); ok && !glanceCore[k] && !nonInheritable[k] {
				props[k] = str
			}
		}
	}
	for k, v := range map[string]string{"image_type": "snapshot", "instance_uuid": s.ID, "base_image_ref": s.ImageRef,
		"user_id": ti.userID, "owner_user_name": ti.userName, "owner_project_name": ti.projectName} {
		props[k] = v
	}
	for k, v := range md {
		props[k] = v
	}
	props["name"] = name
	props["visibility"] = "private"
	id, st, msg := f.real.createImage(tok, props)
	if id == "" {
		writeErr(w, req.URL.Path, st, "Glance refused the snapshot: "+msg)
		return
	}
	f.real.scheduleUpload(id, s.ID, f.opts.SnapshotDelay/2, f.opts.SnapshotDelay/2, "qcow2", "bare")
	// Nova's Location is its Glance endpoint's URL of the image.
	w.Header().Set("Location", f.real.GlanceURL+"/images/"+id)
	w.WriteHeader(http.StatusAccepted)
}

// realVolumeImage answers os-volume_upload_image as Cinder does: the image
// created in Glance with the request's name and formats, its data uploaded later.
func (f *Fake) realVolumeImage(req *http.Request, s *server, name, diskFormat, containerFormat string) (string, int, string) {
	props := map[string]any{"name": name, "visibility": "private"}
	if diskFormat == "" {
		diskFormat = "raw"
	}
	if containerFormat == "" {
		containerFormat = "bare"
	}
	props["disk_format"], props["container_format"] = diskFormat, containerFormat
	id, st, msg := f.real.createImage(req.Header.Get("X-Auth-Token"), props)
	if id == "" {
		return "", st, msg
	}
	f.real.scheduleUpload(id, s.ID, f.opts.SnapshotDelay/2, f.opts.SnapshotDelay/2, "", "")
	return id, 0, ""
}

func (l *realLink) createImage(token string, in map[string]any) (string, int, string) {
	var out struct {
		ID string `json:"id"`
	}
	st, _, body, err := l.call("POST", l.GlanceURL+"/v2/images", token, in, "", &out)
	if err != nil {
		return "", http.StatusBadGateway, err.Error()
	}
	if st != http.StatusCreated {
		if st < 400 {
			st = http.StatusBadGateway
		}
		return "", st, strings.TrimSpace(body)
	}
	return out.ID, 0, ""
}

// scheduleUpload uploads the image's data after delay, with the service
// token, as nova-compute (or cinder-volume) would once the snapshot is
// taken: formats first when given (a queued image takes no data without
// them), then the bytes, sent over the time took, which make it active.
func (l *realLink) scheduleUpload(id, server string, delay, took time.Duration, diskFormat, containerFormat string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := &upload{server: server}
	u.timer = time.AfterFunc(delay, func() {
		l.mu.Lock()
		cur := l.uploads[id]
		l.mu.Unlock()
		if cur != u {
			return // canceled
		}
		_ = l.upload(id, took, diskFormat, containerFormat)
		l.mu.Lock()
		if l.uploads[id] == u {
			delete(l.uploads, id)
		}
		l.mu.Unlock()
	})
	l.uploads[id] = u
}

func (l *realLink) upload(id string, took time.Duration, diskFormat, containerFormat string) error {
	tok, err := l.serviceToken()
	if err != nil {
		return err
	}
	if diskFormat != "" {
		patch := []map[string]any{{"op": "replace", "path": "/disk_format", "value": diskFormat},
			{"op": "replace", "path": "/container_format", "value": containerFormat}}
		st, _, body, err := l.call("PATCH", l.GlanceURL+"/v2/images/"+id, tok, patch, "application/openstack-images-v2.1-json-patch", nil)
		if err != nil {
			return fmt.Errorf("set the formats of image %s: %w", id, err)
		}
		if st != http.StatusOK {
			return fmt.Errorf("set the formats of image %s: %d %s", id, st, body)
		}
	}
	st, _, body, err := l.call("PUT", l.GlanceURL+"/v2/images/"+id+"/file", tok, &slowData{chunks: 8, every: took / 8}, "application/octet-stream", nil)
	if err != nil {
		return fmt.Errorf("upload image %s: %w", id, err)
	}
	if st != http.StatusNoContent {
		return fmt.Errorf("upload image %s: %d %s", id, st, body)
	}
	return nil
}

// serverDeleted stops the uploads of a server being deleted and deletes
// their images, as Nova does when the instance goes mid-snapshot; it
// returns the images, each an ordering violation. An image Glance already
// holds active (its upload was just ending) is left alone.
func (l *realLink) serverDeleted(server string) []string {
	l.mu.Lock()
	var ids []string
	for id, u := range l.uploads {
		if u.server == server {
			u.timer.Stop()
			delete(l.uploads, id)
			ids = append(ids, id)
		}
	}
	l.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	tok, err := l.serviceToken()
	if err != nil {
		return ids
	}
	var killed []string
	for _, id := range ids {
		if im, st, err := l.getImage(tok, id); err == nil && st == http.StatusOK && im["status"] == "active" {
			continue
		}
		_, _, _, _ = l.call("DELETE", l.GlanceURL+"/v2/images/"+id, tok, nil, "", nil)
		killed = append(killed, id)
	}
	return killed
}

// slowData is an image's bytes, sent a chunk at a time: the upload lasts
// as long as the snapshot's would, long enough for a request to land while
// Glance is saving.
type slowData struct {
	chunks int
	every  time.Duration
	sent   int
}

func (d *slowData) Read(p []byte) (int, error) {
	if d.sent == d.chunks {
		return 0, io.EOF
	}
	if d.sent > 0 {
		time.Sleep(d.every)
	}
	d.sent++
	n := min(len(p), 512)
	_, _ = rand.Read(p[:n])
	return n, nil
}
