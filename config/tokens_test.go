package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAPITokenForms: api_tokens as plain strings (today's configs), as
// mappings with scopes and repos, and from files.
func TestAPITokenForms(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "t")
	if err := os.WriteFile(file, []byte("file-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `api_tokens:
  - "${PLAIN}"
  - {token: "${CI}", scopes: [read], repos: ["fg/*", "Octo/Images"]}
  - {token_file: ` + file + `, scopes: [read, rerun]}
  - {token: admin-token-0123456789, scopes: [admin]}
read_access: public
public_logs: true
metrics_listen: 127.0.0.1:9090
trusted_proxies: [10.0.0.0/8, 192.0.2.7, "2001:db8::/32"]
`
	c, err := Parse([]byte(src), "imagegen.yaml", testRegistry(), lookupFrom(map[string]string{
		"PLAIN": "plain-token-0123456789", "CI": "ci-token-0123456789ab",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APITokens) != 4 {
		t.Fatalf("%d tokens", len(c.APITokens))
	}
	plain, ci, fromFile, admin := c.APITokens[0], c.APITokens[1], c.APITokens[2], c.APITokens[3]
	if plain.Token.Reveal() != "plain-token-0123456789" || !plain.Plain || !slices.Equal(plain.Scopes, PlainTokenScopes) || len(plain.Repos) != 0 {
		t.Errorf("plain token: %+v", plain)
	}
	if fromFile.Token.Reveal() != "file-token-0123456789abcdef" {
		t.Errorf("token_file read %q", fromFile.Token.Reveal())
	}
	// Every form's token is redacted from build logs, the file's too.
	var secrets []string
	for _, s := range c.Secrets() {
		secrets = append(secrets, s.Reveal())
	}
	for _, tok := range c.APITokens {
		if !slices.Contains(secrets, tok.Token.Reveal()) {
			t.Errorf("the token of %+v is not among the config's secrets", tok)
		}
	}
	if c.ReadAccess != ReadPublic || !c.PublicLogs || c.MetricsListen != "127.0.0.1:9090" || len(c.TrustedProxies) != 3 {
		t.Errorf("read_access %q, public_logs %v, metrics_listen %q, trusted_proxies %v", c.ReadAccess, c.PublicLogs, c.MetricsListen, c.TrustedProxies)
	}
	scopes := []struct {
		tok   APIToken
		scope string
		want  bool
	}{
		{plain, ScopeRead, true}, {plain, ScopeRerun, true}, {plain, ScopeAdmin, false},
		{ci, ScopeRead, true}, {ci, ScopeRerun, false}, {ci, ScopeAdmin, false},
		{fromFile, ScopeRerun, true},
		{admin, ScopeRead, true}, {admin, ScopeRerun, true}, {admin, ScopeAdmin, true},
	}
	for _, s := range scopes {
		if got := s.tok.Has(s.scope); got != s.want {
			t.Errorf("token with scopes %v: Has(%s) = %v, want %v", s.tok.Scopes, s.scope, got, s.want)
		}
	}
	for repo, want := range map[string]bool{
		"fg/images": true, "FG/Images": true, "octo/images": true, "octo/images2": false,
		"fgx/images": false, "other/fg": false, "fg": false,
	} {
		if got := ci.SeesRepo(repo); got != want {
			t.Errorf("repos %v: SeesRepo(%q) = %v, want %v", ci.Repos, repo, got, want)
		}
		if !plain.SeesRepo(repo) {
			t.Errorf("a token without repos does not see %q", repo)
		}
	}
}

func TestAccessConfigErrors(t *testing.T) {
	const tok = "0123456789abcdef0123"
	cases := []struct {
		name, src string
		want      []string
	}{
		{"read_access", "read_access: everyone\n", []string{`read_access: "everyone" is not one of: token, public`}},
		{"public_logs without public", "public_logs: true\n", []string{"public_logs: is true but read_access is token"}},
		{"metrics_listen", "metrics_listen: 9090\n", []string{`metrics_listen: "9090" is not host:port or :port`}},
		{"metrics_listen = listen", "listen: :8080\nmetrics_listen: :8080\n", []string{"metrics_listen: is the same address as listen"}},
		{"trusted_proxies", "trusted_proxies: [10.0.0.0/33, proxy.local]\n", []string{`trusted_proxies[0]: "10.0.0.0/33" is not an IP address or CIDR`, `trusted_proxies[1]: "proxy.local" is not an IP address or CIDR`}},
		{"no scopes", "api_tokens: [{token: " + tok + "}]\n", []string{"api_tokens[0].scopes: is missing: list what the token may do (read, rerun, admin)"}},
		{"unknown scope", "api_tokens: [{token: " + tok + ", scopes: [read, write]}]\n", []string{`api_tokens[0].scopes[1]: "write" is not one of: read, rerun, admin`}},
		{"bad repos", "api_tokens: [{token: " + tok + ", scopes: [read], repos: [fg, 'fg/[', '*', 'a/b/c']}]\n", []string{
			`api_tokens[0].repos[0]: "fg" is not an OWNER/NAME pattern`, `api_tokens[0].repos[1]: "fg/[" is not`, `api_tokens[0].repos[2]: "*" is not`, `api_tokens[0].repos[3]: "a/b/c" is not`}},
		{"no token", "api_tokens: [{scopes: [read]}]\n", []string{"api_tokens[0]: has no token: set token (e.g. ${IMAGEGEN_API_TOKEN}) or token_file"}},
		{"both", "api_tokens: [{token: " + tok + ", token_file: /x, scopes: [read]}]\n", []string{"api_tokens[0].token_file: set both api_tokens[0].token and api_tokens[0].token_file: keep one"}},
		{"missing file", "api_tokens: [{token_file: /nonexistent/t, scopes: [read]}]\n", []string{"api_tokens[0].token_file: open /nonexistent/t: no such file or directory"}},
		{"short", "api_tokens: [short, {token: short2, scopes: [read]}]\n", []string{"api_tokens[0]: is shorter than 16 characters", "api_tokens[1]: is shorter than 16 characters"}},
		{"duplicate", "api_tokens: [" + tok + ", {token: " + tok + ", scopes: [read]}]\n", []string{"api_tokens[1]: is the same token as api_tokens[0]"}},
		{"unknown key", "api_tokens: [{token: " + tok + ", scope: [read]}]\n", []string{`unknown key "scope" in api_tokens: did you mean "scopes"?`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tok) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestAccessWarnings(t *testing.T) {
	for _, c := range []struct {
		src, want string
	}{
		{"clouds: {}\n", "api_tokens is empty and read_access is token: the API refuses every request"},
		{"read_access: public\n", "api_tokens is empty: the re-run API refuses every request"},
		{"read_access: public\n", "read_access is public: anyone who reaches this server reads every build and image lineage (build logs still need a token)"},
		{"read_access: public\npublic_logs: true\n", "reads every build, image lineage and build log"},
	} {
		cfg, err := Parse([]byte(c.src), "imagegen.yaml", testRegistry(), lookupFrom(nil))
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, c.want) {
			t.Errorf("%q: warnings %q lack %q", c.src, w, c.want)
		}
	}
}
