package builder

import (
	"context"
	"fmt"
	"maps"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/provenance"
)

// Provenance is how a Job writes its image's provenance: an in-toto
// statement with a SLSA v1 predicate, in a DSSE envelope signed by Signer,
// whose digest the image carries as clouds.TagProvenance.
//
// The statement is written after Snapshot: it names the image by its id,
// which the cloud assigns when it makes the image (EC2's CreateImage,
// Nova's createImage), so it cannot be among the tags Snapshot sets. The
// digest is added then through clouds.ImageTagger; the statement signs the
// same provenance tags Snapshot set, which imagegen verify compares with
// the image's tags as they are now.
type Provenance struct {
	Signer         *provenance.Signer // nil or keyless: an unsigned envelope
	BuilderID      string             // this deployment (the server's base_url)
	BuilderVersion string             // imagegen's version; optional
	RepoURL        string             // the repository's web URL; optional
	Ref            string             // the pushed ref; optional
}

// attest writes, signs and records the image's provenance, and tags the
// image with its digest. Signing or tagging that fails fails the build (its
// image is deleted): an image imagegen made must carry its provenance. A cloud that cannot tag an existing image gets a
// warning: its image has provenance imagegen serves but not the tag that
// binds it, which imagegen verify reports.
func (p *pipeline) attest(ctx context.Context) error {
	pv := p.job.Provenance
	if pv == nil {
		return nil
	}
	cs := p.job.Spec.Clouds[p.job.CloudName]
	st, err := provenance.NewStatement(provenance.Facts{
		BuilderID:      pv.BuilderID,
		BuilderVersion: pv.BuilderVersion,
		Repo:           p.job.Repo,
		RepoURL:        pv.RepoURL,
		Ref:            pv.Ref,
		Commit:         p.job.Commit,
		Generator:      p.job.Spec.Name,
		Cloud:          p.job.CloudName,
		ImageID:        p.img.ID,
		ImageName:      p.img.Name,
		ScriptSHA256:   p.job.Spec.Digest,
		BaseImage:      cs.Image,
		BuildID:        p.job.Build,
		Started:        p.res.Started,
		Finished:       p.now(),
	})
	if err != nil {
		// Facts a statement cannot carry (a commit that is not a full SHA-1)
		// come from tests and local builds, never from a push: the image is
		// kept, without provenance, and the log says why.
		p.slog.Warn("no provenance statement for this image", "err", err)
		return nil
	}
	envelope, err := pv.Signer.Sign(ctx, st)
	if err != nil {
		return err
	}
	digest := provenance.Digest(envelope)
	tagger, ok := p.job.Cloud.(clouds.ImageTagger)
	if ok {
		if err := tagger.TagImage(ctx, p.img.ID, map[string]string{clouds.TagProvenance: digest}); err != nil {
			return fmt.Errorf("tag the image with its provenance: %w", err)
		}
		p.img.Tags = maps.Clone(p.img.Tags)
		if p.img.Tags == nil {
			p.img.Tags = map[string]string{}
		}
		p.img.Tags[clouds.TagProvenance] = digest
	} else {
		p.slog.Warn("this cloud cannot tag an existing image: the image does not carry " + clouds.TagProvenance)
	}
	p.res.Provenance = envelope
	if pv.Signer.Signs() {
		p.slog.Info("provenance signed", "key", pv.Signer.KeyID(), "sha256", digest)
	} else {
		p.slog.Warn("provenance written unsigned (no provenance.signing_key_file)", "sha256", digest)
	}
	return nil
}
