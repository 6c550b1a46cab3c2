// Package github is imagegen's GitHub: App or token auth, reading specs at a
// commit, the files a push changed, commit statuses and check runs (with
// retries), and the parsing of webhook deliveries. Its Factory implements
// builds.GitHub; it knows nothing of the queue, Redis or HTTP serving.
package github

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gogithub "github.com/google/go-github/v60/github"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/config"
)

// Repo names a repository.
type Repo struct{ Owner, Name string }

// ParseRepo parses "owner/name".
func ParseRepo(s string) (Repo, error) {
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return Repo{}, fmt.Errorf("repository %q is not owner/name", s)
	}
	return Repo{Owner: owner, Name: name}, nil
}

// String returns "owner/name".
func (r Repo) String() string { return r.Owner + "/" + r.Name }

// Options tune a Factory. The zero value is usable.
type Options struct {
	// HTTPClient carries the requests; its Transport is wrapped with the auth
	// and its Timeout kept. Default: a client with a 30s timeout.
	HTTPClient *http.Client
	// Logger receives retries and warnings. Default: discard.
	Logger *slog.Logger
	// Retry is the policy for transient errors (5xx, 429, secondary rate
	// limits, transport errors). Default: DefaultRetry.
	Retry Backoff
	// MaxRateLimitWait is the longest imagegen waits for an exhausted primary
	// rate limit to reset before failing. Default: 5m.
	MaxRateLimitWait time.Duration
}

// DefaultRetry is the retry policy when Options.Retry is zero.
var DefaultRetry = Backoff{Initial: time.Second, Max: 30 * time.Second, Factor: 2, Attempts: 6}

// userAgent names imagegen in GitHub's logs, as GitHub asks of API clients.
const userAgent = "imagegen"

// DefaultMaxRateLimitWait is the default Options.MaxRateLimitWait.
const DefaultMaxRateLimitWait = 5 * time.Minute

// Factory makes Clients for installations. It is safe for concurrent use.
type Factory struct {
	cfg     config.GitHub
	baseURL *url.URL
	hc      *http.Client
	log     *slog.Logger
	retry   Backoff
	maxWait time.Duration

	key  *rsa.PrivateKey // the App's key; nil in token mode
	mu   sync.Mutex
	byID map[int64]*slot // App mode: one client (and token cache) per installation
	tok  *Client         // token mode: the one client
}

// slot holds an installation's client; its mutex makes concurrent first
// calls for one installation fetch one token.
type slot struct {
	mu sync.Mutex
	c  *Client
}

// New checks cfg and returns a Factory. App mode when cfg.AppID is set (the
// private key must parse), token mode when cfg.Token is set.
func New(cfg config.GitHub, opts Options) (*Factory, error) {
	api := cfg.APIURL
	if api == "" {
		api = config.DefaultAPIURL
	}
	if !strings.HasSuffix(api, "/") {
		api += "/"
	}
	u, err := url.Parse(api)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("github: api_url %q is not an http(s) URL", cfg.APIURL)
	}
	f := &Factory{
		cfg:     cfg,
		baseURL: u,
		hc:      opts.HTTPClient,
		log:     opts.Logger,
		retry:   opts.Retry,
		maxWait: opts.MaxRateLimitWait,
		byID:    map[int64]*slot{},
	}
	if f.hc == nil {
		f.hc = &http.Client{Timeout: 30 * time.Second, Transport: newTransport()}
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.retry == (Backoff{}) {
		f.retry = DefaultRetry
	}
	if f.maxWait <= 0 {
		f.maxWait = DefaultMaxRateLimitWait
	}
	switch {
	case cfg.AppID != 0 && !cfg.Token.IsZero():
		return nil, errors.New("github: set either app_id (a GitHub App) or token, not both")
	case cfg.AppID != 0:
		if cfg.PrivateKey.IsZero() {
			return nil, errors.New("github: app_id is set but the App's private key is empty (github.private_key_file)")
		}
		key, err := parseKey([]byte(cfg.PrivateKey.Reveal()))
		if err != nil {
			// The parse error never contains the key; say which file to look at.
			return nil, fmt.Errorf("github: the App's private key (%s) is not an RSA PEM key: %w", keyFileName(cfg), err)
		}
		f.key = key
	case !cfg.Token.IsZero():
		gh := gogithub.NewClient(&http.Client{Transport: f.transport(), Timeout: f.hc.Timeout}).WithAuthToken(cfg.Token.Reveal())
		gh.BaseURL = u
		gh.UserAgent = userAgent
		f.tok = f.newClient(gh)
	default:
		// No credentials: public repositories are still readable (at GitHub's
		// anonymous rate limit), and nothing is reported back. For trying
		// imagegen out; serve warns about it at start.
		gh := gogithub.NewClient(&http.Client{Transport: f.transport(), Timeout: f.hc.Timeout})
		gh.BaseURL = u
		gh.UserAgent = userAgent
		f.tok = f.newClient(gh)
		f.tok.anonymous = true
	}
	return f, nil
}

