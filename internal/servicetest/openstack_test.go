package servicetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { OpenStackMain(m) }

// TestOpenStack: the helper's Keystone issues the user a token whose catalog
// holds the real Glance, the user sees the public base image there, and a
// region lent to a test leads through the router to what the test routes.
func TestOpenStack(t *testing.T) {
	o := StartOpenStack(t)
	if again := StartOpenStack(t); again != o {
		t.Fatal("a second StartOpenStack started the services again")
	}
	tok := o.UserToken(t)
	var im map[string]any
	if _, err := o.call("GET", o.GlanceURL+"/v2/images/"+o.BaseImageID, tok, nil, "", &im); err != nil {
		t.Fatalf("the user reads the base image: %v", err)
	}
	if im["status"] != "active" || im["visibility"] != "public" {
		t.Errorf("base image %v", im)
	}
	if _, err := o.call("GET", o.GlanceURL+"/v2/images", "not-a-token", nil, "", nil); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("Glance with a bad token: %v, want 401", err)
	}

	var got []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.Host+r.URL.RequestURI())
	}))
	defer backend.Close()
	region := o.Region(t)
	o.Route(t, region, map[string]string{"compute": backend.URL + "/R/compute/v2.1", "network": backend.URL + "/R/network"})
	catalog := func() map[string]string {
		var out struct {
			Token struct {
				Catalog []struct {
					Type      string `json:"type"`
					Endpoints []struct {
						Region, Interface, URL string
					} `json:"endpoints"`
				} `json:"catalog"`
			} `json:"token"`
		}
		admin, err := o.adminToken()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", o.KeystoneURL+"/auth/tokens", nil)
		req.Header.Set("X-Auth-Token", admin)
		req.Header.Set("X-Subject-Token", o.UserToken(t))
		resp, err := o.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, s := range out.Token.Catalog {
			for _, e := range s.Endpoints {
				if e.Interface == "public" {
					m[s.Type+"@"+e.Region] = e.URL
				}
			}
		}
		return m
	}
	c := catalog()
	if c["image@RegionOne"] != o.GlanceURL || c["image@"+region] != o.GlanceURL || c["identity@RegionOne"] != o.KeystoneURL+"/" {
		t.Errorf("catalog %v: want Glance in RegionOne and %s, Keystone in RegionOne", c, region)
	}
	compute := c["compute@"+region]
	u, err := url.Parse(compute)
	if err != nil || u.Path != "/R/compute/v2.1" || u.Host == strings.TrimPrefix(backend.URL, "http://") {
		t.Fatalf("compute endpoint %q: want the region's proxy with the fake's path", compute)
	}
	resp, err := http.Get(compute + "/servers/detail?name=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "GET " + u.Host + "/R/compute/v2.1/servers/detail?name=x"; len(got) != 1 || got[0] != want {
		t.Errorf("the proxy sent %q, want %q", got, want)
	}
	// The same paths again (another fake on the same region): no change
	// in Keystone, the proxy follows.
	o.Route(t, region, map[string]string{"compute": backend.URL + "/R/compute/v2.1", "network": backend.URL + "/R/network"})
	if c2 := catalog(); c2["compute@"+region] != compute || c2["network@"+region] != c["network@"+region] {
		t.Errorf("the catalog changed: %v, was %v", c2, c)
	}
}
