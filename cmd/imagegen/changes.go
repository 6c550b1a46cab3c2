package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/imagegen/imagegen/builder/manifest"
	"github.com/imagegen/imagegen/builds"
)

// runChanges prints what changed from the image before (or --since) to an
// image: the commits between them, the script diff, the base image, the
// packages.
func runChanges(ctx context.Context, e *env, args []string) error {
	fl := flag.NewFlagSet("changes", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	server := fl.String("server", "", "the imagegen server's `URL` (required)")
	cloud := fl.String("cloud", "", "the cloud `NAME` the image is on (needed when the id is on several clouds)")
	since := fl.String("since", "", "compare with image `ID` on the same cloud instead of the generator's previous image")
	tokenEnv := fl.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding the API token (unset: no token)")
	asJSON := fl.Bool("json", false, "print the answer as JSON")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen changes --server URL [--cloud NAME] [--since ID] IMAGE_ID")
		fmt.Fprintln(e.stderr, "Prints what changed since the previous image of the generator on that cloud (or --since):")
		fmt.Fprintln(e.stderr, "the commits between them, the script's unified diff, the base image and the packages.")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 || *server == "" {
		fl.Usage()
		return exitCode(2)
	}
	id := fl.Arg(0)
	c, err := newAPIClient(e, *server, *tokenEnv)
	if err != nil {
		return err
	}
	if *cloud == "" {
		var st builds.ImageStory
		if err := c.get(ctx, imagePath("", id), &st); err != nil {
			return err
		}
		*cloud = st.Cloud
	}
	path := imagePath(*cloud, id) + "/changes"
	if *since != "" {
		path += "?since=" + url.QueryEscape(*since)
	}
	var ch builds.ImageChanges
	if err := c.get(ctx, path, &ch); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, ch)
	}
	printChanges(e.stdout, &ch)
	return nil
}

func printChanges(w io.Writer, ch *builds.ImageChanges) {
	img := func(r builds.ImageRecord) string {
		return fmt.Sprintf("%s %s  commit %s  build %s  built %s", visible(r.ImageID), paren(r.ImageName), visible(shortSHA(r.Commit)), visible(r.Build), timeText(r.Created))
	}
	fmt.Fprintf(w, "image %s on cloud %s\n", visible(ch.To.ImageID), visible(ch.To.Cloud))
	if ch.From == nil {
		fmt.Fprintf(w, "to    %s\n\n%s\n", img(ch.To), visible(ch.ScriptNote))
		return
	}
	fmt.Fprintf(w, "from  %s\nto    %s\n\n", img(*ch.From), img(ch.To))

	switch {
	case ch.Commits != nil:
		fmt.Fprintf(w, "commits: %d", ch.TotalCommits)
		if ch.CompareURL != "" {
			fmt.Fprintf(w, "  %s", visible(ch.CompareURL))
		}
		fmt.Fprintln(w)
		for _, cm := range ch.Commits {
			subject, _, _ := strings.Cut(cm.Message, "\n")
			author := ""
			if cm.Author != "" {
				author = "  (" + visible(cm.Author) + ")"
			}
			fmt.Fprintf(w, "  %s %s%s\n", visible(shortSHA(cm.SHA)), visible(subject), author)
		}
	case ch.CompareURL != "":
		fmt.Fprintf(w, "commits: %s\n", visible(ch.CompareURL))
	default:
		fmt.Fprintln(w, "commits: -")
	}
	if ch.CommitsNote != "" {
		fmt.Fprintf(w, "  (%s)\n", visible(ch.CommitsNote))
	}

	if ch.BaseImage != nil {
		fmt.Fprintf(w, "base image: %s -> %s\n", visible(ch.BaseImage.From), visible(ch.BaseImage.To))
	} else {
		fmt.Fprintf(w, "base image: unchanged (%s)\n", visible(ch.To.BaseImage))
	}

	switch {
	case ch.ScriptDiff != "":
		fmt.Fprintln(w, "script:")
		fmt.Fprint(w, visibleLines(strings.TrimSuffix(ch.ScriptDiff, "\n")), "\n")
	case ch.ScriptNote != "":
		fmt.Fprintf(w, "script: %s\n", visible(ch.ScriptNote))
	default:
		fmt.Fprintln(w, "script: unchanged")
	}

	p := ch.Packages
	if !p.Recorded || p.Changes == nil {
		fmt.Fprintf(w, "packages: not compared (%s)\n", visible(p.Note))
		return
	}
	printPackages(w, p.Changes)
}

// maxPackageLines bounds the package changes listed; the JSON has them all.
const maxPackageLines = 200

func printPackages(w io.Writer, c *manifest.Changes) {
	if c.Identical {
		fmt.Fprintf(w, "packages: identical (%d)\n", c.Packages)
		return
	}
	fmt.Fprintf(w, "packages: %d added, %d removed, %d upgraded, %d downgraded, %d changed\n", c.Added, c.Removed, c.Upgraded, c.Downgraded, c.Changed)
	for _, sc := range c.System {
		fmt.Fprintf(w, "  system %s: %s -> %s\n", visible(sc.Field), visible(sc.From), visible(sc.To))
	}
	for i, pc := range c.Changes {
		if i == maxPackageLines {
			fmt.Fprintf(w, "  … %d more (--json lists them all)\n", len(c.Changes)-i)
			break
		}
		mark := map[manifest.ChangeKind]string{manifest.Added: "+", manifest.Removed: "-"}[pc.Kind]
		if mark == "" {
			mark = "~"
		}
		fmt.Fprintf(w, "  %s %s %s", mark, visible(string(pc.Manager)), visible(pc.Name))
		switch {
		case pc.From != "" && pc.To != "":
			fmt.Fprintf(w, " %s -> %s", visible(pc.From), visible(pc.To))
		case pc.To != "":
			fmt.Fprintf(w, " %s", visible(pc.To))
		case pc.From != "":
			fmt.Fprintf(w, " %s", visible(pc.From))
		}
		fmt.Fprintln(w)
	}
	if c.FromPartial || c.ToPartial {
		fmt.Fprintln(w, "  (a manifest is partial: some of what the image holds is not listed)")
	}
}
