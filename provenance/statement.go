package provenance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// PredicateType is the SLSA Provenance v1 predicate every statement carries.
	PredicateType = "https://slsa.dev/provenance/v1"

	// BuildType names imagegen's build: one generator's script run on one cloud
	// from a base image and saved as a new image. The page it names documents the
	// external parameters and resolved dependencies; verifiers compare it as a
	// string, so it stays the same while the format does (a change that breaks
	// consumers gets a new file and a new URI).
	BuildType = "https://github.com/imagegen/imagegen/blob/main/provenance/buildtype-v1.md"

	// ImageIDAlgorithm is the DigestSet key under which a statement names a VM
	// image: the value is "<cloud>/<image id>", the server config's cloud name and
	// the id exactly as that cloud reports it.
	//
	// A VM image has no content digest anyone can compute (its bits stay in the
	// cloud, and a user holds only its id), and the in-toto DigestSet spec allows
	// a non-cryptographic, immutable identifier for exactly this case; consumers
	// that do not know the key ignore it, as the spec requires. The cloud name is
	// part of the value because an id is unique only within its cloud (two QEMU
	// hosts, two OpenStack deployments), and a DigestSet entry must name one
	// artifact on its own. Cloud names never contain '/', so the value splits at
	// its first '/'.
	ImageIDAlgorithm = "imagegenImageId"

	// Names of the resolved dependencies (see BuildType).
	depSource    = "source"
	depScript    = "script"
	depBaseImage = "base-image"

	// builderVersionKey is the key of imagegen's version in runDetails.builder.version.
	builderVersionKey = "imagegen"
)

// Facts is what the pipeline knows about one new image when it writes the
// statement: plain values, so this package needs none of imagegen's others.
type Facts struct {
	BuilderID      string // this deployment, an absolute URI: the server's base_url
	BuilderVersion string // imagegen's version; optional
	Repo           string // owner/name (imagegen:repo)
	RepoURL        string // the repository's web URL (https://github.com/owner/name); optional
	Ref            string // the pushed ref (refs/heads/main); optional
	Commit         string // the full 40-hex SHA-1 (imagegen:commit)
	Generator      string // the generator's name (imagegen:generator)
	Cloud          string // the server config's cloud name
	ImageID        string // the new image's id on Cloud
	ImageName      string // the new image's name; optional
	ScriptSHA256   string // the spec and script digest, hex (imagegen:script-sha256)
	BaseImage      string // the base image as the spec names it (an id, or a filter)
	BaseImageID    string // the image the build launched (imagegen:base-image); "" means BaseImage
	BuildID        string // imagegen's build id (imagegen:build)
	Started        time.Time
	Finished       time.Time
}

// Statement is one image's provenance: an in-toto Statement v1 with a SLSA
// Provenance v1 predicate, and its JSON encoding, the bytes a DSSE envelope signs.
type Statement struct {
	facts Facts
	pb    *intoto.Statement
	prov  *slsa.Provenance
	json  []byte
}

// externalParameters is the build type's externalParameters object.
type externalParameters struct {
	Repository string `json:"repository"`
	Ref        string `json:"ref,omitempty"`
	Commit     string `json:"commit"`
	Generator  string `json:"generator"`
	Cloud      string `json:"cloud"`
	BaseImage  string `json:"baseImage"`
}

// NewStatement writes the statement for one image. It fails when a fact is
// missing or malformed: a statement the in-toto and SLSA validators reject, or
// one whose commit or digest cannot be checked, is worse than none.
func NewStatement(f Facts) (*Statement, error) {
	f = f.normalized()
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	ext, err := toStruct(externalParameters{
		Repository: f.Repo,
		Ref:        f.Ref,
		Commit:     f.Commit,
		Generator:  f.Generator,
		Cloud:      f.Cloud,
		BaseImage:  f.BaseImage,
	})
	if err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	source := &intoto.ResourceDescriptor{
		Name:   depSource,
		Digest: map[string]string{string(intoto.AlgorithmGitCommit): f.Commit},
	}
	if f.RepoURL != "" {
		source.Uri = sourceURI(f.RepoURL, f.Ref)
	}
	builder := &slsa.Builder{Id: f.BuilderID}
	if f.BuilderVersion != "" {
		builder.Version = map[string]string{builderVersionKey: f.BuilderVersion}
	}
	prov := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:          BuildType,
			ExternalParameters: ext,
			ResolvedDependencies: []*intoto.ResourceDescriptor{
				source,
				{Name: depScript, Digest: map[string]string{string(intoto.AlgorithmSHA256): f.ScriptSHA256}},
				{Name: depBaseImage, Digest: imageDigest(f.Cloud, f.BaseImageID)},
			},
		},
		RunDetails: &slsa.RunDetails{
			Builder: builder,
			Metadata: &slsa.BuildMetadata{
				InvocationId: f.BuildID,
				StartedOn:    timestamppb.New(f.Started),
				FinishedOn:   timestamppb.New(f.Finished),
			},
		},
	}
	if err := prov.Validate(); err != nil {
		return nil, fmt.Errorf("provenance statement: SLSA predicate: %w", err)
	}
	pred, err := toStructMessage(prov)
	if err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: f.ImageName, Digest: imageDigest(f.Cloud, f.ImageID)}},
		PredicateType: PredicateType,
		Predicate:     pred,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance statement: in-toto statement: %w", err)
	}
	data, err := marshalCompact(st)
	if err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	return &Statement{facts: f, pb: st, prov: prov, json: data}, nil
}

