package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
)

// runTrace prints an image's story: from the server's records (--server),
// or, when they are gone, from the cloud's own tags (--config, --cloud).
func runTrace(ctx context.Context, e *env, args []string) error {
	fl := flag.NewFlagSet("trace", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	server := fl.String("server", "", "the imagegen server's `URL`: its records of the image")
	configFile := fl.String("config", "", "a config `FILE` naming the image's cloud: read the image's tags from the cloud itself")
	cloud := fl.String("cloud", "", "the cloud `NAME` the image is on (required with --config; with --server, when the id is on several clouds)")
	tokenEnv := fl.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding the API token (unset: no token)")
	asJSON := fl.Bool("json", false, "print the answer as JSON")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen trace --server URL [--cloud NAME] IMAGE_ID")
		fmt.Fprintln(e.stderr, "       imagegen trace --config FILE --cloud NAME IMAGE_ID")
		fmt.Fprintln(e.stderr, "Prints where an image came from: repository, commit, generator, script digest, base image, build;")
		fmt.Fprintln(e.stderr, "with --server also its siblings on the other clouds and the images before and after it.")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 || (*server == "") == (*configFile == "") || (*configFile != "" && *cloud == "") {
		fl.Usage()
		return exitCode(2)
	}
	id := fl.Arg(0)
	if *configFile != "" {
		img, err := describeImage(ctx, e, *configFile, *cloud, id)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, map[string]any{"cloud": *cloud, "image_id": img.ID, "image_name": img.Name, "tags": img.Tags})
		}
		printTags(e.stdout, *cloud, img)
		return nil
	}
	c, err := newAPIClient(e, *server, *tokenEnv)
	if err != nil {
		return err
	}
	var st builds.ImageStory
	if err := c.get(ctx, imagePath(*cloud, id), &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, st)
	}
	printStory(e.stdout, &st)
	return nil
}

// imagePath is the API path of an image, with or without its cloud.
func imagePath(cloud, id string) string {
	if cloud == "" {
		return "/api/v1/images/" + url.PathEscape(id)
	}
	return "/api/v1/images/" + url.PathEscape(cloud) + "/" + url.PathEscape(id)
}

func printStory(w io.Writer, st *builds.ImageStory) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, vs ...string) { fmt.Fprintf(tw, "%s\t%s\n", k, strings.Join(vs, "  ")) }
	row("image", visible(st.ImageID), paren(st.ImageName), "on cloud "+visible(st.Cloud))
	row("repository", visible(st.Repo))
	row("commit", visible(st.Commit), visible(st.CommitURL))
	if st.Branch != "" {
		row("branch", visible(st.Branch))
	} else if st.Ref != "" {
		row("ref", visible(st.Ref))
	}
	row("generator", visible(st.Generator))
	row("script", "sha256:"+visible(st.Digest))
	row("base image", visible(st.BaseImage))
	build := visible(st.Build)
	if !st.BuildRecord {
		build += "  (its record has expired)"
	}
	row("build", build, visible(st.BuildURL))
	row("built at", timeText(st.Created))
	if st.ProvenanceSHA256 != "" {
		row("provenance", "sha256:"+visible(st.ProvenanceSHA256))
	}
	if len(st.Siblings) == 0 {
		row("siblings", "none (the build made no image on another cloud)")
	}
	for i, s := range st.Siblings {
		k := ""
		if i == 0 {
			k = "siblings"
		}
		row(k, visible(s.Cloud)+":", visible(s.ImageID), paren(s.ImageName))
	}
	row("previous", neighbour(st.Previous))
	row("next", neighbour(st.Next))
	_ = tw.Flush()
}

func neighbour(r *builds.ImageRecord) string {
	if r == nil {
		return "none recorded"
	}
	return fmt.Sprintf("%s %s  commit %s  build %s  built %s", visible(r.ImageID), paren(r.ImageName), visible(shortSHA(r.Commit)), visible(r.Build), timeText(r.Created))
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return "(" + visible(s) + ")"
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func shortSHA(s string) string {
	if len(s) > 7 {
		return s[:7]
	}
	return s
}

// printTags prints an image's provenance as its cloud holds it.
func printTags(w io.Writer, cloud string, img clouds.Image) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "image\t%s  %s  on cloud %s\n", visible(img.ID), paren(img.Name), visible(cloud))
	known := []struct{ tag, label string }{
		{clouds.TagRepo, "repository"}, {clouds.TagCommit, "commit"}, {clouds.TagGenerator, "generator"},
		{clouds.TagScriptSHA, "script sha256"}, {clouds.TagBaseImage, "base image"}, {clouds.TagBuild, "build"},
		{clouds.TagProvenance, "provenance sha256"}, {clouds.TagManifestSHA, "manifest sha256"},
	}
	seen := map[string]bool{}
	for _, k := range known {
		seen[k.tag] = true
		v, ok := img.Tags[k.tag]
		if !ok && k.tag == clouds.TagManifestSHA {
			continue // an image whose spec collects no manifest
		}
		if !ok {
			v = "(no " + k.tag + " tag)"
		} else {
			v = visible(v)
		}
		fmt.Fprintf(tw, "%s\t%s\n", k.label, v)
	}
	var more []string
	for k := range img.Tags {
		if !seen[k] && strings.HasPrefix(k, clouds.TagManagedKey+":") {
			more = append(more, k)
		}
	}
	slices.Sort(more)
	for _, k := range more {
		fmt.Fprintf(tw, "%s\t%s\n", visible(k), visible(img.Tags[k]))
	}
	fmt.Fprintln(tw, "source\tthe cloud's own tags (not imagegen's records); imagegen verify checks them against the signed provenance")
	_ = tw.Flush()
}

