package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/config"
	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/manifest"
)

// cloudFlags is build's repeatable --cloud flag.
type cloudFlags []string

func (l *cloudFlags) String() string     { return strings.Join(*l, ",") }
func (l *cloudFlags) Set(v string) error { *l = append(*l, v); return nil }

// runBuild builds one generator now on its clouds (or those named with
// --cloud), printing progress on stderr and a table of results on stdout.
func runBuild(ctx context.Context, e *env, args []string) error {
	cfg, specPath, only, err := buildArgs(e, args)
	if err != nil {
		return err
	}
	src, err := loadSpec(ctx, specPath, cfg)
	if err != nil {
		var es spec.Errors
		if errors.As(err, &es) {
			for _, se := range es {
				fmt.Fprintln(e.stderr, se.Error())
			}
			return exitCode(1)
		}
		return err
	}
	if src.dirty {
		fmt.Fprintf(e.stderr, "warning: the working tree of %s has uncommitted changes: the images are tagged with commit %s, which is not exactly what is built\n", src.root, src.commit)
	}
	names, err := selectClouds(src.spec, cfg, only)
	if err != nil {
		return err
	}
	buildID := newBuildID()
	jobs, err := openJobs(ctx, e, cfg, src, names, buildID)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "building %s (build %s) on %s\n", src.spec.Name, buildID, strings.Join(names, ", "))
	results := runJobs(ctx, cfg, jobs, &progress{w: e.stderr, start: time.Now(), phase: map[string]phaseAt{}})
	err = reportResults(ctx, e, results)
	if derr := reportDrift(e, src.spec, results); err == nil {
		err = derr
	}
	return err
}

// reportDrift ends the output with how the clouds' images differ (the
// manifests of the clouds that succeeded), as the check run would show it,
// and fails when they differ and the spec says on_drift: fail.
func reportDrift(e *env, sp *spec.Spec, results []builder.Result) error {
	var ms []manifest.CloudManifest
	found := false
	for _, r := range results {
		if r.State != builder.StateSucceeded {
			continue
		}
		cm := manifest.CloudManifest{Cloud: r.Cloud}
		if r.Manifest != nil && r.Manifest.Manifest != nil {
			cm.Manifest, found = r.Manifest.Manifest, true
		}
		ms = append(ms, cm)
	}
	if !found {
		return nil
	}
	d, err := manifest.AcrossClouds(ms, manifest.DriftOptions{Ignore: sp.Drift.Ignore})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\nDRIFT\n%s", d.Text(manifest.RenderOptions{}))
	if !d.Identical && len(d.Clouds) >= 2 && sp.Drift.Fails() {
		fmt.Fprintln(e.stderr, "the clouds' images differ, and the spec says drift: {on_drift: fail}")
		return exitCode(1)
	}
	return nil
}

// buildArgs parses build's flags and loads the config they name.
func buildArgs(e *env, args []string) (cfg *config.Config, specPath string, only cloudFlags, err error) {
	fl := flag.NewFlagSet("build", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	configFile := fl.String("config", "", "server config `FILE` (required): the clouds")
	fl.Var(&only, "cloud", "build only on cloud `NAME` (repeatable; default: every cloud of the spec)")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen build --config FILE [--cloud NAME]... SPEC")
		fmt.Fprintln(e.stderr, "Builds one generator now, without Redis or GitHub, and prints a table of the new images.")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return nil, "", nil, err
	}
	if *configFile == "" || fl.NArg() != 1 {
		fl.Usage()
		return nil, "", nil, exitCode(2)
	}
	cfg, err = config.Load(*configFile, registry())
	if err != nil {
		return nil, "", nil, err
	}
	return cfg, fl.Arg(0), only, nil
}

