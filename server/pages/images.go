package pages

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/imagegen/imagegen/builds"
)

// The pages' side of traceability: the search box (layout.html) takes an
// image id to the lineage row of the build that made it, and the lineage
// page says what changed from each build to the one before.

// changesRows is how many of a lineage's newest rows get their changes
// (each reads two builds' scripts); older rows link to GitHub's comparison.
const changesRows = 20

// link is a link on an error page.
type link struct{ URL, Text string }

// searchImage serves GET /images?id=ID[&cloud=C]: the image's row on its
// generator's lineage page, or the clouds to choose from when the id is on
// several, or a page saying imagegen has no record of it.
func (p *Pages) searchImage(c echo.Context) error {
	id, cloud := c.QueryParam("id"), c.QueryParam("cloud")
	if id == "" {
		return p.errorPage(c, http.StatusBadRequest, "Give an image id: the search box takes the id a cloud gave an image (an AMI id, a Glance UUID, a qemu image name).")
	}
	ctx := c.Request().Context()
	names := []string{cloud}
	if cloud == "" {
		var err error
		if names, err = p.store.ImageClouds(ctx, id); err != nil {
			return err
		}
	}
	var found []builds.LineageEntry
	for _, n := range names {
		e, err := p.store.Image(ctx, n, id)
		if err == nil && p.mayRead(viewerOf(c), e.Repo) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		return p.errorPage(c, http.StatusNotFound, fmt.Sprintf(
			"imagegen has no record of image %q (records are kept for %s). The cloud's own tags still say where it came from: imagegen trace --config FILE --cloud NAME %s",
			id, p.cfg.Build.Retention, id))
	case 1:
		e := found[0]
		return c.Redirect(http.StatusSeeOther, generatorPath(e.Repo, e.Generator)+"#build-"+url.PathEscape(e.Build))
	}
	d := errorData{Page: Page{Title: "Image on several clouds"}, Code: http.StatusConflict,
		Message: fmt.Sprintf("Image id %q is on more than one cloud: choose one.", id)}
	for _, e := range found {
		d.Links = append(d.Links, link{URL: "/images?" + url.Values{"id": {id}, "cloud": {e.Cloud}}.Encode(),
			Text: fmt.Sprintf("%s on %s: %s in %s", e.ImageName, e.Cloud, e.Generator, e.Repo)})
	}
	return p.render(c, http.StatusConflict, "error", d)
}

// rowChanges is what changed from the build of a lineage row to the one
// before, as imagegen changes says it, for the row's first cloud.
type rowChanges struct {
	Summary    string
	Cloud      string
	Since      string // the earlier build
	SinceURL   string
	CompareURL string
	BaseImage  *builds.Change
	ScriptDiff string
	ScriptNote string
	Packages   string
}

// lineageChanges fills in the newest rows' changes: for a row's first
// image, against that cloud's image in the next older row that has one
// (the lineage is read once, here, not per row). A comparison that fails is
// left out: the page shows the lineage all the same.
func (p *Pages) lineageChanges(ctx context.Context, d *generatorData) {
	for i := range d.Rows {
		if i == changesRows {
			break
		}
		r := &d.Rows[i]
		for j, im := range r.Images {
			if im.ImageID == "" {
				continue
			}
			since := ""
			for k := i + 1; k < len(d.Rows) && since == ""; k++ {
				since = d.Rows[k].Images[j].ImageID
			}
			if since == "" {
				r.Changes = &rowChanges{Summary: "first image", Cloud: d.Clouds[j],
					ScriptNote: "this is the generator's first image on this cloud: nothing to compare with"}
				break
			}
			ch, err := p.images.Changes(ctx, d.Clouds[j], im.ImageID, since)
			if err != nil || ch.From == nil {
				break
			}
			rc := &rowChanges{Cloud: d.Clouds[j], CompareURL: ch.CompareURL, BaseImage: ch.BaseImage,
				ScriptDiff: ch.ScriptDiff, ScriptNote: ch.ScriptNote, Packages: packagesText(ch.Packages),
				Since: ch.From.Build, SinceURL: BuildPath(ch.From.Build), Summary: "same script"}
			if ch.ScriptChanged {
				rc.Summary = "script changed"
			}
			if ch.BaseImage != nil {
				rc.Summary += ", base image changed"
			}
			r.Changes = rc
			break
		}
	}
}

// packagesText says in a line what changed in the packages.
func packagesText(p builds.PackageDiff) string {
	switch c := p.Changes; {
	case !p.Recorded || c == nil:
		return p.Note
	case c.Identical:
		return fmt.Sprintf("identical (%d)", c.Packages)
	default:
		return fmt.Sprintf("%d added, %d removed, %d upgraded, %d downgraded, %d changed (the build's Drift section lists them)",
			c.Added, c.Removed, c.Upgraded, c.Downgraded, c.Changed)
	}
}
