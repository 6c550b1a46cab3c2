package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/internal/strictyaml"
	"github.com/imagegen/imagegen/manifest"
)

// Options are what the parser checks beyond the spec itself.
type Options struct {
	// Clouds are the server config's cloud names, each mapped to whether the
	// cloud makes images (false for type ssh, where image is optional).
	// nil means: do not check cloud names, and do not require image (the
	// parser cannot know which clouds make none).
	Clouds map[string]bool
}

// Keys the parser accepts; the JSON Schema in schema/ is tested against them.
var (
	topKeys      = []string{"name", "script", "script_file", "branches", "clouds", "manifest", "drift", "test", "test_file", "test_timeout", "keep_failed", "keep", "channel", "rebuild"}
	cloudKeys    = []string{"image", "ssh_user", "size"}
	manifestKeys = []string{"files", "required"}
	driftKeys    = []string{"ignore", "on_drift"}
)

// MaxIgnorePatterns is the most patterns drift.ignore may hold.
const MaxIgnorePatterns = 200

// NamePattern is what a generator name must match: it becomes part of image
// names and of GitHub status contexts (imagegen/<generator>/<cloud>).
const NamePattern = `^[a-z0-9][a-z0-9._-]*$`

// MaxNameLen keeps image names (<generator>-<yyyymmdd-hhmm>-<sha>) within
// every cloud's limit (EC2 allows 128 characters).
const MaxNameLen = 64

// maxErrors is how many errors one spec file reports.
const maxErrors = strictyaml.DefaultMaxErrors

var nameRE = regexp.MustCompile(NamePattern)

// yamlOptions: a spec comes from a repository anyone may push to, so it gets
// no aliases and no tags, and the file size limit.
var yamlOptions = strictyaml.Options{Kind: "generator spec", MaxBytes: MaxFileSize, MaxErrors: maxErrors}

// Parse reads the spec at file (a slash-separated path relative to the
// repository root, e.g. ".imagegen/dstat.yaml") from repo, and the script_file
// it names. Its errors are Errors.
func Parse(repo fs.FS, file string, opts Options) (*Spec, error) {
	data, err := readLimited(repo, file)
	if err != nil {
		return nil, Errors{{File: file, Msg: err.Error()}}
	}
	return ParseBytes(repo, file, data, opts)
}

// ParseBytes parses a spec already read from file. repo is where script_file
// is read from; it may be nil when the spec has none.
func ParseBytes(repo fs.FS, file string, data []byte, opts Options) (*Spec, error) {
	if len(data) > MaxFileSize {
		return nil, Errors{{File: file, Msg: tooLarge(int64(len(data))).Error()}}
	}
	p := &parser{Doc: strictyaml.Parse(file, data, yamlOptions), repo: repo, opts: opts}
	var s *Spec
	switch {
	case len(p.Errs) > 0:
	case p.Root == nil:
		p.ErrorAt(1, 1, "the spec is empty: it needs at least a script and clouds (see the example in the imagegen README)")
	default:
		s = p.spec(p.Root)
	}
	if len(p.Errs) > 0 {
		p.Errs.Sort()
		return nil, p.Errs
	}
	s.Digest = ComputeDigest(s)
	return s, nil
}

// ParseFiles parses the given spec files of one repository and checks that
// generator names are unique among them. It returns every spec that parsed,
// with an Errors error listing the problems of the others, so a caller can
// build the good ones and report the bad.
func ParseFiles(repo fs.FS, files []string, opts Options) ([]*Spec, error) {
	var (
		specs []*Spec
		errs  Errors
		seen  = map[string]*Spec{}
	)
	for _, f := range files {
		s, err := Parse(repo, f, opts)
		if err != nil {
			var es Errors
			if errors.As(err, &es) {
				errs = append(errs, es...)
			} else {
				errs = append(errs, Error{File: f, Msg: err.Error()})
			}
			continue
		}
		if first, ok := seen[s.Name]; ok {
			errs = append(errs, Error{File: s.File, Line: s.namePos.line, Col: s.namePos.col,
				Msg: fmt.Sprintf("generator name %q is also used by %s: names must be unique in a repository; rename one (set name:)", s.Name, first.NameAt())})
			continue
		}
		seen[s.Name] = s
		specs = append(specs, s)
	}
	if len(errs) > 0 {
		errs.Sort()
		return specs, errs
	}
	return specs, nil
}

