package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/config"
)

// runImages lists the images the config's local (qemu) clouds hold, with
// their provenance: the local cloud has no API to ask, its directory is the record.
func runImages(_ context.Context, e *env, args []string) error {
	fl := flag.NewFlagSet("images", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	configFile := fl.String("config", "", "server config `FILE` (required): the clouds")
	only := fl.String("cloud", "", "list only cloud `NAME`")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen images --config FILE [--cloud NAME]")
		fmt.Fprintln(e.stderr, "Lists the images of the config's qemu clouds, newest first, with their provenance.")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if *configFile == "" || fl.NArg() != 0 {
		fl.Usage()
		return exitCode(2)
	}
	cfg, err := config.Load(*configFile, registry())
	if err != nil {
		return err
	}
	return listLocalImages(e.stdout, cfg, *only)
}

// listLocalImages prints a table of the qemu clouds' images.
func listLocalImages(w io.Writer, cfg *config.Config, only string) error {
	names := make([]string, 0, len(cfg.Clouds))
	for name, entry := range cfg.Clouds {
		if entry.Type == qemu.Type && (only == "" || only == name) {
			names = append(names, name)
		}
	}
	if only != "" && len(names) == 0 {
		return fmt.Errorf("no qemu cloud named %q in %s", only, cfg.File)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD\tIMAGE\tGENERATOR\tREPO\tCOMMIT\tSCRIPT-SHA256\tFILE")
	for _, name := range names {
		c, ok := cfg.Clouds[name].Opener.(*qemu.Cloud)
		if !ok {
			continue
		}
		imgs, err := qemu.ListImages(c.Dir())
		if err != nil {
			return fmt.Errorf("cloud %s: %w", name, err)
		}
		for _, im := range imgs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, im.Name,
				orDash(im.Tags[clouds.TagGenerator]), orDash(im.Tags[clouds.TagRepo]), orDash(short(im.Tags[clouds.TagCommit], 12)),
				orDash(short(im.Tags[clouds.TagScriptSHA], 12)), im.Location)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
