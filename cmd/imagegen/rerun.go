package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// runRerun asks the server to re-run a build, prompting for the password of
// each password: ask cloud (without echo on a terminal; one line per
// password from stdin otherwise). Passwords go only into the request body.
func runRerun(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("rerun", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	server := fs.String("server", "", "the imagegen server's URL, e.g. https://imagegen.example.org")
	tokenEnv := fs.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding the API token")
	var cloudsFlag stringList
	fs.Var(&cloudsFlag, "cloud", "a cloud to re-run (repeatable; default: every cloud of the build)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen rerun --server URL [--cloud NAME]... [--token-env VAR] BUILD")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *server == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitCode(2)
	}
	id := fs.Arg(0)
	token, _ := e.lookup(*tokenEnv)
	if token == "" {
		return fmt.Errorf("set %s to an API token (one of the server's api_tokens)", *tokenEnv)
	}
	base, err := url.Parse(strings.TrimSuffix(*server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return fmt.Errorf("--server %q is not an http(s) URL", *server)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	buildURL := base.String() + "/api/v1/builds/" + url.PathEscape(id)

	var b rerunBuild
	if err := getJSON(ctx, hc, buildURL, token, &b); err != nil {
		return err
	}
	names := []string(cloudsFlag)
	if len(names) == 0 {
		for n := range b.Clouds {
			names = append(names, n)
		}
	}
	passwords, err := askPasswords(e, id, b, names)
	if err != nil {
		return err
	}
	nb, err := postRerun(ctx, hc, buildURL, token, names, passwords)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", nb.Build)
	fmt.Fprintf(e.stderr, "re-run queued as build %s: %s\n", nb.Build, nb.URL)
	return nil
}

// rerunBuild is what rerun reads of the build's record.
type rerunBuild struct {
	ID     string `json:"id"`
	Clouds map[string]struct {
		AsksPassword bool   `json:"asks_password"`
		State        string `json:"state"`
	} `json:"clouds"`
}

// askPasswords prompts, without echo, for the password of each of the
// named clouds of build b that asks for one.
func askPasswords(e *env, id string, b rerunBuild, names []string) (map[string]string, error) {
	in := bufio.NewReader(e.stdin)
	passwords := map[string]string{}
	for _, n := range names {
		c, ok := b.Clouds[n]
		if !ok {
			return nil, fmt.Errorf("build %s has no cloud %q", id, n)
		}
		if !c.AsksPassword {
			continue
		}
		pw, err := readPassword(e, in, fmt.Sprintf("password for cloud %s: ", n))
		if err != nil {
			return nil, err
		}
		if pw == "" {
			return nil, fmt.Errorf("empty password for cloud %s", n)
		}
		passwords[n] = pw
	}
	return passwords, nil
}

// rerunAnswer is the API's answer to a re-run.
type rerunAnswer struct {
	Build string `json:"build"`
	URL   string `json:"url"`
	Error string `json:"error"`
}

// postRerun asks the API at buildURL to re-run the clouds.
func postRerun(ctx context.Context, hc *http.Client, buildURL, token string, names []string, passwords map[string]string) (rerunAnswer, error) {
	var out rerunAnswer
	body, err := json.Marshal(map[string]any{"clouds": names, "passwords": passwords})
	if err != nil {
		return out, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, buildURL+"/rerun", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return out, fmt.Errorf("re-run: %w", err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out)
	if resp.StatusCode != http.StatusAccepted {
		return out, fmt.Errorf("re-run refused: %s: %s", resp.Status, out.Error)
	}
	return out, nil
}

// getJSON reads u, with token as the bearer token (reading needs one
// unless the server's read_access is public), into v.
func getJSON(ctx context.Context, hc *http.Client, u, token string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return fmt.Errorf("get %s: %s: %s", u, resp.Status, e.Error)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v)
}

// readPassword prompts on stderr and reads without echo from a terminal, or
// one line from a pipe.
func readPassword(e *env, in *bufio.Reader, prompt string) (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, prompt)
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(pw), nil
	}
	line, err := in.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || line == "") {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