// openJobs opens each cloud (asking for the password of a password: ask
// cloud) and makes its job; every job redacts every password given.
func openJobs(ctx context.Context, e *env, cfg *config.Config, src *source, names []string, buildID string) ([]builder.Job, error) {
	var (
		jobs    []builder.Job
		secrets []secret.String
	)
	for _, name := range names {
		entry := cfg.Clouds[name]
		var cred clouds.Credentials
		if entry.AsksPassword() {
			pw, err := askPassword(e, name)
			if err != nil {
				return nil, err
			}
			cred.Password = pw
			secrets = append(secrets, pw)
		}
		c, err := entry.Open(ctx, cred)
		if err != nil {
			return nil, fmt.Errorf("cloud %s: %w", name, err)
		}
		jobs = append(jobs, builder.Job{
			Build:          buildID,
			CloudName:      name,
			Cloud:          c,
			Spec:           src.spec,
			Repo:           src.repo,
			Commit:         src.commit,
			SSHTimeout:     cfg.Build.SSHTimeout,
			CleanupTimeout: cfg.Build.CleanupTimeout,
		})
	}
	for i := range jobs {
		jobs[i].Secrets = secrets
	}
	return jobs, nil
}

// runJobs runs the jobs at once, within build.timeout, showing their
// progress on prog, and returns their results once every cloud has
// cleaned up.
func runJobs(ctx context.Context, cfg *config.Config, jobs []builder.Job, prog *progress) []builder.Result {
	for i := range jobs {
		jobs[i].Observer = prog
	}
	stopTicker := prog.tick(ctx, 10*time.Second)
	defer stopTicker()
	// Ctrl-C cancels every cloud's build; each still cleans up before Run
	// returns. The interrupt is announced once, when it comes, and at the
	// latest before the results: a build that cleans up at once can return
	// before the AfterFunc's goroutine has run.
	var announced sync.Once
	announce := func() {
		announced.Do(func() {
			prog.printf("interrupted: canceling the build and cleaning up what it made (this can take a while)\n")
		})
	}
	stopAnnounce := context.AfterFunc(ctx, announce)
	bctx, cancel := context.WithTimeout(ctx, cfg.Build.Timeout)
	results := builder.RunAll(bctx, jobs)
	cancel()
	stopAnnounce()
	if ctx.Err() != nil {
		announce() // returns only once the message is out, whoever prints it
	}
	return results
}

