package provenance_test

import (
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/provenance"
)

// TestTagsAreTheClouds keeps this package's copy of the tag names equal to the
// ones the pipeline sets (the package itself must not import clouds).
func TestTagsAreTheClouds(t *testing.T) {
	for _, p := range []struct{ ours, clouds string }{
		{provenance.TagRepo, clouds.TagRepo},
		{provenance.TagCommit, clouds.TagCommit},
		{provenance.TagGenerator, clouds.TagGenerator},
		{provenance.TagScriptSHA, clouds.TagScriptSHA},
		{provenance.TagBaseImage, clouds.TagBaseImage},
		{provenance.TagBuild, clouds.TagBuild},
		{provenance.TagProvenance, clouds.TagProvenance},
	} {
		if p.ours != p.clouds {
			t.Errorf("provenance has %q where clouds has %q", p.ours, p.clouds)
		}
	}
}
