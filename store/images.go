package store

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/imagegen/imagegen/builds"
)

// An image is found by its id in two keys written with its lineage entry
// (AddImage), each expiring with the retention, like the lineage:
//
//	imagegen:image:<cloud>:<image id>   string: the lineage entry (JSON)
//	imagegen:image-clouds:<image id>    set: the clouds that have an image of that id
//
// So "which build made image X on cloud C" is one GET, and "on which cloud
// is X" one SMEMBERS, whatever the number of images: a key of ~400 bytes per
// image, and no scan. Like a lineage, they are never touched together
// with a build's keys, so they carry no hash tag. Images recorded before these keys existed are not
// indexed (there is no scan fallback: finding one would mean reading every
// generator's lineage); the cloud's own tags answer for them
// (imagegen trace --config). The keys are written with a pipeline, not in the
// lineage's transaction, so that under Redis Cluster each goes to its own
// slot.
//
// Two more fields sit in a build's hash, so that they live exactly as long
// as the record:
//
//	specz               the spec (with its script and resolved script_file), gzip'd JSON
//	provenance:<cloud>  the image's DSSE envelope, byte for byte as signed
func imageKey(cloud, id string) string { return prefix + "image:" + cloud + ":" + id }
func imageCloudsKey(id string) string  { return prefix + "image-clouds:" + id }

const (
	specField       = "spec"  // plain JSON, as records before specz were written
	specZField      = "specz" // gzip'd JSON
	provenanceField = "provenance:"
)

// indexImage records the image under its cloud and id.
func (s *Store) indexImage(ctx context.Context, e builds.LineageEntry, entry []byte) error {
	if e.Cloud == "" || e.ImageID == "" {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, imageKey(e.Cloud, e.ImageID), entry, s.retention)
		p.SAdd(ctx, imageCloudsKey(e.ImageID), e.Cloud)
		p.Expire(ctx, imageCloudsKey(e.ImageID), s.retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("index image %s/%s: %w", e.Cloud, e.ImageID, err)
	}
	return nil
}

// Image returns the lineage entry of image id on cloud; builds.ErrNotFound
// when imagegen has no record of it (never built here, expired, or built
// before the index).
func (s *Store) Image(ctx context.Context, cloud, id string) (builds.LineageEntry, error) {
	var e builds.LineageEntry
	raw, err := s.rdb.Get(ctx, imageKey(cloud, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return e, fmt.Errorf("image %s on %s: %w", id, cloud, builds.ErrNotFound)
	}
	if err != nil {
		return e, fmt.Errorf("read image %s on %s: %w", id, cloud, err)
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, fmt.Errorf("decode image %s on %s: %w", id, cloud, err)
	}
	return e, nil
}

// ImageClouds returns the clouds that have an image of id, sorted.
func (s *Store) ImageClouds(ctx context.Context, id string) ([]string, error) {
	names, err := s.rdb.SMembers(ctx, imageCloudsKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", id, err)
	}
	slices.Sort(names)
	return names, nil
}

// SetProvenance stores the DSSE envelope of build's image on cloud, as the
// bytes given (its SHA-256 is the image's imagegen:provenance-sha256), with
// the build's record: like a manifest, never outliving nor making one.
func (s *Store) SetProvenance(ctx context.Context, build, cloud string, envelope []byte) error {
	n, err := saveManifest.Run(ctx, s.rdb, []string{buildKey(build)}, provenanceField+cloud, envelope, s.retention.Milliseconds()).Int()
	if err == nil && n == 0 {
		if legacy, lerr := s.legacy(ctx, build); lerr == nil && legacy {
			n, err = saveManifest.Run(ctx, s.rdb, []string{legacyBuildKey(build)}, provenanceField+cloud, envelope, s.retention.Milliseconds()).Int()
		}
	}
	if err != nil {
		return fmt.Errorf("store provenance of build %s on %s: %w", build, cloud, err)
	}
	if n == 0 {
		return fmt.Errorf("store provenance of build %s on %s: build %w", build, cloud, builds.ErrNotFound)
	}
	return nil
}

// Provenance returns the envelope SetProvenance stored; builds.ErrNotFound
// when there is none (the build expired, failed, or predates provenance).
func (s *Store) Provenance(ctx context.Context, build, cloud string) ([]byte, error) {
	if build == "" || strings.ContainsAny(build, ":*{} ") {
		return nil, builds.ErrNotFound
	}
	b, err := s.rdb.HGet(ctx, buildKey(build), provenanceField+cloud).Bytes()
	if errors.Is(err, redis.Nil) && !s.cluster {
		b, err = s.rdb.HGet(ctx, legacyBuildKey(build), provenanceField+cloud).Bytes()
	}
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("provenance of build %s on %s: %w", build, cloud, builds.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read provenance of build %s on %s: %w", build, cloud, err)
	}
	return b, nil
}

// gzipped compresses a spec's JSON for its record: scripts are text, and a
// build keeps its script as long as its record, for imagegen changes.
func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipWriters and gzipReaders are reused: a writer at BestCompression
// allocates about 1 MiB and a reader its 32 KiB window, and with thousands
// of builds in flight every record written or read made one (5 GiB of
// garbage while 10 000 builds started, which set the worker's peak RSS).
var (
	gzipWriters = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzip.BestCompression) // a valid level: no error
		return w
	}}
	gzipReaders sync.Pool // *gzip.Reader
)

// maxSpecJSON bounds what a stored spec inflates to: a spec file and its
// script_file are each at most spec.MaxFileSize, so anything larger is not
// a spec imagegen wrote.
const maxSpecJSON = 64 << 20

// specJSON is the spec field of a build's hash: specz inflated, or the plain
// spec of a record written before specz.
func specJSON(h map[string]string) ([]byte, error) {
	z, ok := h[specZField]
	if !ok {
		return []byte(h[specField]), nil
	}
	r, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if r == nil {
		r, err = gzip.NewReader(strings.NewReader(z))
	} else {
		err = r.Reset(strings.NewReader(z))
	}
	if err != nil {
		return nil, err
	}
	defer gzipReaders.Put(r)
	b, err := io.ReadAll(io.LimitReader(r, maxSpecJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSpecJSON {
		return nil, errors.New("the stored spec inflates past 64 MiB")
	}
	return b, nil
}