// ParseStatement reads a statement imagegen wrote (the payload of its envelope):
// an in-toto Statement v1 that passes the bindings' Validate, with a SLSA
// Provenance v1 predicate of BuildType whose facts are complete and agree with
// each other. It does not check any signature: see Verifier.
func ParseStatement(data []byte) (*Statement, error) {
	st := &intoto.Statement{}
	if err := protojson.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("provenance statement: not an in-toto statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance statement: in-toto statement: %w", err)
	}
	if st.GetPredicateType() != PredicateType {
		return nil, fmt.Errorf("provenance statement: predicate type is %q, want %q", st.GetPredicateType(), PredicateType)
	}
	prov := &slsa.Provenance{}
	if err := fromStructMessage(st.GetPredicate(), prov); err != nil {
		return nil, fmt.Errorf("provenance statement: not a SLSA provenance v1 predicate: %w", err)
	}
	if err := prov.Validate(); err != nil {
		return nil, fmt.Errorf("provenance statement: SLSA predicate: %w", err)
	}
	if bt := prov.GetBuildDefinition().GetBuildType(); bt != BuildType {
		return nil, fmt.Errorf("provenance statement: build type is %q, want imagegen's %q", bt, BuildType)
	}
	f, err := factsOf(st, prov)
	if err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("provenance statement: %w", err)
	}
	return &Statement{facts: f, pb: st, prov: prov, json: bytes.Clone(data)}, nil
}

// Facts returns what the statement says, as NewStatement was given it (times in
// UTC, BaseImageID filled in).
func (s *Statement) Facts() Facts { return s.facts }

// JSON returns the statement's JSON encoding: the DSSE payload, byte for byte.
func (s *Statement) JSON() []byte { return bytes.Clone(s.json) }

// InToto returns a copy of the statement as the in-toto bindings' message.
func (s *Statement) InToto() *intoto.Statement { return proto.Clone(s.pb).(*intoto.Statement) }

// Provenance returns a copy of the statement's predicate as the SLSA bindings' message.
func (s *Statement) Provenance() *slsa.Provenance { return proto.Clone(s.prov).(*slsa.Provenance) }

// Tags returns the tags the image must carry for the statement to hold: the
// provenance tags the pipeline sets at Snapshot, with the values the statement
// signed. TagProvenance is not among them: it names the envelope, which the
// statement cannot contain.
func (s *Statement) Tags() map[string]string {
	f := s.facts
	return map[string]string{
		TagRepo:      f.Repo,
		TagCommit:    f.Commit,
		TagGenerator: f.Generator,
		TagScriptSHA: f.ScriptSHA256,
		TagBaseImage: f.BaseImageID,
		TagBuild:     f.BuildID,
	}
}

func (f Facts) normalized() Facts {
	f.Started = f.Started.UTC()
	f.Finished = f.Finished.UTC()
	if f.BaseImageID == "" {
		f.BaseImageID = f.BaseImage
	}
	return f
}

var (
	hexSHA1   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// check reports every missing or malformed fact at once.
func (f Facts) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if u, err := url.Parse(f.BuilderID); err != nil || !u.IsAbs() {
		bad("builder id %q is not an absolute URI (the server's base_url, e.g. https://imagegen.example.org)", f.BuilderID)
	}
	if f.RepoURL != "" {
		if u, err := url.Parse(f.RepoURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("repository URL %q is not an http(s) URL", f.RepoURL)
		}
	}
	required := []struct{ name, value string }{
		{"repository", f.Repo}, {"generator", f.Generator}, {"cloud", f.Cloud},
		{"image id", f.ImageID}, {"base image", f.BaseImage}, {"build id", f.BuildID},
	}
	for _, r := range required {
		if r.value == "" {
			bad("%s is missing", r.name)
		}
	}
	if strings.Contains(f.Cloud, "/") {
		bad("cloud name %q contains '/'", f.Cloud)
	}
	if !hexSHA1.MatchString(f.Commit) {
		bad("commit %q is not a full 40-character lowercase hex SHA-1", f.Commit)
	}
	if !hexSHA256.MatchString(f.ScriptSHA256) {
		bad("script digest %q is not a 64-character lowercase hex SHA-256", f.ScriptSHA256)
	}
	switch {
	case f.Started.IsZero() || f.Finished.IsZero():
		bad("start and end times are required")
	case f.Finished.Before(f.Started):
		bad("the build finished (%s) before it started (%s)", f.Finished.Format(time.RFC3339), f.Started.Format(time.RFC3339))
	}
	return errors.Join(errs...)
}

