package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
)

// runValidate checks generator specs and prints one file:line:col: message
// line per problem on stdout, so editors and CI annotate them.
func runValidate(_ context.Context, e *env, args []string) error {
	fl := flag.NewFlagSet("validate", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	configFile := fl.String("config", "", "server config `FILE`: check cloud names against its clouds")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen validate [--config FILE] [PATH...]")
		fmt.Fprintln(e.stderr, "Checks generator specs: files, or directories of *.yaml (default: .imagegen/ of the current repository).")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	var opts spec.Options
	if *configFile != "" {
		cfg, err := config.Load(*configFile, registry())
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		opts = specOptions(cfg.Clouds)
	}
	paths := fl.Args()
	if len(paths) == 0 {
		dir, err := defaultSpecDir()
		if err != nil {
			return err
		}
		paths = []string{dir}
	}
	errs, n := validatePaths(paths, opts)
	for _, err := range errs {
		fmt.Fprintln(e.stdout, err.Error())
	}
	if len(errs) > 0 {
		files := map[string]bool{}
		for _, err := range errs {
			files[err.File] = true
		}
		fmt.Fprintf(e.stderr, "%s in %s\n", plural(len(errs), "error"), plural(len(files), "file"))
		return exitCode(1)
	}
	fmt.Fprintf(e.stdout, "ok: %s\n", plural(n, "generator"))
	return nil
}

// specOptions tells the spec parser which clouds exist and which make images:
// a type ssh cloud runs the script on a host and saves nothing, so needs no image.
func specOptions(entries map[string]*clouds.Entry) spec.Options {
	opts := spec.Options{Clouds: map[string]bool{}}
	for name, e := range entries {
		opts.Clouds[name] = e.Type != "ssh"
	}
	return opts
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// repoGroup is the spec files of one repository.
type repoGroup struct {
	root  string   // the repository's directory, as the user would write it
	files []string // slash-separated, relative to root
}

// validatePaths parses every spec named by paths and returns the problems,
// with file names as the user would open them, and how many specs were good.
func validatePaths(paths []string, opts spec.Options) (spec.Errors, int) {
	groups, errs := groupSpecFiles(paths)
	n := 0
	for _, g := range groups {
		repo, err := spec.OpenRepo(g.root)
		if err != nil {
			errs = append(errs, spec.Error{File: g.root, Msg: err.Error()})
			continue
		}
		specs, err := spec.ParseFiles(repo, g.files, opts)
		n += len(specs)
		var es spec.Errors
		switch {
		case errors.As(err, &es):
			for _, e := range es {
				e.File = filepath.Join(g.root, filepath.FromSlash(e.File))
				errs = append(errs, e)
			}
		case err != nil:
			errs = append(errs, spec.Error{File: g.root, Msg: err.Error()})
		}
	}
	return errs, n
}

// groupSpecFiles finds the spec files paths name (files, repositories,
// .imagegen directories) and groups them by repository, each file once.
func groupSpecFiles(paths []string) ([]*repoGroup, spec.Errors) {
	var (
		errs   spec.Errors
		groups []*repoGroup
		seen   = map[string]bool{}
	)
	add := func(root, file string) {
		rel, err := filepath.Rel(root, file)
		if err != nil {
			errs = append(errs, spec.Error{File: file, Msg: err.Error()})
			return
		}
		key := filepath.Join(root, rel)
		if seen[key] {
			return
		}
		seen[key] = true
		for _, g := range groups {
			if g.root == root {
				g.files = append(g.files, filepath.ToSlash(rel))
				return
			}
		}
		groups = append(groups, &repoGroup{root: root, files: []string{filepath.ToSlash(rel)}})
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			msg := err.Error()
			if errors.Is(err, fs.ErrNotExist) {
				msg = "no such file or directory"
			}
			errs = append(errs, spec.Error{File: p, Msg: msg})
			continue
		}
		if !fi.IsDir() {
			add(repoRoot(filepath.Dir(p)), p)
			continue
		}
		dir, root := p, ""
		if filepath.Base(filepath.Clean(p)) != spec.Dir {
			if st, err := os.Stat(filepath.Join(p, spec.Dir)); err == nil && st.IsDir() {
				// A repository: its .imagegen/.
				dir, root = filepath.Join(p, spec.Dir), p
			}
		}
		if root == "" {
			root = repoRoot(dir)
		}
		files, err := specFilesIn(dir)
		if err != nil {
			errs = append(errs, spec.Error{File: dir, Msg: err.Error()})
			continue
		}
		if len(files) == 0 {
			errs = append(errs, spec.Error{File: dir, Msg: "no generator specs (*.yaml, *.yml) here"})
		}
		for _, f := range files {
			add(root, f)
		}
	}
	return groups, errs
}

func specFilesIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && spec.IsSpecFile(e.Name()) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(files)
	return files, nil
}

// repoRoot finds the repository a spec directory belongs to: the parent of
// .imagegen, else the nearest directory up holding .git, else dir itself. It
// keeps dir's form (relative stays relative) so printed paths read as typed.
func repoRoot(dir string) string {
	dir = filepath.Clean(dir)
	if filepath.Base(dir) == spec.Dir {
		return filepath.Dir(dir)
	}
	for d := dir; ; {
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil {
			return d
		}
		abs, err := filepath.Abs(d)
		if err != nil || filepath.Dir(abs) == abs {
			return dir
		}
		d = filepath.Join(d, "..")
	}
}

// defaultSpecDir finds .imagegen/ in the current directory or the nearest one
// above it, stopping at the repository's root.
func defaultSpecDir() (string, error) {
	for d := "."; ; d = filepath.Join(d, "..") {
		if st, err := os.Stat(filepath.Join(d, spec.Dir)); err == nil && st.IsDir() {
			return filepath.Join(d, spec.Dir), nil
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			return "", err
		}
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil || filepath.Dir(abs) == abs {
			return "", fmt.Errorf("no %s/ directory here or above: run imagegen validate in a repository with generator specs, or name the specs", spec.Dir)
		}
	}
}
