// Command imagegen builds the same VM image on several clouds from one generator
// spec, from the command line (build) or as a GitHub-driven service (serve, worker).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set at build time: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// env is the process's outside world, so commands can be tested in-process.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	lookup func(string) (string, bool)
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// exitCode ends the process with a code and no further message (the command
// has already said what went wrong).
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// parseFlags parses a command's flags: -h ends the command with exit 0 (flag
// printed the usage), a bad flag with exit 2 (flag said what is wrong).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return exitCode(0)
	default:
		return exitCode(2)
	}
}

func commands() []command {
	return []command{
		{"validate", "check generator specs (default .imagegen/)", runValidate},
		{"build", "build one generator now, without Redis or GitHub", runBuild},
		{"serve", "run the HTTP server (and a worker, unless --no-worker)", runServe},
		{"worker", "run a worker alone", runWorker},
		{"rerun", "ask the server to re-run a build", runRerun},
		{"diff", "what changed in the images from one build to another", runDiff},
		{"images", "list the local (qemu) clouds' images and their provenance", runImages},
		{"trace", "where an image came from: its commit, build, siblings, neighbours", runTrace},
		{"changes", "what changed between an image and the one before it", runChanges},
		{"verify", "check an image's signed provenance against its current tags", runVerify},
		{"version", "print the version and commit", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, lookup: os.LookupEnv}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var code exitCode
		switch {
		case err == nil:
			return 0
		case errors.As(err, &code):
			return int(code)
		default:
			fmt.Fprintf(e.stderr, "imagegen %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "imagegen: unknown command %q\n\n", args[0])
	usage(e.stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imagegen COMMAND [FLAGS] [ARGS]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'imagegen COMMAND -h' for a command's flags.")
}

func runVersion(_ context.Context, e *env, _ []string) error {
	fmt.Fprintf(e.stdout, "imagegen %s (commit %s)\n", version, commit)
	return nil
}