// ParseDir parses every .imagegen/*.yaml and *.yml of repo, in name order.
// A repository without .imagegen has no generators: nil, nil.
// Like ParseFiles, it returns the specs that parsed alongside the errors.
func ParseDir(repo fs.FS, opts Options) ([]*Spec, error) {
	files, err := SpecFiles(repo, Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, Errors{{File: Dir, Msg: err.Error()}}
	}
	return ParseFiles(repo, files, opts)
}

// SpecFiles lists the spec files (*.yaml, *.yml) directly in dir of repo, sorted.
func SpecFiles(repo fs.FS, dir string) ([]string, error) {
	entries, err := fs.ReadDir(repo, dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || !IsSpecFile(e.Name()) {
			continue
		}
		files = append(files, path.Join(dir, e.Name()))
	}
	return files, nil
}

// IsSpecFile reports whether name has a spec file's extension.
func IsSpecFile(name string) bool {
	ext := path.Ext(name)
	return (ext == ".yaml" || ext == ".yml") && len(name) > len(ext)
}

type pos struct{ line, col int }

// parser reads a spec's tree; the YAML itself (one document, no aliases,
// tags or duplicate keys, bounded nesting) was checked by strictyaml.Parse.
type parser struct {
	*strictyaml.Doc
	repo fs.FS
	opts Options
}

func (p *parser) spec(root *yaml.Node) *Spec {
	if root.Kind != yaml.MappingNode {
		p.Errorf(root, "a spec is a mapping (name:, script:, clouds:, ...), not %s", strictyaml.Describe(root))
		return nil
	}
	base := path.Base(p.File)
	s := &Spec{File: p.File, Name: strings.TrimSuffix(base, path.Ext(base)), namePos: pos{1, 1}}
	nameWhat := "the generator name defaults to the file name, and"
	var scriptKey, scriptFileKey, cloudsKey, cloudsVal *yaml.Node
	for _, f := range p.Fields(root, "", topKeys) {
		k, v := f.Key, f.Value
		switch k.Value {
		case "name":
			if str, ok := p.String(v, "name"); ok {
				s.Name, s.namePos, nameWhat = str, pos{v.Line, v.Column}, "name"
			}
		case "script":
			scriptKey = k
			s.Script = p.script(v)
		case "script_file":
			scriptFileKey = k
			s.ScriptFile, s.Script = p.scriptFile(v)
		case "branches":
			s.Branches = p.branches(v)
		case "clouds":
			cloudsKey, cloudsVal = k, v
		case "manifest":
			s.Manifest = p.manifest(v)
		case "drift":
			s.Drift = p.drift(v)
		default:
			p.lifecycle(&s.Lifecycle, k, v)
		}
	}
	p.oneScript(root, scriptKey, scriptFileKey)
	if cloudsKey == nil {
		p.Errorf(root, "no clouds: add clouds: {NAME: {image: IMAGE, ssh_user: USER}} naming clouds of the server config")
	} else {
		s.Clouds = p.clouds(cloudsKey, cloudsVal)
	}
	p.checkLifecycle(root, s)
	p.checkName(s.namePos, s.Name, nameWhat)
	return s
}

// oneScript checks that exactly one of script and script_file is set.
func (p *parser) oneScript(root, scriptKey, scriptFileKey *yaml.Node) {
	switch {
	case scriptKey != nil && scriptFileKey != nil:
		later := scriptFileKey
		if scriptKey.Line > later.Line || scriptKey.Line == later.Line && scriptKey.Column > later.Column {
			later = scriptKey
		}
		p.Errorf(later, "set either script (inline) or script_file (a path in the repository), not both")
	case scriptKey == nil && scriptFileKey == nil:
		p.Errorf(root, "no script: set script (the commands, inline) or script_file (a path in the repository)")
	}
}

