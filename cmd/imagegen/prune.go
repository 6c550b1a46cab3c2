package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/store"
)

// runPrune shows, or carries out, the retention plan (the specs' keep:)
// across the config's clouds: the images each cloud lists (its drivers'
// ImageLister), and the build records in Redis for the specs and what
// builds use. It deletes what a build's own retention would.
func runPrune(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("prune", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := fs.String("config", "", "the server config (imagegen.yaml): the clouds and Redis")
	dryRun := fs.Bool("dry-run", false, "print the plan, delete nothing")
	var only stringList
	fs.Var(&only, "cloud", "only this cloud (repeatable; default: every cloud that lists its images)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen prune --config FILE [--dry-run] [--cloud NAME]...")
		fmt.Fprintln(e.stderr, "Deletes the images beyond each generator's keep: (per cloud and branch), as builds do once they publish an image; --dry-run prints the plan only.")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitCode(2)
	}
	cfg, err := loadServiceConfig(*cfgPath, registry())
	if err != nil {
		return err
	}
	log := newLogger(e.stderr)
	rdb, err := openRedis(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st := store.New(rdb, cfg.Build.Retention, cfg.Build.LogLimit)
	ret := builds.NewRetention(builds.Deps{Config: cfg, Store: st, Logger: log})

	names := make([]string, 0, len(cfg.Clouds))
	for name := range cfg.Clouds {
		if len(only) == 0 || slices.Contains(only, name) {
			names = append(names, name)
		}
	}
	for _, n := range only {
		if cfg.Clouds[n] == nil {
			return fmt.Errorf("no cloud %q in %s", n, cfg.File)
		}
	}
	sort.Strings(names)
	var failed int
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD\tREPO\tGENERATOR\tBRANCH\tKEEP\tIMAGE\tNAME\tACTION\tWHY")
	for _, name := range names {
		plans, cl, note := planCloud(ctx, ret, cfg.Clouds[name], name)
		if note != "" {
			fmt.Fprintf(tw, "%s\t\t\t\t\t\t\t-\t%s\n", name, note)
			continue
		}
		for _, p := range plans {
			printPlan(tw, p, *dryRun)
			if *dryRun || len(p.Delete) == 0 {
				continue
			}
			_, errs := ret.Apply(ctx, cl, p, fmt.Sprintf("imagegen prune (keep: %d)", p.Keep))
			for _, er := range errs {
				failed++
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t\t\tfailed\t%s\n", name, p.Repo, p.Generator, p.Branch, p.Keep, er)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%s could not be deleted", plural(failed, "image"))
	}
	return nil
}

// planCloud opens one cloud and plans its retention; note says why it has none.
func planCloud(ctx context.Context, ret *builds.Retention, entry *clouds.Entry, name string) ([]builds.RetentionPlan, clouds.Cloud, string) {
	if entry.AsksPassword() {
		return nil, nil, "asks for a password (password: ask): not listed"
	}
	cl, err := entry.Open(ctx, clouds.Credentials{})
	if err != nil {
		return nil, nil, "open: " + err.Error()
	}
	lister, ok := cl.(clouds.ImageLister)
	if !ok || !cl.Features().Images {
		return nil, nil, "makes no images, or cannot list them"
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	imgs, err := lister.BuildImages(lctx, "")
	if err != nil {
		return nil, nil, "list images: " + err.Error()
	}
	plans, err := ret.PlanAll(lctx, name, imgs)
	if err != nil {
		return nil, nil, "plan: " + err.Error()
	}
	if len(plans) == 0 {
		return nil, nil, fmt.Sprintf("%d imagegen images; no generator with keep:", len(imgs))
	}
	return plans, cl, ""
}

func printPlan(w io.Writer, p builds.RetentionPlan, dryRun bool) {
	del := "delete"
	if dryRun {
		del = "would delete"
	}
	for _, pi := range p.Kept {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\tkeep\t%s\n", p.Cloud, p.Repo, p.Generator, p.Branch, p.Keep, pi.Image.ID, pi.Image.Name, pi.Reason)
	}
	for _, pi := range p.Delete {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Cloud, p.Repo, p.Generator, p.Branch, p.Keep, pi.Image.ID, pi.Image.Name, del, pi.Reason)
	}
}
