package openstacktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestImageListPaging: Glance's list as the real one answers it: newest
// first, pages of limit (25 by default, capped at ImageListMax), a next link
// with the marker whenever a page is full, unknown keys as property filters.
func TestImageListPaging(t *testing.T) {
	f := New(Options{ImageListMax: 30})
	defer f.Close()
	tok := login(t, f)
	var added []string // oldest first, after the base image
	for i := range 31 {
		props := map[string]string{}
		if i%10 == 0 {
			props["imagegen:build"] = "b1"
		}
		added = append(added, f.AddImage("RegionOne", Image{Name: fmt.Sprintf("img-%02d", i), Properties: props}))
	}
	type page struct {
		Images []struct {
			ID    string `json:"id"`
			Build string `json:"imagegen:build"`
		} `json:"images"`
		Next string `json:"next"`
	}
	get := func(query string) (int, page) {
		t.Helper()
		req, _ := http.NewRequest("GET", f.URL()+"/RegionOne/image/v2/images"+query, nil)
		req.Header.Set("X-Auth-Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p page
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, p
	}
	tests := []struct {
		name, query string
		status      int
		n           int    // images on the page
		first       string // the first image's id, when checked
		next        string // the next link, "" for none
	}{
		{"default page of 25, newest first", "", 200, 25, added[30], "/v2/images?marker=" + added[6]},
		{"limit capped at ImageListMax", "?limit=1000", 200, 30, added[30], "/v2/images?limit=1000&marker=" + added[1]},
		{"after the marker", "?limit=1000&marker=" + added[1], 200, 2, added[0], ""},
		{"a full last page still links on", "?limit=2&marker=" + added[1], 200, 2, added[0], "/v2/images?limit=2&marker=" + BaseImageID},
		{"property filter", "?imagegen%3Abuild=b1", 200, 4, added[30], ""},
		{"bad limit", "?limit=-1", 400, 0, "", ""},
		{"unknown marker", "?marker=nope", 400, 0, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, p := get(tc.query)
			if status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
			if len(p.Images) != tc.n {
				t.Fatalf("%d images, want %d", len(p.Images), tc.n)
			}
			if tc.first != "" && p.Images[0].ID != tc.first {
				t.Errorf("first image %s, want %s", p.Images[0].ID, tc.first)
			}
			if p.Next != tc.next {
				t.Errorf("next %q, want %q", p.Next, tc.next)
			}
		})
	}
	before := len(f.Rejected())
	if status, _ := get("?sort_key=name"); status != 400 || len(f.Rejected()) != before+1 {
		t.Errorf("sort_key, which the fake does not implement: status %d, refused %v", status, f.Rejected())
	}
}

func login(t *testing.T, f *Fake) string {
	t.Helper()
	auth := `{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"demo","domain":{"name":"Default"},"password":"secret"}}},"scope":{"project":{"name":"demo","domain":{"name":"Default"}}}}}`
	resp, err := http.Post(f.URL()+"/identity/v3/auth/tokens", "application/json", strings.NewReader(auth))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tok := resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != 201 || tok == "" {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	return tok
}