// describeImage opens cloud from the config (asking for its password when
// it is password: ask) and reads the image as the cloud holds it now.
func describeImage(ctx context.Context, e *env, configFile, cloud, id string) (clouds.Image, error) {
	cfg, err := config.Load(configFile, registry())
	if err != nil {
		return clouds.Image{}, err
	}
	entry, ok := cfg.Clouds[cloud]
	if !ok {
		return clouds.Image{}, fmt.Errorf("no cloud %q in %s (it has: %s)", cloud, configFile, strings.Join(cfg.CloudNames(), ", "))
	}
	var cred clouds.Credentials
	if entry.AsksPassword() {
		pw, err := readPassword(e, bufio.NewReader(e.stdin), fmt.Sprintf("password for cloud %s: ", cloud))
		if err != nil {
			return clouds.Image{}, err
		}
		cred.Password = secret.New(pw)
	}
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := entry.Open(octx, cred)
	if err != nil {
		return clouds.Image{}, fmt.Errorf("open cloud %s: %w", cloud, err)
	}
	d, ok := c.(clouds.ImageDescriber)
	if !ok {
		return clouds.Image{}, fmt.Errorf("cloud %s (type %s) cannot describe an image", cloud, entry.Type)
	}
	img, err := d.DescribeImage(octx, id)
	if clouds.IsNotFound(err) {
		return clouds.Image{}, fmt.Errorf("cloud %s has no image %q: %w", cloud, id, err)
	}
	return img, err
}

// apiClient reads imagegen's API.
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIClient(e *env, server, tokenEnv string) (*apiClient, error) {
	base, err := url.Parse(strings.TrimSuffix(server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--server %q is not an http(s) URL", server)
	}
	token, _ := e.lookup(tokenEnv)
	return &apiClient{base: base.String(), token: token, hc: &http.Client{Timeout: 60 * time.Second}}, nil
}

// maxAnswer bounds what the CLI reads of one answer.
const maxAnswer = 32 << 20

// fetch reads path's body; an answer other than 200 is an error saying what
// the server said (and, for 409, on which clouds the id is).
func (c *apiClient) fetch(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", c.base+path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", c.base+path, err)
	}
	if len(body) > maxAnswer {
		return nil, fmt.Errorf("get %s: the answer is over %d MiB", c.base+path, maxAnswer>>20)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error  string   `json:"error"`
			Clouds []string `json:"clouds"`
		}
		_ = json.Unmarshal(body, &e)
		msg := visible(e.Error)
		if msg == "" {
			msg = visible(strings.TrimSpace(string(body[:min(len(body), 300)])))
		}
		if resp.StatusCode == http.StatusConflict && len(e.Clouds) > 0 {
			return nil, fmt.Errorf("%s (give one with --cloud)", msg)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return body, nil
}

func (c *apiClient) get(ctx context.Context, path string, v any) error {
	body, err := c.fetch(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("get %s: %w", c.base+path, err)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// visible makes text from a repository, a VM or a cloud safe to print on a
// terminal: control characters (ESC and its sequences among them) and
// invalid UTF-8 are shown as \xNN, and the invisible characters that reorder
// or hide text (bidirectional controls, zero-width ones) as \u{XXXX}; a
// backslash is doubled so the escapes are unambiguous. Tabs are kept.
func visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		case hiddenRune(r):
			fmt.Fprintf(&b, `\u{%04X}`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	return b.String()
}

// hiddenRune: characters that change how the text around them reads
// without showing themselves.
func hiddenRune(r rune) bool {
	switch {
	case r == 0x061C, r == 0x180E, r == 0xFEFF, r == 0x2028, r == 0x2029, r == 0x00AD:
		return true
	case r >= 0x200B && r <= 0x200F, r >= 0x202A && r <= 0x202E, r >= 0x2060 && r <= 0x2069:
		return true
	}
	return false
}

// visibleLines is visible for multi-line text: each line escaped, the
// newlines kept.
func visibleLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = visible(strings.TrimSuffix(l, "\r"))
	}
	return strings.Join(lines, "\n")
}
