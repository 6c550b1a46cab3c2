package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// runDiff prints how the images of build B differ from those of build A,
// cloud by cloud, as GET /api/v1/drift?from=A&to=B answers.
func runDiff(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	server := fs.String("server", "", "the imagegen server's URL, e.g. https://imagegen.example.org")
	cloud := fs.String("cloud", "", "compare only this cloud's images (default: every cloud both builds have)")
	tokenEnv := fs.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding an API token, sent when set")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen diff --server URL [--cloud NAME] [--token-env VAR] BUILD_A BUILD_B")
		fmt.Fprintln(e.stderr, "Prints the packages added, removed, upgraded and downgraded from BUILD_A's images to BUILD_B's.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *server == "" || fs.NArg() != 2 {
		fs.Usage()
		return exitCode(2)
	}
	base, err := url.Parse(strings.TrimSuffix(*server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return fmt.Errorf("--server %q is not an http(s) URL", *server)
	}
	q := url.Values{"from": {fs.Arg(0)}, "to": {fs.Arg(1)}}
	if *cloud != "" {
		q.Set("cloud", *cloud)
	}
	token, _ := e.lookup(*tokenEnv)
	var d builds.BuildDiff
	if err := getAPI(ctx, base.String()+"/api/v1/drift?"+q.Encode(), token, &d); err != nil {
		return err
	}
	printDiff(e.stdout, &d)
	return nil
}

// printDiff writes a BuildDiff as text: a heading per cloud, then the
// library's table (values made visible: nothing reaches the terminal raw).
func printDiff(w io.Writer, d *builds.BuildDiff) {
	if len(d.Clouds) == 0 {
		fmt.Fprintf(w, "builds %s and %s have no cloud in common\n", manifest.Visible(d.From), manifest.Visible(d.To))
		return
	}
	for i, cc := range d.Clouds {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "== %s: build %s → %s\n", manifest.Visible(cc.Cloud), manifest.Visible(d.From), manifest.Visible(d.To))
		if cc.Changes == nil {
			fmt.Fprintln(w, manifest.Visible(cc.Note))
			continue
		}
		fmt.Fprint(w, cc.Changes.Text(manifest.RenderOptions{}))
	}
}

// getAPI reads a JSON answer of the API, with the token when there is one.
func getAPI(ctx context.Context, u, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	// Two 200 000-package diffs are well under this.
	return json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(v)
}
