package openstacktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRefusesWhatTheRealAPIRefuses: the fake's schema checks are real, so a
// driver whose bodies the fake accepts sends what Nova, Neutron and Keystone accept.
func TestRefusesWhatTheRealAPIRefuses(t *testing.T) {
	f := New(Options{})
	defer f.Close()
	post := func(path, token, body string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", f.URL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-Auth-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	auth := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo","domain":{"name":"Default"},"password":"secret"}}},"scope":{"project":{"name":"demo","domain":{"name":"Default"}}}}}`
	resp, _ := post("/identity/v3/auth/tokens", "", auth)
	tok := resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != 201 || tok == "" {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	long := strings.Repeat("x", 256)
	tests := []struct {
		name, path, token, body string
		status                  int
		rejected                bool // recorded as a body the real API refuses
	}{
		{"good server", "/RegionOne/compute/v2.1/servers", tok, `{"server":{"name":"a","imageRef":"` + BaseImageID + `","flavorRef":"1"}}`, 202, false},
		{"unknown server field", "/RegionOne/compute/v2.1/servers", tok, `{"server":{"name":"a","imageref":"x","flavorRef":"1"}}`, 400, true},
		{"metadata too long", "/RegionOne/compute/v2.1/servers", tok, `{"server":{"name":"a","imageRef":"` + BaseImageID + `","flavorRef":"1","metadata":{"k":"` + long + `"}}}`, 400, true},
		{"user data not base64", "/RegionOne/compute/v2.1/servers", tok, `{"server":{"name":"a","imageRef":"` + BaseImageID + `","flavorRef":"1","user_data":"#cloud-config"}}`, 400, true},
		{"missing flavor", "/RegionOne/compute/v2.1/servers", tok, `{"server":{"name":"a","imageRef":"` + BaseImageID + `","flavorRef":"99"}}`, 400, false},
		{"bad key", "/RegionOne/compute/v2.1/os-keypairs", tok, `{"keypair":{"name":"k","public_key":"ssh-rsa nope"}}`, 400, true},
		{"no token", "/RegionOne/compute/v2.1/os-keypairs", "", `{}`, 401, false},
		{"wrong password", "/identity/v3/auth/tokens", "", strings.Replace(auth, `"secret"`, `"nope"`, 1), 401, false},
		{"fip on a tenant network", "/RegionOne/network/v2.0/floatingips", tok, `{"floatingip":{"floating_network_id":"0d7b5e1c-0000-4000-8000-000000000001"}}`, 400, false},
		{"unknown fip field", "/RegionOne/network/v2.0/floatingips", tok, `{"floatingip":{"floating_network_id":"x","pool":"public"}}`, 400, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.Rejected())
			resp, body := post(tc.path, tc.token, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := len(f.Rejected()) > before; got != tc.rejected {
				t.Errorf("recorded as refused: %v, want %v (%s)", got, tc.rejected, body)
			}
		})
	}
}

// TestListsAtScale: Nova's server list pages (limit, marker, next link),
// Glance's in: filters, and token buckets answering 429 with Retry-After.
func TestListsAtScale(t *testing.T) {
	f := New(Options{ServerQuota: 100, Throttle: []Throttle{{Match: `^GET /RegionOne/image/`, Rate: 1, Burst: 1}}})
	defer f.Close()
	r := f.region("RegionOne")
	f.mu.Lock()
	now := time.Now()
	for i := range 7 {
		id := fmt.Sprintf("srv-%02d", i)
		r.servers[id] = &server{ID: id, Name: id, Status: "ACTIVE", Created: now.Add(time.Duration(i) * time.Millisecond)}
	}
	f.mu.Unlock()
	a := f.AddImage("RegionOne", Image{Name: "a"})
	b := f.AddImage("RegionOne", Image{Name: "b", Status: "saving"})
	tok := login(t, f)
	get := func(path string) (int, map[string]any, http.Header) {
		req, _ := http.NewRequest("GET", f.URL()+path, nil)
		req.Header.Set("X-Auth-Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body, resp.Header
	}
	var pages []int
	path := "/RegionOne/compute/v2.1/servers/detail?limit=3"
	for path != "" {
		code, body, _ := get(path)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		pages = append(pages, len(body["servers"].([]any)))
		path = ""
		if links, ok := body["servers_links"].([]any); ok {
			href := links[0].(map[string]any)["href"].(string)
			_, rest, _ := strings.Cut(href, "/RegionOne/")
			path = "/RegionOne/" + rest
		}
	}
	if fmt.Sprint(pages) != "[3 3 1]" {
		t.Errorf("server pages %v; want [3 3 1]", pages)
	}
	code, body, _ := get("/RegionOne/image/v2/images?id=in:" + a + "," + b + "&status=in:queued,saving")
	if ims := body["images"].([]any); code != 200 || len(ims) != 1 || ims[0].(map[string]any)["id"] != b {
		t.Errorf("images by id=in: and status=in: %d %v; want only %s", code, body, b)
	}
	code, _, h := get("/RegionOne/image/v2/images?id=" + a)
	if code != 429 || h.Get("Retry-After") != "1" {
		t.Errorf("a second image list at once: %d, Retry-After %q; want 429, 1", code, h.Get("Retry-After"))
	}
	if n, throttled := f.CountSince(now, `^GET /RegionOne/image/`); n != 2 || throttled != 1 {
		t.Errorf("CountSince: %d, %d throttled; want 2, 1", n, throttled)
	}
}

// TestImagesUpdatedAtFilter: Glance's updated_at=op:date list filter, on the
// second (as Glance keeps it); a date that is none is a 400.
func TestImagesUpdatedAtFilter(t *testing.T) {
	f := New(Options{})
	defer f.Close()
	a := f.AddImage("RegionOne", Image{Name: "a"})
	b := f.AddImage("RegionOne", Image{Name: "b"})
	t0 := time.Now().UTC().Truncate(time.Second)
	f.mu.Lock()
	r := f.region("RegionOne")
	r.images[a].Updated = t0.Add(-10 * time.Second)
	r.images[b].Updated = t0.Add(300 * time.Millisecond)
	f.mu.Unlock()
	tok := login(t, f)
	ids := func(filter string) (int, []string) {
		req, _ := http.NewRequest("GET", f.URL()+"/RegionOne/image/v2/images?id=in:"+a+","+b+"&updated_at="+filter, nil)
		req.Header.Set("X-Auth-Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Images []struct {
				ID        string `json:"id"`
				UpdatedAt string `json:"updated_at"`
			} `json:"images"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		var out []string
		for _, im := range body.Images {
			out = append(out, im.ID)
		}
		return resp.StatusCode, out
	}
	at := t0.Format(time.RFC3339)
	for filter, want := range map[string][]string{"gte:" + at: {b}, "gt:" + at: nil, "lt:" + at: {a}, "eq:" + at: {b}} {
		if code, got := ids(filter); code != 200 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("updated_at=%s: %d %v; want %v", filter, code, got, want)
		}
	}
	if code, _ := ids("gte:yesterday"); code != 400 {
		t.Errorf("updated_at=gte:yesterday: %d; want 400", code)
	}
}