// factsOf reads the facts back from a statement that passed Validate.
func factsOf(st *intoto.Statement, prov *slsa.Provenance) (Facts, error) {
	var f Facts
	if n := len(st.GetSubject()); n != 1 {
		return f, fmt.Errorf("has %d subjects, want one image", n)
	}
	subject := st.GetSubject()[0]
	cloud, id, err := splitImageDigest(subject.GetDigest())
	if err != nil {
		return f, fmt.Errorf("subject: %w", err)
	}
	var ext externalParameters
	if err := fromStruct(prov.GetBuildDefinition().GetExternalParameters(), &ext); err != nil {
		return f, fmt.Errorf("externalParameters: %w", err)
	}
	if ext.Cloud != cloud {
		return f, fmt.Errorf("the subject is an image on cloud %q, the external parameters say %q", cloud, ext.Cloud)
	}
	deps := map[string]*intoto.ResourceDescriptor{}
	for _, d := range prov.GetBuildDefinition().GetResolvedDependencies() {
		if deps[d.GetName()] != nil {
			return f, fmt.Errorf("resolvedDependencies: %q appears twice", d.GetName())
		}
		deps[d.GetName()] = d
	}
	for _, name := range []string{depSource, depScript, depBaseImage} {
		if deps[name] == nil {
			return f, fmt.Errorf("resolvedDependencies: %q is missing", name)
		}
	}
	if c := deps[depSource].GetDigest()[string(intoto.AlgorithmGitCommit)]; c != ext.Commit {
		return f, fmt.Errorf("the source dependency is commit %q, the external parameters say %q", c, ext.Commit)
	}
	baseCloud, baseID, err := splitImageDigest(deps[depBaseImage].GetDigest())
	if err != nil {
		return f, fmt.Errorf("resolvedDependencies %q: %w", depBaseImage, err)
	}
	if baseCloud != cloud {
		return f, fmt.Errorf("the base image is on cloud %q, the image on %q", baseCloud, cloud)
	}
	run := prov.GetRunDetails()
	f = Facts{
		BuilderID:      run.GetBuilder().GetId(),
		BuilderVersion: run.GetBuilder().GetVersion()[builderVersionKey],
		Repo:           ext.Repository,
		Ref:            ext.Ref,
		Commit:         ext.Commit,
		Generator:      ext.Generator,
		Cloud:          cloud,
		ImageID:        id,
		ImageName:      subject.GetName(),
		ScriptSHA256:   deps[depScript].GetDigest()[string(intoto.AlgorithmSHA256)],
		BaseImage:      ext.BaseImage,
		BaseImageID:    baseID,
		BuildID:        run.GetMetadata().GetInvocationId(),
	}
	if uri := deps[depSource].GetUri(); uri != "" {
		repoURL, ok := strings.CutPrefix(uri, "git+")
		if ext.Ref != "" {
			repoURL, ok = strings.CutSuffix(repoURL, "@"+ext.Ref)
		}
		if !ok || sourceURI(repoURL, ext.Ref) != uri {
			return f, fmt.Errorf("the source dependency's uri %q is not git+<repository URL>@<ref>", uri)
		}
		f.RepoURL = repoURL
	}
	if t := run.GetMetadata().GetStartedOn(); t != nil {
		f.Started = t.AsTime()
	}
	if t := run.GetMetadata().GetFinishedOn(); t != nil {
		f.Finished = t.AsTime()
	}
	return f, nil
}

// sourceURI is the source dependency's uri, in the SPDX-style form SLSA's own
// build types use: git+<repository URL>@<ref>.
func sourceURI(repoURL, ref string) string {
	if ref == "" {
		return "git+" + repoURL
	}
	return "git+" + repoURL + "@" + ref
}

func imageDigest(cloud, id string) map[string]string {
	return map[string]string{ImageIDAlgorithm: cloud + "/" + id}
}

func splitImageDigest(d map[string]string) (cloud, id string, err error) {
	v, ok := d[ImageIDAlgorithm]
	if !ok {
		return "", "", fmt.Errorf("no %q digest", ImageIDAlgorithm)
	}
	cloud, id, ok = strings.Cut(v, "/")
	if !ok || cloud == "" || id == "" {
		return "", "", fmt.Errorf("%s %q is not <cloud>/<image id>", ImageIDAlgorithm, v)
	}
	return cloud, id, nil
}

// marshalCompact encodes a message as compact JSON. protojson's own output
// varies its whitespace on purpose; compacting it leaves one encoding (fields in
// declaration order, map keys sorted), so equal statements give equal bytes.
func marshalCompact(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// toStructMessage turns a message into the google.protobuf.Struct that a
// statement's predicate is, through its JSON form (the form the spec defines).
func toStructMessage(m proto.Message) (*structpb.Struct, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, err
	}
	return s, nil
}

func fromStructMessage(s *structpb.Struct, m proto.Message) error {
	raw, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	return protojson.Unmarshal(raw, m)
}

func toStruct(v any) (*structpb.Struct, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, err
	}
	return s, nil
}

func fromStruct(s *structpb.Struct, v any) error {
	raw, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}
