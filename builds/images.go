package builds

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	udiff "github.com/aymanbagabas/go-udiff"

	"github.com/imagegen/imagegen/builder/manifest"
	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/config"
)

// ImageStore is what the image queries read; package store implements it.
type ImageStore interface {
	// Get returns a build and its spec; ErrNotFound when it does not exist.
	Get(ctx context.Context, id string) (*Build, *spec.Spec, error)
	// Images returns a generator's lineage, newest first.
	Images(ctx context.Context, repo, generator string) ([]LineageEntry, error)
	// Image returns the lineage entry of image id on cloud; ErrNotFound when
	// none is recorded.
	Image(ctx context.Context, cloud, id string) (LineageEntry, error)
	// ImageClouds returns the clouds that have an image of that id, sorted.
	ImageClouds(ctx context.Context, id string) ([]string, error)
	// Provenance returns the envelope stored for build's image on cloud;
	// ErrNotFound when there is none.
	Provenance(ctx context.Context, build, cloud string) ([]byte, error)
	// Manifest returns the gzipped manifest of build's image on cloud;
	// ErrNotFound when there is none.
	Manifest(ctx context.Context, id, cloud string) ([]byte, error)
}

// CommitLister is a RepoClient that lists the commits between two (package
// github's does, with GitHub's compare API).
type CommitLister interface {
	// Commits lists the commits reachable from head and not from base,
	// oldest first, at most MaxCommits of them, and how many there are.
	Commits(ctx context.Context, repo, base, head string) ([]Commit, int, error)
}

// MaxCommits is the most commits a comparison lists (GitHub's compare API
// gives 250 in its first page).
const MaxCommits = 250

// Commit is one commit between two images. Message and Author come from the
// repository: whoever shows them escapes them.
type Commit struct {
	SHA     string    `json:"sha"`
	Message string    `json:"message"`
	Author  string    `json:"author,omitempty"`
	Date    time.Time `json:"date,omitzero"`
	URL     string    `json:"url,omitempty"`
}

// Images answers "which build made this image" and "what changed between two
// images" from the records: for the API, the pages and the CLI through them.
type Images struct {
	cfg    *config.Config
	store  ImageStore
	github GitHub
}

// NewImages returns the image queries; gh may be nil (no commit lists:
// comparisons give the compare link only).
func NewImages(cfg *config.Config, st ImageStore, gh GitHub) *Images {
	return &Images{cfg: cfg, store: st, github: gh}
}

// AmbiguousError names the clouds that have an image of one id, when the
// id alone was asked for.
type AmbiguousError struct {
	ID     string
	Clouds []string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("image %q is on more than one cloud (%s): name the cloud", e.ID, strings.Join(e.Clouds, ", "))
}

// ImageRecord is one recorded image and where it came from.
type ImageRecord struct {
	Cloud     string    `json:"cloud"`
	ImageID   string    `json:"image_id"`
	ImageName string    `json:"image_name"`
	Build     string    `json:"build"`
	Repo      string    `json:"repo"`
	Generator string    `json:"generator"`
	Commit    string    `json:"commit"`
	Ref       string    `json:"ref,omitempty"`
	Digest    string    `json:"script_sha256"`
	BaseImage string    `json:"base_image"`
	Created   time.Time `json:"built_at"`
}

func recordOf(e LineageEntry) ImageRecord {
	return ImageRecord{Cloud: e.Cloud, ImageID: e.ImageID, ImageName: e.ImageName, Build: e.Build, Repo: e.Repo,
		Generator: e.Generator, Commit: e.Commit, Ref: e.Ref, Digest: e.Digest, BaseImage: e.BaseImage, Created: e.Created}
}

