package pages

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builder/spec"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

// maxDriftRows bounds the rows of one table on a build page; the API's
// drift route has them all.
const maxDriftRows = 5000

// driftView is a build page's Drift section: every value a machine reported
// goes through manifest.Visible here and html/template's escaping there.
type driftView struct {
	Headline   string
	Clouds     []string
	System     []driftRow
	Rows       []driftRow
	More       int // package rows not shown
	Partial    []string
	NoManifest []string
	Differs    bool
	Fails      bool // on_drift: fail
	Manifests  []manifestLink
	OverTime   []changesView
	JSONURL    string
}

type driftRow struct {
	Label  string
	Cells  []string // one per cloud of Clouds; "—" for none
	Newest string
}

type manifestLink struct {
	Cloud, URL, SHA256 string
	Packages           int
	Partial            bool
}

type changesView struct {
	Cloud, Headline, Note string
	PreviousBuild         string
	PreviousURL           string
	System                []changeRow
	Rows                  []changeRow
	More                  int
}

type changeRow struct{ Name, Kind, From, To string }

// driftView computes build b's drift for its page; nil when none of its
// clouds has a manifest, or the drift cannot be computed (logged).
func (p *Pages) driftView(ctx context.Context, b *builds.Build) *driftView {
	v := &driftView{JSONURL: "/api/v1/builds/" + url.PathEscape(b.ID) + "/drift"}
	for _, name := range b.CloudNames() {
		if c := b.Clouds[name]; c.ManifestSHA256 != "" {
			v.Manifests = append(v.Manifests, manifestLink{Cloud: name, SHA256: c.ManifestSHA256, Packages: c.ManifestPackages, Partial: c.ManifestPartial,
				URL: BuildPath(b.ID) + "/manifests/" + url.PathEscape(name)})
		}
	}
	if len(v.Manifests) == 0 {
		return nil
	}
	_, sp, err := p.store.Get(ctx, b.ID)
	if err == nil {
		var d *builds.Drift
		if d, err = builds.BuildDrift(ctx, p.store, b, sp); err == nil {
			v.fill(d)
			return v
		}
	}
	p.log.Error("drift for the build page", "build", b.ID, "err", err)
	return nil
}

func (v *driftView) fill(d *builds.Drift) {
	v.Differs, v.Fails = d.Differs(), d.Differs() && d.OnDrift == spec.OnDriftFail
	if a := d.Across; a == nil {
		v.Headline = "The clouds are compared once every cloud is done (" + strings.Join(d.Pending, ", ") + " not yet)."
	} else {
		v.Headline, _, _ = strings.Cut(a.Text(manifest.RenderOptions{MaxRows: 1}), "\n")
		v.Clouds, v.Partial, v.NoManifest = visibleAll(a.Clouds), visibleAll(a.Partial), visibleAll(a.NoManifest)
		for _, s := range a.System {
			r := driftRow{Label: s.Field}
			for _, c := range a.Clouds {
				r.Cells = append(r.Cells, cell(s.Values[c]))
			}
			v.System = append(v.System, r)
		}
		for i, pd := range a.Differences {
			if i == maxDriftRows {
				v.More = len(a.Differences) - i
				break
			}
			label := pd.Name
			if pd.Arch != "" {
				label += ":" + pd.Arch
			}
			r := driftRow{Label: manifest.Visible(label), Newest: strings.Join(visibleAll(pd.Newest), ", ")}
			for _, c := range a.Clouds {
				r.Cells = append(r.Cells, cell(pd.Versions[c]))
			}
			v.Rows = append(v.Rows, r)
		}
	}
	for _, cc := range d.OverTime {
		cv := changesView{Cloud: cc.Cloud, Note: cc.Note}
		if cc.Previous != nil {
			cv.PreviousBuild, cv.PreviousURL = cc.Previous.Build, BuildPath(cc.Previous.Build)
		}
		if c := cc.Changes; c != nil {
			cv.Headline, _, _ = strings.Cut(c.Text(manifest.RenderOptions{MaxRows: 1}), "\n")
			cv.Headline = strings.TrimPrefix(cv.Headline, "Since the previous image: ") // the section's title says it
			for _, s := range c.System {
				cv.System = append(cv.System, changeRow{Name: s.Field, From: cell(s.From), To: cell(s.To)})
			}
			for i, pc := range c.Changes {
				if i == maxDriftRows {
					cv.More = len(c.Changes) - i
					break
				}
				name := pc.Name
				if pc.Arch != "" {
					name += ":" + pc.Arch
				}
				cv.Rows = append(cv.Rows, changeRow{Name: manifest.Visible(name), Kind: string(pc.Kind), From: cell(pc.From), To: cell(pc.To)})
			}
		}
		v.OverTime = append(v.OverTime, cv)
	}
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return manifest.Visible(s)
}

func visibleAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = manifest.Visible(s)
	}
	return out
}

// manifest serves a cloud's manifest of a build, CycloneDX JSON, to whoever
// may see the build's page: the page links it (the API's route wants a token).
func (p *Pages) manifest(c echo.Context) error {
	b, err := p.getBuild(c)
	if b == nil {
		return err
	}
	cloud := c.Param("cloud")
	doc, err := builds.ManifestDocument(c.Request().Context(), p.store, b.ID, cloud)
	if errors.Is(err, builds.ErrNotFound) {
		return p.errorPage(c, http.StatusNotFound, fmt.Sprintf("Build %s has no manifest from cloud %q.", b.ID, cloud))
	}
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'")
	h.Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, manifest.MediaType, doc)
}
