package builder

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/provenance"
)

func testSigner(t *testing.T) *provenance.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	s, err := provenance.ParseSigner(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestProvenanceAfterSnapshot: with Job.Provenance the image's statement is
// signed once the image exists, the envelope comes back in the Result, and
// the image carries its digest, so its tags as the cloud holds them verify.
func TestProvenanceAfterSnapshot(t *testing.T) {
	ctx := context.Background()
	c := simulated.New(simulated.Options{})
	signer := testSigner(t)
	job := testJob(c, "true", &recorder{})
	job.Provenance = &Provenance{Signer: signer, BuilderID: "https://imagegen.example.org", Ref: "refs/heads/main", RepoURL: "https://github.com/octo/gens"}
	res := Run(ctx, job)
	if res.State != StateSucceeded || res.Image == nil {
		t.Fatalf("build %s: %s", res.State, res.Error)
	}
	if len(res.Provenance) == 0 {
		t.Fatal("no provenance envelope in the result")
	}
	digest := provenance.Digest(res.Provenance)
	if res.Image.Tags[clouds.TagProvenance] != digest {
		t.Errorf("result image tags %v; want %s=%s", res.Image.Tags, clouds.TagProvenance, digest)
	}
	now, err := c.DescribeImage(ctx, res.Image.ID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := signer.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	r, err := provenance.VerifyImage(ctx, v, res.Provenance, provenance.Image{Cloud: "sim", ID: res.Image.ID, Tags: now.Tags})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Errorf("the untouched image does not verify: %v", r.Err())
	}
	f := r.Statement.Facts()
	if f.Commit != job.Commit || f.Generator != "hello" || f.BuildID != "b1" || f.ImageName != res.Image.Name || f.Ref != "refs/heads/main" || f.BaseImage != "debian-12" {
		t.Errorf("statement facts %+v", f)
	}
}

// untaggable hides the simulated cloud's TagImage.
type untaggable struct{ clouds.Cloud }

// TestProvenanceWithoutTagger: a cloud that cannot tag an existing image
// still gets its statement (unsigned here: no key), with a warning in the
// build log; the image is kept.
func TestProvenanceWithoutTagger(t *testing.T) {
	rec := &recorder{}
	job := testJob(untaggable{simulated.New(simulated.Options{})}, "true", rec)
	job.Provenance = &Provenance{BuilderID: "https://imagegen.example.org"}
	res := Run(context.Background(), job)
	if res.State != StateSucceeded || len(res.Provenance) == 0 {
		t.Fatalf("build %s (%s), provenance %d bytes", res.State, res.Error, len(res.Provenance))
	}
	if _, ok := res.Image.Tags[clouds.TagProvenance]; ok {
		t.Errorf("image tags %v claim a provenance tag the cloud could not set", res.Image.Tags)
	}
	if log := strings.Join(rec.text(StreamImagegen), "\n"); !strings.Contains(log, "cannot tag an existing image") || !strings.Contains(log, "unsigned") {
		t.Errorf("build log lacks the warnings:\n%s", log)
	}
}

// TestProvenanceTagFailureFailsBuild: an image that could not be tagged with
// its provenance is not kept: the build fails and deletes it.
func TestProvenanceTagFailureFailsBuild(t *testing.T) {
	c := simulated.New(simulated.Options{})
	c.Inject(simulated.OpTagImage, simulated.Fault{Err: &clouds.Error{Kind: clouds.KindAuth, Op: "tag image", Err: errAccess}})
	job := testJob(c, "true", &recorder{})
	job.Provenance = &Provenance{BuilderID: "https://imagegen.example.org"}
	res := Run(context.Background(), job)
	if res.State != StateFailed || !strings.Contains(res.Error, "provenance: tag the image with its provenance") {
		t.Fatalf("build %s: %q; want failed naming the provenance tag", res.State, res.Error)
	}
	if imgs := c.Images(); len(imgs) != 0 {
		t.Errorf("images left: %+v", imgs)
	}
}

var errAccess = accessDenied("not allowed to tag images")

type accessDenied string

func (e accessDenied) Error() string { return string(e) }

// TestProvenanceNeedsAFullCommit: a local build's commit (not a full SHA-1)
// cannot be in a statement: the image is kept, without provenance, and the
// log says why.
func TestProvenanceNeedsAFullCommit(t *testing.T) {
	rec := &recorder{}
	job := testJob(simulated.New(simulated.Options{}), "true", rec)
	job.Commit = "c0ffee"
	job.Provenance = &Provenance{BuilderID: "https://imagegen.example.org"}
	res := Run(context.Background(), job)
	if res.State != StateSucceeded || res.Provenance != nil {
		t.Fatalf("build %s (%s), provenance %q", res.State, res.Error, res.Provenance)
	}
	if log := strings.Join(rec.text(StreamImagegen), "\n"); !strings.Contains(log, "no provenance statement for this image") || !strings.Contains(log, `commit \"c0ffee\" is not a full`) {
		t.Errorf("build log does not say why:\n%s", log)
	}
}