// ImageStory is one image's provenance and its neighbours.
type ImageStory struct {
	ImageRecord
	// Branch is the ref's branch name ("" when the ref is no branch).
	Branch    string `json:"branch,omitempty"`
	CommitURL string `json:"commit_url,omitempty"`
	BuildURL  string `json:"build_url"`
	// BuildRecord says the build's record is still kept (its log, its state).
	BuildRecord bool `json:"build_record"`
	// ProvenanceSHA256 is the digest of the image's stored provenance
	// envelope, its imagegen:provenance-sha256; "" when none is stored.
	ProvenanceSHA256 string `json:"provenance_sha256,omitempty"`
	// Siblings are the images the same build made on the other clouds.
	Siblings []ImageRecord `json:"siblings"`
	// Previous and Next are the generator's images on the same cloud just
	// before and after this one (nil: none recorded).
	Previous *ImageRecord `json:"previous"`
	Next     *ImageRecord `json:"next"`
}

// Story returns image id on cloud's story; ErrNotFound when imagegen has no
// record of it.
func (im *Images) Story(ctx context.Context, cloud, id string) (*ImageStory, error) {
	e, err := im.store.Image(ctx, cloud, id)
	if err != nil {
		return nil, err
	}
	lineage, err := im.store.Images(ctx, e.Repo, e.Generator)
	if err != nil {
		return nil, err
	}
	st := &ImageStory{ImageRecord: recordOf(e), Siblings: []ImageRecord{}, BuildURL: BuildURL(im.cfg.BaseURL, e.Build)}
	st.Branch, _ = strings.CutPrefix(e.Ref, "refs/heads/")
	if st.Branch == e.Ref {
		st.Branch = ""
	}
	if repo := RepoURL(im.cfg.GitHub.APIURL, e.Repo); repo != "" && e.Commit != "" {
		st.CommitURL = repo + "/commit/" + url.PathEscape(e.Commit)
	}
	if b, _, err := im.store.Get(ctx, e.Build); err == nil {
		st.BuildRecord = true
		if st.Ref == "" {
			st.Ref = b.Ref
		}
		if c := b.Clouds[cloud]; c != nil {
			st.ProvenanceSHA256 = c.ProvenanceSHA256
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	prev, next := neighbours(lineage, e)
	st.Previous, st.Next = prev, next
	for _, o := range lineage {
		if o.Build == e.Build && o.Cloud != e.Cloud {
			st.Siblings = append(st.Siblings, recordOf(o))
		}
	}
	slices.SortFunc(st.Siblings, func(a, b ImageRecord) int { return strings.Compare(a.Cloud, b.Cloud) })
	return st, nil
}

// neighbours finds, in a lineage (newest first), the images of e's cloud
// just older and just newer than e.
func neighbours(lineage []LineageEntry, e LineageEntry) (prev, next *ImageRecord) {
	at := -1
	for i, o := range lineage {
		if o.Cloud == e.Cloud && o.ImageID == e.ImageID {
			at = i
			break
		}
	}
	if at < 0 {
		return nil, nil
	}
	for i := at + 1; i < len(lineage); i++ {
		if lineage[i].Cloud == e.Cloud {
			r := recordOf(lineage[i])
			prev = &r
			break
		}
	}
	for i := at - 1; i >= 0; i-- {
		if lineage[i].Cloud == e.Cloud {
			r := recordOf(lineage[i])
			next = &r
			break
		}
	}
	return prev, next
}

// Provenance returns the stored envelope of image id on cloud; ErrNotFound
// when the image or its envelope is not recorded.
func (im *Images) Provenance(ctx context.Context, cloud, id string) ([]byte, error) {
	e, err := im.store.Image(ctx, cloud, id)
	if err != nil {
		return nil, err
	}
	return im.store.Provenance(ctx, e.Build, cloud)
}

// ImageChanges is what changed from one image to another.
type ImageChanges struct {
	// From is the earlier image: the previous one of the generator on the
	// cloud, or the one asked for; nil when To is the first.
	From *ImageRecord `json:"from"`
	To   ImageRecord  `json:"to"`
	// CompareURL is GitHub's page of the commits between the two.
	CompareURL string `json:"compare_url,omitempty"`
	// Commits are the commits between From and To, oldest first (at most
	// MaxCommits of TotalCommits); nil when they could not be listed, and
	// CommitsNote says why.
	Commits      []Commit `json:"commits"`
	TotalCommits int      `json:"total_commits"`
	CommitsNote  string   `json:"commits_note,omitempty"`
	// ScriptDiff is the unified diff of the scripts ("" when the same);
	// ScriptNote says why there is none when a script is not kept.
	ScriptChanged bool   `json:"script_changed"`
	ScriptDiff    string `json:"script_diff"`
	ScriptNote    string `json:"script_note,omitempty"`
	// BaseImage is set when the base image changed.
	BaseImage *Change `json:"base_image_change"`
	// Packages is the package diff of the two images' manifests.
	Packages PackageDiff `json:"packages"`
}

// Change is a value before and after.
type Change struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// PackageDiff is what changed in the installed packages, from the two
// images' manifests (package builder/manifest's comparison, with the newer
// build's drift: ignore list). Recorded is false, and Note says why, when
// either image has no manifest.
type PackageDiff struct {
	Recorded bool              `json:"recorded"`
	Note     string            `json:"note,omitempty"`
	Changes  *manifest.Changes `json:"changes,omitempty"`
}

// PackagesNotRecorded is the note of a comparison without manifests.
const PackagesNotRecorded = "no package manifest is recorded for these images"

// Changes compares image id on cloud with the generator's previous image on
// that cloud, or with since (an image id on the same cloud) when given.
// ErrNotFound when either image is not recorded.
func (im *Images) Changes(ctx context.Context, cloud, id, since string) (*ImageChanges, error) {
	to, err := im.store.Image(ctx, cloud, id)
	if err != nil {
		return nil, err
	}
	ch := &ImageChanges{To: recordOf(to), Packages: PackageDiff{Note: PackagesNotRecorded}}
	var from *LineageEntry
	if since != "" {
		e, err := im.store.Image(ctx, cloud, since)
		if err != nil {
			return nil, fmt.Errorf("since: %w", err)
		}
		from = &e
	} else {
		lineage, err := im.store.Images(ctx, to.Repo, to.Generator)
		if err != nil {
			return nil, err
		}
		if prev, _ := neighbours(lineage, to); prev != nil {
			for _, e := range lineage {
				if e.Cloud == prev.Cloud && e.ImageID == prev.ImageID {
					from = &e
					break
				}
			}
		}
	}
	if from == nil {
		ch.ScriptNote = "this is the generator's first image on this cloud: nothing to compare with"
		return ch, nil
	}
	r := recordOf(*from)
	ch.From = &r
	if from.BaseImage != to.BaseImage {
		ch.BaseImage = &Change{From: from.BaseImage, To: to.BaseImage}
	}
	im.scriptDiff(ctx, ch, *from, to)
	im.commits(ctx, ch, *from, to)
	ch.Packages = im.packages(ctx, *from, to)
	return ch, nil
}

// packages compares the two images' manifests.
func (im *Images) packages(ctx context.Context, from, to LineageEntry) PackageDiff {
	read := func(e LineageEntry) (*manifest.Manifest, error) {
		gz, err := im.store.Manifest(ctx, e.Build, e.Cloud)
		if err != nil {
			return nil, err
		}
		doc, err := manifest.Decompress(gz)
		if err != nil {
			return nil, err
		}
		return manifest.Decode(doc)
	}
	old, oerr := read(from)
	cur, cerr := read(to)
	switch {
	case errors.Is(oerr, ErrNotFound) && errors.Is(cerr, ErrNotFound):
		return PackageDiff{Note: PackagesNotRecorded}
	case errors.Is(oerr, ErrNotFound):
		return PackageDiff{Note: "the earlier image has no manifest recorded"}
	case errors.Is(cerr, ErrNotFound):
		return PackageDiff{Note: "this image has no manifest recorded"}
	case oerr != nil || cerr != nil:
		return PackageDiff{Note: "the manifests could not be read: " + errors.Join(oerr, cerr).Error()}
	}
	var opts manifest.DriftOptions
	if _, sp, err := im.store.Get(ctx, to.Build); err == nil {
		opts, _ = driftOptions(sp)
	}
	ch, err := manifest.OverTime(old, cur, opts)
	if err != nil {
		return PackageDiff{Note: "the manifests could not be compared: " + err.Error()}
	}
	return PackageDiff{Recorded: true, Changes: ch}
}

// scriptDiff fills in the unified diff of the two builds' scripts.
func (im *Images) scriptDiff(ctx context.Context, ch *ImageChanges, from, to LineageEntry) {
	script := func(e LineageEntry) (string, string, bool) {
		_, sp, err := im.store.Get(ctx, e.Build)
		if err != nil || sp == nil {
			return "", "", false
		}
		label := sp.File + " script"
		if sp.ScriptFile != "" {
			label = sp.ScriptFile
		} else if sp.File == "" {
			label = e.Generator + " script"
		}
		return strings.ReplaceAll(sp.Script, "\r\n", "\n"), label, true
	}
	a, la, okA := script(from)
	b, lb, okB := script(to)
	switch {
	case from.Digest == to.Digest && from.Digest != "":
		// Same spec digest: the same script (and cloud settings).
		return
	case !okA || !okB:
		ch.ScriptChanged = true
		ch.ScriptNote = fmt.Sprintf("the script digest changed (%s → %s), but a script is no longer kept (build records are kept for %s)",
			shortHex(from.Digest), shortHex(to.Digest), im.cfg.Build.Retention)
		return
	}
	if a == b {
		ch.ScriptNote = "the script is the same; the spec's other settings changed (the script digest covers both)"
		return
	}
	ch.ScriptChanged = true
	ch.ScriptDiff = udiff.Unified("a/"+la+" ("+shortHex(from.Commit)+")", "b/"+lb+" ("+shortHex(to.Commit)+")", a, b)
}

// commits fills in the compare link and, when GitHub answers, the commits.
func (im *Images) commits(ctx context.Context, ch *ImageChanges, from, to LineageEntry) {
	switch {
	case from.Repo != to.Repo:
		ch.CommitsNote = fmt.Sprintf("the images come from different repositories (%s, %s)", from.Repo, to.Repo)
		return
	case from.Commit == to.Commit:
		ch.Commits = []Commit{}
		ch.CommitsNote = "both images were built from the same commit"
		return
	}
	if repo := RepoURL(im.cfg.GitHub.APIURL, to.Repo); repo != "" {
		ch.CompareURL = repo + "/compare/" + url.PathEscape(from.Commit) + "..." + url.PathEscape(to.Commit)
	}
	if im.github == nil {
		ch.CommitsNote = "this server does not read commits from GitHub: follow the compare link"
		return
	}
	b, _, err := im.store.Get(ctx, to.Build)
	if err != nil {
		ch.CommitsNote = "the build record has expired: follow the compare link"
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rc, err := im.github.Repo(cctx, b.Installation)
	if err != nil {
		ch.CommitsNote = "GitHub: " + err.Error()
		return
	}
	cl, ok := rc.(CommitLister)
	if !ok {
		ch.CommitsNote = "this GitHub client cannot list commits: follow the compare link"
		return
	}
	cs, total, err := cl.Commits(cctx, to.Repo, from.Commit, to.Commit)
	if err != nil {
		ch.CommitsNote = "GitHub could not list the commits: " + err.Error()
		return
	}
	if cs == nil {
		cs = []Commit{}
	}
	ch.Commits, ch.TotalCommits = cs, total
	if total > len(cs) {
		ch.CommitsNote = fmt.Sprintf("%d commits; the first %d are listed: the compare link has the rest", total, len(cs))
	}
}

func shortHex(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