// reportResults prints the table of new images and what failed or was left
// behind; it fails when any cloud did.
func reportResults(ctx context.Context, e *env, results []builder.Result) error {
	printTable(e.stdout, results)
	failed := false
	for _, r := range results {
		if r.State != builder.StateSucceeded {
			failed = true
			fmt.Fprintf(e.stderr, "%s: %s: %s\n", r.Cloud, r.State, r.Error)
		}
		for _, lo := range r.Leftovers {
			fmt.Fprintf(e.stderr, "%s: left behind %s %s (%s): remove it by hand or let the sweep do it\n", r.Cloud, lo.Kind, lo.ID, lo.Name)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(e.stderr, "interrupted: the build was canceled; cleanup has run")
	}
	if failed {
		return exitCode(1)
	}
	return nil
}

// source is a spec read from a local repository, with its provenance.
type source struct {
	spec   *spec.Spec
	root   string // the repository's directory
	repo   string // provenance: origin's URL, else root
	commit string // HEAD, "" outside git
	dirty  bool
}

func loadSpec(ctx context.Context, path string, cfg *config.Config) (*source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	dir := filepath.Dir(abs)
	src := &source{}
	if top, err := git(ctx, dir, "rev-parse", "--show-toplevel"); err == nil && top != "" {
		src.root = top
		if c, err := git(ctx, dir, "rev-parse", "HEAD"); err == nil {
			src.commit = c
		}
		if u, err := git(ctx, dir, "remote", "get-url", "origin"); err == nil && u != "" {
			src.repo = u
		}
		if st, err := git(ctx, dir, "status", "--porcelain"); err == nil && st != "" && src.commit != "" {
			src.dirty = true
		}
	} else {
		src.root = repoRoot(dir)
	}
	if src.repo == "" {
		src.repo = src.root
	}
	// git prints the resolved path; resolve ours the same way so Rel works.
	if r, err := filepath.EvalSymlinks(src.root); err == nil {
		src.root = r
	}
	if a, err := filepath.EvalSymlinks(abs); err == nil {
		abs = a
	}
	rel, err := filepath.Rel(src.root, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("spec %s is outside its repository %s", path, src.root)
	}
	repo, err := spec.OpenRepo(src.root)
	if err != nil {
		return nil, err
	}
	s, err := spec.Parse(repo, filepath.ToSlash(rel), specOptions(cfg.Clouds))
	if err != nil {
		var es spec.Errors
		if errors.As(err, &es) {
			for i := range es {
				es[i].File = filepath.Join(src.root, filepath.FromSlash(es[i].File))
			}
			return nil, es
		}
		return nil, err
	}
	src.spec = s
	return src, nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
	return strings.TrimSpace(string(out)), err
}

// selectClouds returns the clouds to build on: the spec's, or those named.
func selectClouds(s *spec.Spec, cfg *config.Config, only []string) ([]string, error) {
	all := s.CloudNames()
	names := all
	if len(only) > 0 {
		names = nil
		for _, n := range only {
			if !slices.Contains(all, n) {
				return nil, fmt.Errorf("--cloud %s: generator %s does not build on it (its clouds: %s)", n, s.Name, strings.Join(all, ", "))
			}
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for _, n := range names {
		if cfg.Clouds[n] == nil {
			return nil, fmt.Errorf("cloud %s is in the spec but not in %s (configured: %s)", n, cfg.File, strings.Join(cfg.CloudNames(), ", "))
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("generator %s names no clouds", s.Name)
	}
	return names, nil
}

// passwordEnv is the variable a password: ask cloud's password is read from
// when stdin is not a terminal.
func passwordEnv(cloud string) string {
	return "IMAGEGEN_PASSWORD_" + strings.ToUpper(strings.ReplaceAll(cloud, "-", "_"))
}

func askPassword(e *env, cloud string) (secret.String, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(e.stderr, "password for cloud %s: ", cloud)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return secret.String{}, fmt.Errorf("read the password for %s: %w", cloud, err)
		}
		if len(b) == 0 {
			return secret.String{}, fmt.Errorf("cloud %s: empty password", cloud)
		}
		return secret.New(string(b)), nil
	}
	v := passwordEnv(cloud)
	if pw, ok := e.lookup(v); ok && pw != "" {
		return secret.New(pw), nil
	}
	return secret.String{}, fmt.Errorf("cloud %s asks for a password: stdin is not a terminal to prompt on, so set %s", cloud, v)
}

func newBuildID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "local-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// progress prints every cloud's phases and log lines on stderr, one line
// each, prefixed with the cloud's name.
type progress struct {
	w     io.Writer
	start time.Time

	mu    sync.Mutex
	phase map[string]phaseAt
}

type phaseAt struct {
	p  builder.Phase
	at time.Time
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

func (p *progress) Phase(cloud string, ph builder.Phase, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase[cloud] = phaseAt{ph, at}
	fmt.Fprintf(p.w, "[%s] %s (%s)\n", cloud, ph, at.Sub(p.start).Round(time.Second))
}

func (p *progress) Line(l builder.LogLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%s] %s\n", l.Cloud, l.Text)
}

// tick reminds the user, every interval, what each cloud has been doing for
// how long, so a long step does not look like a hang.
func (p *progress) tick(ctx context.Context, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				p.mu.Lock()
				clouds := make([]string, 0, len(p.phase))
				for c := range p.phase {
					clouds = append(clouds, c)
				}
				slices.Sort(clouds)
				for _, c := range clouds {
					ph := p.phase[c]
					if ph.p == builder.PhaseDone {
						continue
					}
					fmt.Fprintf(p.w, "[%s] %s (%s)\n", c, ph.p, now.Sub(ph.at).Round(time.Second))
				}
				p.mu.Unlock()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func printTable(w io.Writer, results []builder.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLOUD\tSTATE\tIMAGE ID\tIMAGE NAME\tDURATION")
	for _, r := range results {
		id, name := "-", "-"
		if r.Image != nil {
			id, name = r.Image.ID, r.Image.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Cloud, r.State, id, name, r.Finished.Sub(r.Started).Round(time.Second))
	}
	_ = tw.Flush()
}
