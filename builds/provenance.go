package builds

import (
	"context"
	"net/url"
	"strings"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/provenance"
)

// Provenance is what the Runner signs images' provenance with: each image
// gets an in-toto statement (SLSA v1 predicate) in a DSSE envelope, stored
// with its build's record and served by the API, and the image carries the
// envelope's SHA-256 (builder.Provenance says when and why after Snapshot).
type Provenance struct {
	// Signer signs the statements; nil or keyless (no
	// provenance.signing_key_file): they are stored unsigned.
	Signer *provenance.Signer
	// Version is imagegen's version, in each statement's builder.version.
	Version string
}

// provenance is the pipeline's provenance settings for this run.
func (ru *run) provenance() *builder.Provenance {
	cfg := ru.d.Config
	return &builder.Provenance{
		Signer:         ru.d.Provenance.Signer,
		BuilderID:      cfg.Provenance.BuilderID,
		BuilderVersion: ru.d.Provenance.Version,
		RepoURL:        RepoURL(cfg.GitHub.APIURL, ru.b.Repo),
		Ref:            ru.b.Ref,
	}
}

// storeProvenance stores the envelope of a cloud's image with its build's
// record and returns its digest ("" when there is none). An envelope that
// cannot be stored is logged: the image and its tag exist, and the build
// succeeded; only the API cannot serve the statement.
func storeProvenance(ctx context.Context, d Deps, build, cloud string, res builder.Result) string {
	if len(res.Provenance) == 0 || res.Image == nil {
		return ""
	}
	if err := d.Store.SetProvenance(ctx, build, cloud, res.Provenance); err != nil {
		d.Logger.Error("store provenance", "build", build, "cloud", cloud, "err", err)
	}
	return provenance.Digest(res.Provenance)
}

// GitHubWeb is the web address of the GitHub whose API is at apiURL:
// https://github.com for api.github.com, https://HOST for a GitHub
// Enterprise Server's https://HOST/api/v3/.
func GitHubWeb(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" || u.Host == "api.github.com" {
		return "https://github.com"
	}
	path := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), "/api/v3")
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(path, "/")
}

// RepoURL is the web address of repository repo (owner/name), "" when repo
// is not one.
func RepoURL(apiURL, repo string) string {
	owner, name, ok := strings.Cut(repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return ""
	}
	return GitHubWeb(apiURL) + "/" + url.PathEscape(owner) + "/" + url.PathEscape(name)
}
