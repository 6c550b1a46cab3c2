package githubtest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ExamplesEnv names the directory of the npm package @octokit/webhooks-examples.
const ExamplesEnv = "IMAGEGEN_OCTOKIT_EXAMPLES"

// examplesRel is where scripts/install-deps.sh installs the package, from the module root.
const examplesRel = ".cache/octokit/node_modules/@octokit/webhooks-examples"

var (
	examplesMu    sync.Mutex
	examplesCache = map[string]map[string][]json.RawMessage{} // index file → event → examples
)

// Example returns the raw JSON of the first real GitHub payload of event
// (from @octokit/webhooks-examples) for which pick returns true; nil pick
// takes the first. The test fails, with how to install the examples, when
// they are missing, and when nothing matches.
func Example(t testing.TB, event string, pick func(map[string]any) bool) []byte {
	t.Helper()
	byEvent := loadExamples(t)
	list, ok := byEvent[event]
	if !ok {
		t.Fatalf("githubtest: no %q webhook examples in @octokit/webhooks-examples", event)
	}
	for _, raw := range list {
		if pick != nil {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("githubtest: a %q example is not a JSON object: %v", event, err)
			}
			if !pick(m) {
				continue
			}
		}
		return bytes.Clone(raw)
	}
	t.Fatalf("githubtest: none of the %d %q examples matches", len(list), event)
	return nil
}

// Examples returns every payload of @octokit/webhooks-examples, by event
// (the X-GitHub-Event it comes with), for checks that must hold for all of
// them; the test fails as Example does when they are missing.
func Examples(t testing.TB) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	for event, list := range loadExamples(t) {
		for _, raw := range list {
			out[event] = append(out[event], bytes.Clone(raw))
		}
	}
	return out
}

func loadExamples(t testing.TB) map[string][]json.RawMessage {
	t.Helper()
	dir := os.Getenv(ExamplesEnv)
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatalf("githubtest: %s is not set and the module root was not found (%v); run `make test-deps` (installs @octokit/webhooks-examples into %s) or set %s", ExamplesEnv, err, examplesRel, ExamplesEnv)
		}
		dir = filepath.Join(root, examplesRel)
	}
	index := filepath.Join(dir, "api.github.com", "index.json")
	examplesMu.Lock()
	defer examplesMu.Unlock()
	if m, ok := examplesCache[index]; ok {
		return m
	}
	b, err := os.ReadFile(index)
	if err != nil {
		t.Fatalf("githubtest: real webhook payloads are missing: %v; run `make test-deps` (npm installs @octokit/webhooks-examples into %s) or set %s to the package directory", err, examplesRel, ExamplesEnv)
	}
	var events []struct {
		Name     string            `json:"name"`
		Examples []json.RawMessage `json:"examples"`
	}
	if err := json.Unmarshal(b, &events); err != nil {
		t.Fatalf("githubtest: %s: %v", index, err)
	}
	m := map[string][]json.RawMessage{}
	for _, e := range events {
		m[e.Name] = append(m[e.Name], e.Examples...)
	}
	examplesCache[index] = m
	return m
}

// moduleRoot finds the directory of the main module's go.mod: asking the go
// command first, then walking up from the working directory.
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}

// Delivery posts body to url as GitHub delivers a webhook: X-GitHub-Event,
// X-GitHub-Delivery, and X-Hub-Signature-256 signed with secret (no
// signature when secret is nil). The response body is closed when the test ends.
func Delivery(t testing.TB, url, event, deliveryID string, secret, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("githubtest: delivery request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/imagegen-test")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", deliveryID)
	req.Header.Set("X-GitHub-Hook-ID", "1")
	if secret != nil {
		req.Header.Set("X-Hub-Signature-256", Sign(secret, body))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("githubtest: posting the %s delivery %s: %v", event, deliveryID, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
