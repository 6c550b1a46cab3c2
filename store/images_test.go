package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/builds"
)

// TestSpecStoredCompressed: a build's spec, with its script, is kept
// gzip'd in the record (a large script takes a fraction of its size), read
// back whole; a record written before (plain "spec") still reads.
func TestSpecStoredCompressed(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("z1")
	sp.Script = strings.Repeat("sudo apt-get install -y dstat # <b>&\n", 4000)
	if _, err := s.Create(ctx, b, sp); err != nil {
		t.Fatal(err)
	}
	h, err := rdb.HGetAll(ctx, buildKey("z1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, plain := h[specField]; plain || len(h[specZField]) == 0 || len(h[specZField]) > len(sp.Script)/10 {
		t.Errorf("stored spec fields: plain %v, specz %d bytes for a %d-byte script", h[specField] != "", len(h[specZField]), len(sp.Script))
	}
	_, got, err := s.Get(ctx, "z1")
	if err != nil || got.Script != sp.Script || got.Digest != sp.Digest {
		t.Fatalf("Get: %v; script intact: %v", err, got != nil && got.Script == sp.Script)
	}

	// A record of an earlier version: "spec", plain JSON.
	old, osp := twoCloudBuild("z0")
	if _, err := s.Create(ctx, old, osp); err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(osp)
	rdb.HDel(ctx, buildKey("z0"), specZField)
	rdb.HSet(ctx, buildKey("z0"), specField, j)
	if _, got, err := s.Get(ctx, "z0"); err != nil || got.Script != "echo hi" {
		t.Fatalf("Get of a plain-spec record: %+v, %v", got, err)
	}
}

// TestImageIndex: an image recorded in its lineage is found by cloud and
// id, and its id names its clouds; the keys expire with the retention.
func TestImageIndex(t *testing.T) {
	s, rdb := newStore(t, time.Hour, 0)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, e := range []builds.LineageEntry{
		{Build: "b1", Repo: "octo/images", Generator: "dstat", Cloud: "a", Commit: "c1", Ref: "refs/heads/main", ImageID: "img-1", ImageName: "dstat-1", Created: now},
		{Build: "b1", Repo: "octo/images", Generator: "dstat", Cloud: "b", Commit: "c1", ImageID: "img-1", ImageName: "dstat-1", Created: now},
		{Build: "b2", Repo: "octo/images", Generator: "dstat", Cloud: "a", Commit: "c2", ImageID: "img-2", ImageName: "dstat-2", Created: now.Add(time.Minute)},
	} {
		if err := s.AddImage(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	e, err := s.Image(ctx, "a", "img-1")
	if err != nil || e.Build != "b1" || e.Ref != "refs/heads/main" || e.Commit != "c1" || !e.Created.Equal(now) {
		t.Errorf("Image(a, img-1) = %+v, %v", e, err)
	}
	if _, err := s.Image(ctx, "b", "img-2"); !errors.Is(err, builds.ErrNotFound) {
		t.Errorf("Image(b, img-2) = %v; want ErrNotFound", err)
	}
	if cs, err := s.ImageClouds(ctx, "img-1"); err != nil || strings.Join(cs, ",") != "a,b" {
		t.Errorf("ImageClouds(img-1) = %v, %v", cs, err)
	}
	if cs, err := s.ImageClouds(ctx, "nope"); err != nil || len(cs) != 0 {
		t.Errorf("ImageClouds(nope) = %v, %v", cs, err)
	}
	for _, k := range []string{imageKey("a", "img-1"), imageCloudsKey("img-1")} {
		if ttl, _ := rdb.TTL(ctx, k).Result(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s TTL %v; want the retention", k, ttl)
		}
	}
}

// TestProvenanceStoredExactly: the envelope comes back byte for byte (its
// digest is the image's tag), lives in the build's record, and is not found
// for a cloud or build without one.
func TestProvenanceStoredExactly(t *testing.T) {
	s, _ := newStore(t, time.Hour, 0)
	ctx := context.Background()
	b, sp := twoCloudBuild("p1")
	if _, err := s.Create(ctx, b, sp); err != nil {
		t.Fatal(err)
	}
	env := []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"PDw+Pg==","signatures":[]}` + " \u2028<&>\n")
	if err := s.SetProvenance(ctx, "p1", "a", env); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Provenance(ctx, "p1", "a"); err != nil || !bytes.Equal(got, env) {
		t.Errorf("Provenance = %q, %v; want %q", got, err, env)
	}
	for _, c := range [][2]string{{"p1", "b"}, {"nope", "a"}, {"bad:id", "a"}} {
		if _, err := s.Provenance(ctx, c[0], c[1]); !errors.Is(err, builds.ErrNotFound) {
			t.Errorf("Provenance(%s, %s) = %v; want ErrNotFound", c[0], c[1], err)
		}
	}
	if got, _, err := s.Get(ctx, "p1"); err != nil || len(got.Clouds) != 2 {
		t.Errorf("the build reads as before: %+v, %v", got, err)
	}
}
