package provenance_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imagegen/imagegen/provenance"
)

// TestGoldenStatement pins the statement's format: field names, the build type,
// the subject's digest, the dependencies (go test -run Golden -update rewrites it).
func TestGoldenStatement(t *testing.T) {
	st := newStatement(t, testFacts())
	var indented bytes.Buffer
	if err := json.Indent(&indented, st.JSON(), "", "  "); err != nil {
		t.Fatal(err)
	}
	indented.WriteByte('\n')
	checkGolden(t, "statement.golden.json", indented.Bytes())

	// The payload is compact and the same bytes every time (protojson varies its
	// whitespace on purpose; the package must not pass that on).
	again := newStatement(t, testFacts())
	if !bytes.Equal(st.JSON(), again.JSON()) {
		t.Errorf("two statements of the same facts differ:\n%s\n%s", st.JSON(), again.JSON())
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, st.JSON()); err != nil || !bytes.Equal(compact.Bytes(), st.JSON()) {
		t.Errorf("the payload is not compact JSON: %s", st.JSON())
	}
}

// TestStatementRoundTrip: what NewStatement writes, ParseStatement reads back
// to the same facts, and the in-toto and SLSA bindings validate it.
func TestStatementRoundTrip(t *testing.T) {
	cases := map[string]func(*provenance.Facts){
		"full": func(*provenance.Facts) {},
		"minimal": func(f *provenance.Facts) {
			f.BuilderVersion, f.RepoURL, f.Ref, f.ImageName = "", "", "", ""
		},
		"no ref, with a URL": func(f *provenance.Facts) { f.Ref = "" },
		"base image resolved from a filter": func(f *provenance.Facts) {
			f.BaseImage = `{name: "debian-12-amd64-*", owner: "136693071363", most_recent: true}`
			f.BaseImageID = "ami-0123456789abcdef0"
		},
		"times in another zone": func(f *provenance.Facts) {
			zone := time.FixedZone("CET", 3600)
			f.Started, f.Finished = f.Started.In(zone), f.Finished.In(zone)
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			f := testFacts()
			edit(&f)
			st := newStatement(t, f)
			parsed, err := provenance.ParseStatement(st.JSON())
			if err != nil {
				t.Fatalf("%v\n%s", err, st.JSON())
			}
			want := f
			want.Started, want.Finished = f.Started.UTC(), f.Finished.UTC()
			if want.BaseImageID == "" {
				want.BaseImageID = want.BaseImage
			}
			if got := parsed.Facts(); got != want {
				t.Errorf("facts read back:\n got %+v\nwant %+v", got, want)
			}
			if got := st.Facts(); got != want {
				t.Errorf("Statement.Facts:\n got %+v\nwant %+v", got, want)
			}
			if !bytes.Equal(parsed.JSON(), st.JSON()) {
				t.Error("ParseStatement changed the bytes")
			}
			if err := parsed.InToto().Validate(); err != nil {
				t.Errorf("in-toto Validate: %v", err)
			}
			if err := parsed.Provenance().Validate(); err != nil {
				t.Errorf("SLSA Validate: %v", err)
			}
			tags := parsed.Tags()
			if tags[provenance.TagBaseImage] != want.BaseImageID || tags[provenance.TagCommit] != f.Commit || len(tags) != 6 {
				t.Errorf("Tags = %v", tags)
			}
		})
	}
}

func TestNewStatementRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(*provenance.Facts)
		want string
	}{
		{"short commit", func(f *provenance.Facts) { f.Commit = "3f78685" }, `commit "3f78685" is not a full 40-character`},
		{"upper-case commit", func(f *provenance.Facts) { f.Commit = strings.ToUpper(f.Commit) }, "lowercase hex SHA-1"},
		{"script digest", func(f *provenance.Facts) { f.ScriptSHA256 = "sha256:abc" }, `script digest "sha256:abc"`},
		{"no builder id", func(f *provenance.Facts) { f.BuilderID = "" }, "builder id"},
		{"relative builder id", func(f *provenance.Facts) { f.BuilderID = "imagegen.example.org" }, `builder id "imagegen.example.org" is not an absolute URI`},
		{"repository URL", func(f *provenance.Facts) { f.RepoURL = "github.com/fg/images" }, "repository URL"},
		{"no image id", func(f *provenance.Facts) { f.ImageID = "" }, "image id is missing"},
		{"no base image", func(f *provenance.Facts) { f.BaseImage = "" }, "base image is missing"},
		{"no build id", func(f *provenance.Facts) { f.BuildID = "" }, "build id is missing"},
		{"cloud with a slash", func(f *provenance.Facts) { f.Cloud = "a/b" }, `cloud name "a/b" contains '/'`},
		{"no times", func(f *provenance.Facts) { f.Started = time.Time{} }, "start and end times are required"},
		{"backwards", func(f *provenance.Facts) { f.Finished = f.Started.Add(-time.Second) }, "finished (2026-03-01T11:59:59Z) before it started"},
		{"everything at once", func(f *provenance.Facts) { *f = provenance.Facts{} }, "repository is missing\ngenerator is missing\ncloud is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := testFacts()
			c.edit(&f)
			_, err := provenance.NewStatement(f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestParseStatementRejects edits a valid statement the way a forger, or
// another producer, might, and checks each edit is refused with its reason.
func TestParseStatementRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(*intoto.Statement, *slsa.Provenance)
		want string
	}{
		{"statement type", func(s *intoto.Statement, _ *slsa.Provenance) { s.Type = "https://in-toto.io/Statement/v0.1" }, "wrong statement type"},
		{"predicate type", func(s *intoto.Statement, _ *slsa.Provenance) { s.PredicateType = "https://slsa.dev/provenance/v0.2" }, `predicate type is "https://slsa.dev/provenance/v0.2"`},
		{"build type", func(_ *intoto.Statement, p *slsa.Provenance) {
			p.BuildDefinition.BuildType = "https://example.com/other"
		}, `build type is "https://example.com/other"`},
		{"no builder", func(_ *intoto.Statement, p *slsa.Provenance) { p.RunDetails.Builder = nil }, "runDetails.builder required"},
		{"two subjects", func(s *intoto.Statement, _ *slsa.Provenance) { s.Subject = append(s.Subject, s.Subject[0]) }, "has 2 subjects"},
		{"subject by sha256 only", func(s *intoto.Statement, _ *slsa.Provenance) {
			s.Subject[0].Digest = map[string]string{"sha256": strings.Repeat("ab", 32)}
		}, `no "imagegenImageId" digest`},
		{"subject on another cloud", func(s *intoto.Statement, _ *slsa.Provenance) {
			s.Subject[0].Digest["imagegenImageId"] = "other-cloud/0b9e8c1a"
		}, `the subject is an image on cloud "other-cloud"`},
		{"subject without a cloud", func(s *intoto.Statement, _ *slsa.Provenance) {
			s.Subject[0].Digest["imagegenImageId"] = "0b9e8c1a"
		}, `is not <cloud>/<image id>`},
		{"source commit differs", func(_ *intoto.Statement, p *slsa.Provenance) {
			p.BuildDefinition.ResolvedDependencies[0].Digest["gitCommit"] = strings.Repeat("0", 40)
		}, "the source dependency is commit"},
		{"no script dependency", func(_ *intoto.Statement, p *slsa.Provenance) {
			p.BuildDefinition.ResolvedDependencies = p.BuildDefinition.ResolvedDependencies[:1]
		}, `"script" is missing`},
		{"malformed script digest", func(_ *intoto.Statement, p *slsa.Provenance) {
			p.BuildDefinition.ResolvedDependencies[1].Digest["sha256"] = "xyz"
		}, "not valid hex-encoded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStatement(t, testFacts())
			s, p := st.InToto(), st.Provenance()
			c.edit(s, p)
			pred, err := protojson.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := protojson.Unmarshal(pred, s.Predicate); err != nil {
				t.Fatal(err)
			}
			data, err := protojson.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			_, err = provenance.ParseStatement(data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := provenance.ParseStatement([]byte("not json")); err == nil || !strings.Contains(err.Error(), "not an in-toto statement") {
		t.Errorf("not JSON: err = %v", err)
	}
}