func (p *parser) checkName(at pos, name, what string) {
	switch {
	case name == "":
		p.ErrorAt(at.line, at.col, "%s is empty: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit", what)
	case !nameRE.MatchString(name):
		p.ErrorAt(at.line, at.col, "%s %q is not a valid generator name: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (it becomes part of image names and GitHub status contexts)", what, name)
	case len(name) > MaxNameLen:
		p.ErrorAt(at.line, at.col, "%s %q is %d characters long: keep it to %d (it becomes part of image names)", what, name, len(name), MaxNameLen)
	}
}

func (p *parser) script(v *yaml.Node) string {
	str, ok := p.String(v, "script")
	if ok && strings.TrimSpace(str) == "" {
		p.Errorf(v, "script is empty: write the commands that customize the image")
	}
	return str
}

// scriptFile checks a script_file path and reads the script: it returns the
// cleaned path and the script, or "" for both when refused.
func (p *parser) scriptFile(v *yaml.Node) (file, script string) {
	name, ok := p.String(v, "script_file")
	if !ok {
		return "", ""
	}
	if msg := checkScriptPath(name); msg != "" {
		p.Errorf(v, "%s", msg)
		return "", ""
	}
	file = path.Clean(name)
	if p.repo == nil {
		p.Errorf(v, "script_file %s cannot be read: no repository was given to read it from (use script: here)", quotePath(file))
		return file, ""
	}
	data, err := readLimited(p.repo, file)
	if err != nil {
		p.Errorf(v, "script_file %s %v", quotePath(file), err)
		return file, ""
	}
	if !p.checkScript(file, data) {
		return file, ""
	}
	if strings.TrimSpace(string(data)) == "" {
		p.Errorf(v, "script_file %s is empty: write the commands that customize the image", quotePath(file))
	}
	return file, string(data)
}

// Bounds of a script_file path: Linux's NAME_MAX for a path element, and a
// path short enough for an error message and a URL.
const (
	maxScriptPath    = 1024
	maxPathElement   = 255
	maxShownPath     = 128 // longer paths are shown by their start
	shownPathPrefix  = 64
	relativePathHint = "give a path relative to the repository root (e.g. scripts/setup.sh)"
)

