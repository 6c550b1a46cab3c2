package openstacktest

import (
	"net/http"
	"strings"
	"time"
)

// identityV2 answers Keystone v2.0's POST /v2.0/tokens, the only v2 call a
// client makes (Havana and Icehouse clouds; today's Keystone has no v2.0):
// Options.Username's password (or a token the fake issued) for tenant
// Options.Project, by name or id, and a catalog of publicURL, internalURL
// and adminURL per region.
func (f *Fake) identityV2(w http.ResponseWriter, req *http.Request, p string) {
	if p != "/v2.0/tokens" || req.Method != "POST" {
		writeErr(w, "/identity"+p, 404, "The resource could not be found.")
		return
	}
	var body struct {
		Auth struct {
			PasswordCredentials *struct {
				Username string `json:"username"`
				Password string `json:"password"`
			} `json:"passwordCredentials,omitempty"`
			TokenCredentials *struct {
				ID string `json:"id"`
			} `json:"token,omitempty"`
			TenantName string `json:"tenantName,omitempty"`
			TenantID   string `json:"tenantId,omitempty"`
		} `json:"auth"`
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.decode(w, req, &body) {
		return
	}
	a := body.Auth
	switch {
	case a.PasswordCredentials != nil:
		if a.PasswordCredentials.Username != f.opts.Username || a.PasswordCredentials.Password != f.opts.Password {
			writeErr(w, "/identity", 401, "Invalid user / password")
			return
		}
	case a.TokenCredentials != nil:
		if !f.tok[a.TokenCredentials.ID] {
			writeErr(w, "/identity", 401, "The request you have made requires authentication.")
			return
		}
	default:
		f.reject(w, req, "Expecting to find passwordCredentials or token in auth")
		return
	}
	if a.TenantName != f.opts.Project && a.TenantID != "p-"+f.opts.Project {
		writeErr(w, "/identity", 401, "The request you have made requires authentication (unknown tenant).")
		return
	}
	tok := f.uuid()
	f.tok[tok] = true
	var catalog []any
	for _, svc := range []struct{ typ, name, path string }{
		{"compute", "nova", "/compute/v2.1"}, {"image", "glance", "/image"}, {"network", "neutron", "/network"},
		{"volumev3", "cinderv3", "/volume/v3"},
	} {
		var eps []any
		for _, rg := range f.opts.Regions {
			u := f.srv.URL + "/" + rg + svc.path
			eps = append(eps, map[string]any{"region": rg, "publicURL": u, "internalURL": u, "adminURL": u, "id": f.uuid()})
		}
		catalog = append(catalog, map[string]any{"type": svc.typ, "name": svc.name, "endpoints": eps, "endpoints_links": []any{}})
	}
	v2 := strings.TrimSuffix(f.AuthURL, "/v3") + "/v2.0"
	catalog = append(catalog, map[string]any{"type": "identity", "name": "keystone", "endpoints_links": []any{}, "endpoints": []any{
		map[string]any{"region": f.opts.Regions[0], "publicURL": v2, "internalURL": v2, "adminURL": v2, "id": f.uuid()}}})
	tenant := map[string]any{"id": "p-" + f.opts.Project, "name": f.opts.Project, "enabled": true, "description": nil}
	writeJSON(w, 200, map[string]any{"access": map[string]any{
		"token": map[string]any{"id": tok, "issued_at": time.Now().UTC().Format("2006-01-02T15:04:05.000000"),
			"expires": time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "tenant": tenant},
		"serviceCatalog": catalog,
		"user": map[string]any{"id": "u-" + f.opts.Username, "name": f.opts.Username, "username": f.opts.Username,
			"roles": []any{map[string]any{"name": "_member_"}}, "roles_links": []any{}},
		"metadata": map[string]any{"is_admin": 0, "roles": []string{"9fe2ff9ee4384b1894a90878d3e92bab"}},
	}})
}