// parseKey reads an RSA private key in PEM, PKCS #1 (what GitHub hands out)
// or PKCS #8.
func parseKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("neither PKCS #1 nor PKCS #8: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key, GitHub Apps use RSA", k)
	}
	return rk, nil
}

func keyFileName(cfg config.GitHub) string {
	if cfg.PrivateKeyFile != "" {
		return cfg.PrivateKeyFile
	}
	return "github.private_key"
}

// newTransport is http.DefaultTransport keeping more idle connections to
// GitHub: a push's plan and a worker's builds call it in bursts (a status per
// build and phase), and the default of 2 per host made most of a burst's
// calls open a new TLS connection.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return t
}

func (f *Factory) transport() http.RoundTripper {
	if f.hc.Transport != nil {
		return f.hc.Transport
	}
	return http.DefaultTransport
}

// IsApp reports whether the factory authenticates as a GitHub App, which
// check runs need; a token can only set commit statuses.
func (f *Factory) IsApp() bool { return f.key != nil }

// Client returns the client for an installation (the delivery's
// installation.id). In App mode the installation token is fetched now, so a
// missing installation fails here, and is cached and refreshed per
// installation. In token mode the id is ignored.
func (f *Factory) Client(ctx context.Context, installationID int64) (*Client, error) {
	if f.key == nil {
		return f.tok, nil
	}
	if installationID <= 0 {
		return nil, fmt.Errorf("github: no installation id (%d): the delivery must come from the App's webhook", installationID)
	}
	f.mu.Lock()
	sl, ok := f.byID[installationID]
	if !ok {
		sl = &slot{}
		f.byID[installationID] = sl
	}
	f.mu.Unlock()
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.c != nil {
		return sl.c, nil
	}
	// An AppsTransport per installation: ghinstallation's token refresh
	// writes to it, so sharing one between installations races.
	atr := ghinstallation.NewAppsTransportFromPrivateKey(f.transport(), f.cfg.AppID, f.key)
	atr.BaseURL = strings.TrimSuffix(f.baseURL.String(), "/")
	itr := ghinstallation.NewFromAppsTransport(atr, installationID)
	// Token requests get the same timeout as API calls.
	itr.Client = &http.Client{Transport: f.transport(), Timeout: f.hc.Timeout}
	c := f.newClient(nil)
	op := fmt.Sprintf("get an installation token for installation %d of App %d", installationID, f.cfg.AppID)
	if err := c.do(ctx, op, func(ctx context.Context) error {
		_, err := itr.Token(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	gh := gogithub.NewClient(&http.Client{Transport: itr, Timeout: f.hc.Timeout})
	gh.BaseURL = f.baseURL
	gh.UserAgent = userAgent
	c.gh = gh
	c.installation = installationID
	sl.c = c
	return c, nil
}

// Repo is Client as builds.GitHub.
func (f *Factory) Repo(ctx context.Context, installationID int64) (builds.RepoClient, error) {
	c, err := f.Client(ctx, installationID)
	if err != nil {
		return nil, err
	}
	return c, nil
}

var (
	_ builds.GitHub     = (*Factory)(nil)
	_ builds.RepoClient = (*Client)(nil)
)

func (f *Factory) newClient(gh *gogithub.Client) *Client {
	return &Client{gh: gh, f: f, isApp: f.key != nil}
}

// Client talks to GitHub for one installation (or the token). It is safe for
// concurrent use.
type Client struct {
	gh           *gogithub.Client
	f            *Factory
	isApp        bool
	anonymous    bool // no credentials: statuses are logged, not sent
	installation int64
}

// IsAnonymous reports whether the factory has no GitHub credentials: it
// reads public repositories and reports nothing.
func (f *Factory) IsAnonymous() bool { return f.key == nil && f.cfg.Token.IsZero() }

// CheckRuns reports whether the client can create check runs (a GitHub App
// can; a token cannot).
func (c *Client) CheckRuns() bool { return c.isApp }

// GitHub returns the underlying go-github client for calls this package does
// not wrap. Its calls are not retried.
func (c *Client) GitHub() *gogithub.Client { return c.gh }
