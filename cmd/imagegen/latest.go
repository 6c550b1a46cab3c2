package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/imagegen/imagegen/server"
)

// runLatest prints the id of the newest good image of a generator on a
// cloud, as GET /api/v1/latest answers, and nothing else: for Terraform,
// Heat templates and shell scripts.
func runLatest(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("latest", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	srv := fs.String("server", "", "the imagegen server's URL, e.g. https://imagegen.example.org")
	repo := fs.String("repo", "", "the generators' repository, OWNER/NAME")
	gen := fs.String("generator", "", "the generator")
	cloud := fs.String("cloud", "", "the cloud, by its name in the server's config")
	branch := fs.String("branch", "", "only images built from this branch (default: any the generator builds)")
	channel := fs.String("channel", "", "the image the spec's channel: points at (e.g. stable)")
	jsonOut := fs.Bool("json", false, "print the whole answer (id, name, commit, built_at, ...) as JSON")
	tokenEnv := fs.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding an API token, sent when set")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen latest --server URL --repo OWNER/NAME --generator G --cloud C [--branch B] [--channel NAME] [--json]")
		fmt.Fprintln(e.stderr, "Prints the id of the newest image of the generator on the cloud whose build succeeded and whose test (if any) passed.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *srv == "" || *repo == "" || *gen == "" || *cloud == "" || fs.NArg() != 0 {
		fs.Usage()
		return exitCode(2)
	}
	base, err := url.Parse(strings.TrimSuffix(*srv, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return fmt.Errorf("--server %q is not an http(s) URL", *srv)
	}
	q := url.Values{"repo": {*repo}, "generator": {*gen}, "cloud": {*cloud}}
	if *branch != "" {
		q.Set("branch", *branch)
	}
	if *channel != "" {
		q.Set("channel", *channel)
	}
	token, _ := e.lookup(*tokenEnv)
	var img server.LatestImage
	if err := getAPI(ctx, base.String()+"/api/v1/latest?"+q.Encode(), token, &img); err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(img)
	}
	if img.ID == "" {
		return fmt.Errorf("the server answered no image id")
	}
	fmt.Fprintln(e.stdout, img.ID)
	return nil
}