// checkScriptPath says what is wrong with a script_file path, or "". It is
// checked before anything is read: the path must name a file inside the
// repository in plain characters (a control or invisible character could
// hide a different path in logs, statuses and check runs).
func checkScriptPath(name string) string {
	if strings.TrimSpace(name) == "" {
		return "script_file is empty: " + relativePathHint
	}
	q := quotePath(name)
	if len(name) > maxScriptPath {
		return fmt.Sprintf("script_file %s is %d bytes long: keep the path to %d bytes at most", q, len(name), maxScriptPath)
	}
	for i, r := range name {
		switch {
		case unicode.Is(unicode.Cc, r):
			return fmt.Sprintf("script_file %s contains the control character %U at byte %d: %s", q, r, i, relativePathHint)
		case r == utf8.RuneError:
			return fmt.Sprintf("script_file %s contains %U, the replacement character (of text that was not UTF-8), at byte %d: write the path in plain characters", q, r, i)
		case unicode.Is(unicode.Cf, r):
			return fmt.Sprintf("script_file %s contains the invisible character %U at byte %d: write the path in plain characters", q, r, i)
		}
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || len(name) > 1 && name[1] == ':' {
		return fmt.Sprintf("script_file %s is an absolute path: %s", q, relativePathHint)
	}
	if strings.Contains(name, `\`) {
		return fmt.Sprintf("script_file %s contains a backslash: separate directories with / (e.g. scripts/setup.sh)", q)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return fmt.Sprintf("script_file %s leads out of the repository: imagegen reads only files inside it; give a path relative to the repository root", q)
	}
	if !fs.ValidPath(clean) || clean == "." {
		return fmt.Sprintf("script_file %s is not a valid path: give a slash-separated path relative to the repository root", q)
	}
	for _, elem := range strings.Split(clean, "/") {
		if len(elem) > maxPathElement {
			return fmt.Sprintf("script_file %s has a path element of %d bytes: keep each to %d bytes at most", q, len(elem), maxPathElement)
		}
	}
	return ""
}

// quotePath quotes a script_file path for a message, its start only when it
// is long.
func quotePath(name string) string {
	if len(name) <= maxShownPath {
		return strconv.Quote(name)
	}
	for n := shownPathPrefix; n > 0; n-- {
		if utf8.RuneStart(name[n]) {
			return strconv.Quote(name[:n]) + "…"
		}
	}
	return `"…"`
}

// checkScript refuses scripts that are not UTF-8 text, pointing into the script file.
func (p *parser) checkScript(name string, data []byte) bool {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line, col := strictyaml.Position(data, i)
		p.Errs = append(p.Errs, Error{File: name, Line: line, Col: col, Msg: "the script contains a NUL byte: a script is text, not a binary"})
		return false
	}
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		line, col := strictyaml.Position(data, off)
		p.Errs = append(p.Errs, Error{File: name, Line: line, Col: col,
			Msg: fmt.Sprintf("the script is not valid UTF-8 (byte 0x%02x): save it as UTF-8", data[off])})
		return false
	}
	return true
}

func (p *parser) branches(v *yaml.Node) []string {
	if v.Kind != yaml.SequenceNode {
		p.Errorf(v, "branches must be a list, not %s: write branches: [main] (or a list with one branch per line)", strictyaml.Describe(v))
		return nil
	}
	if len(v.Content) == 0 {
		p.Errorf(v, "branches is empty: list at least one branch, or remove the key to build the repository's default branch")
		return nil
	}
	var out []string
	for _, b := range v.Content {
		name, ok := p.String(b, "a branch")
		if !ok {
			continue
		}
		if !validBranch(name) {
			p.Errorf(b, "branch %q is not a valid branch name: give the branch's plain name, e.g. main", name)
			continue
		}
		out = append(out, name)
	}
	return out
}

func validBranch(b string) bool {
	if b == "" || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.Contains(b, "..") {
		return false
	}
	for _, r := range b {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`~^:?*[\`, r) {
			return false
		}
	}
	return true
}

func (p *parser) clouds(k, v *yaml.Node) map[string]CloudSpec {
	switch {
	case strictyaml.IsNull(v):
		p.Errorf(k, "no clouds: list under clouds: the clouds to build on, each with image and ssh_user")
		return nil
	case v.Kind != yaml.MappingNode:
		p.Errorf(v, "clouds must be a mapping of cloud name to settings, not %s: write clouds: {NAME: {image: IMAGE, ssh_user: USER}}", strictyaml.Describe(v))
		return nil
	case len(v.Content) == 0:
		p.Errorf(v, "clouds is empty: add at least one cloud of the server config, with image and ssh_user")
		return nil
	}
	out := map[string]CloudSpec{}
	for _, f := range strictyaml.Pairs(v) {
		name := f.Key.Value
		makesImages := true
		if p.opts.Clouds != nil {
			images, ok := p.opts.Clouds[name]
			if !ok {
				p.Errorf(f.Key, "unknown cloud %q: %s", name, knownClouds(p.opts.Clouds))
				continue
			}
			makesImages = images
		}
		if cs, ok := p.cloud(f.Key, f.Value, makesImages && p.opts.Clouds != nil); ok {
			out[name] = cs
		}
	}
	return out
}

// cloud reads one entry of clouds: k is the cloud's name, v its settings.
func (p *parser) cloud(k, v *yaml.Node, needsImage bool) (CloudSpec, bool) {
	where := "clouds." + k.Value
	if strictyaml.IsNull(v) {
		p.Errorf(k, "%s is empty: set image and ssh_user", where)
		return CloudSpec{}, false
	}
	if v.Kind != yaml.MappingNode {
		p.Errorf(v, "%s must be a mapping with image and ssh_user, not %s", where, strictyaml.Describe(v))
		return CloudSpec{}, false
	}
	var cs CloudSpec
	var hasImage, hasUser bool
	for _, f := range p.Fields(v, where, cloudKeys) {
		val := f.Value
		if f.Key.Value == "image" && val.Kind == yaml.MappingNode {
			hasImage = true
			cs.Filter = p.imageFilter(val, where+".image")
			continue
		}
		s, ok := p.String(val, where+"."+f.Key.Value)
		switch f.Key.Value {
		case "image":
			hasImage = true
			if ok && strings.TrimSpace(s) == "" {
				p.Errorf(val, "%s.image is empty: give the base image's id or name on that cloud", where)
			}
			cs.Image = s
		case "ssh_user":
			hasUser = true
			if ok && (s == "" || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })) {
				p.Errorf(val, "%s.ssh_user %q is not a user name: give the user the base image accepts SSH logins for (e.g. ubuntu)", where, s)
			}
			cs.SSHUser = s
		case "size":
			cs.Size = s
		}
	}
	if !hasImage && needsImage {
		p.Errorf(k, "%s: image is missing: set the base image (its id or name on that cloud)", where)
	}
	if !hasUser {
		p.Errorf(k, "%s: ssh_user is missing: set the user the base image accepts SSH logins for (e.g. ubuntu, ec2-user, debian)", where)
	}
	return cs, true
}

func knownClouds(m map[string]bool) string {
	if len(m) == 0 {
		return "the server config defines no clouds"
	}
	return "the server config defines " + strings.Join(slices.Sorted(func(yield func(string) bool) {
		for n := range m {
			if !yield(n) {
				return
			}
		}
	}), ", ")
}

// manifest reads manifest: {files: [...], required: bool}.
func (p *parser) manifest(v *yaml.Node) Manifest {
	var m Manifest
	if !p.mapping(v, "manifest", "files: [/etc/ssh/sshd_config], required: false") {
		return m
	}
	for _, f := range p.Fields(v, "manifest", manifestKeys) {
		switch f.Key.Value {
		case "files":
			m.Files = p.patterns(f.Value, "manifest.files", "a file", manifest.MaxFilePatterns, manifest.CheckFilePattern)
		case "required":
			m.Required = p.bool(f.Value, "manifest.required")
		}
	}
	return m
}

// drift reads drift: {ignore: [...], on_drift: warn | fail}.
func (p *parser) drift(v *yaml.Node) Drift {
	var d Drift
	if !p.mapping(v, "drift", `ignore: ["linux-image-*"], on_drift: warn`) {
		return d
	}
	for _, f := range p.Fields(v, "drift", driftKeys) {
		switch f.Key.Value {
		case "ignore":
			d.Ignore = p.patterns(f.Value, "drift.ignore", "an ignore pattern", MaxIgnorePatterns, manifest.CheckIgnorePattern)
		case "on_drift":
			s, ok := p.String(f.Value, "drift.on_drift")
			switch {
			case !ok:
			case s == OnDriftWarn || s == OnDriftFail:
				d.OnDrift = s
			default:
				p.Errorf(f.Value, "drift.on_drift %q is not warn or fail: warn reports clouds that differ and keeps the check run successful, fail makes it fail", s)
			}
		}
	}
	return d
}

// mapping checks that v is a mapping; example is what one looks like.
func (p *parser) mapping(v *yaml.Node, key, example string) bool {
	switch {
	case strictyaml.IsNull(v):
		p.Errorf(v, "%s has no value: write %s: {%s}, or remove the key", key, key, example)
		return false
	case v.Kind != yaml.MappingNode:
		p.Errorf(v, "%s must be a mapping, not %s: write %s: {%s}", key, strictyaml.Describe(v), key, example)
		return false
	}
	return true
}

// patterns reads a list of strings, each checked by check, at most limit.
func (p *parser) patterns(v *yaml.Node, key, what string, limit int, check func(string) error) []string {
	if v.Kind != yaml.SequenceNode {
		p.Errorf(v, "%s must be a list, not %s", key, strictyaml.Describe(v))
		return nil
	}
	if len(v.Content) > limit {
		p.Errorf(v, "%s has %d entries: at most %d", key, len(v.Content), limit)
		return nil
	}
	out := []string{}
	for _, n := range v.Content {
		s, ok := p.String(n, what+" in "+key)
		if !ok {
			continue
		}
		if err := check(s); err != nil {
			p.Errorf(n, "%s: %v", key, err)
			continue
		}
		out = append(out, s)
	}
	return out
}

// bool reads a YAML boolean (true or false).
func (p *parser) bool(v *yaml.Node, key string) bool {
	var b bool
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		p.Errorf(v, "%s must be true or false, not %s", key, strictyaml.Describe(v))
	}
	return b
}
