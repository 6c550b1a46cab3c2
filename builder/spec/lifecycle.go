package spec

import (
	"encoding/json"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/internal/strictyaml"
)

// Lifecycle is what becomes of a generator's images once made: the test
// each must pass before it counts, how many are kept, the channel they move,
// and whether a new base image rebuilds the generator. None of it changes
// what an image holds, so none of it is part of Digest.
type Lifecycle struct {
	// Test is the test script's text (read from TestFile when that is set):
	// run with bash -e on a fresh VM booted from the new image. "" means no
	// test: the image counts as soon as it is saved.
	Test     string `json:",omitempty"`
	TestFile string `json:",omitempty"`
	// TestTimeout bounds the test script; 0 means DefaultTestTimeout.
	TestTimeout time.Duration `json:",omitempty"`
	// KeepFailed keeps an image whose test failed, tagged
	// imagegen:tested=failed, instead of deleting it.
	KeepFailed bool `json:",omitempty"`
	// Keep is how many images are kept per generator × cloud × branch,
	// newest first; older ones are deleted once a new one is published.
	// 0 keeps every image.
	Keep int `json:",omitempty"`
	// Channel names the channel the images move (GET /api/v1/latest?channel=).
	Channel string `json:",omitempty"`
	// Rebuild says when imagegen rebuilds the generator by itself.
	Rebuild Rebuild `json:",omitzero"`
}

// Rebuild is the spec's rebuild: key.
type Rebuild struct {
	// OnBaseChange rebuilds the generator at its branch's head when a base
	// image filter finds a newer image than the last build used.
	OnBaseChange bool `json:",omitempty"`
}

// ImageFilter finds a base image by its attributes rather than its id:
// EC2's DescribeImages filters, Glance's image list, a file glob for qemu,
// the simulated cloud's list. Each cloud's driver reads what applies to it.
type ImageFilter struct {
	// Name is a glob on the image's name (* and ?; for qemu, a file name in
	// the cloud's dir).
	Name string `json:"name,omitempty"`
	// Owner is the account (EC2) or project (OpenStack) that owns the image.
	Owner string `json:"owner,omitempty"`
	// Tags are tags (EC2) or properties (OpenStack) the image must carry.
	Tags map[string]string `json:"tags,omitempty"`
	// Visibility is public, private, shared or community.
	Visibility string `json:"visibility,omitempty"`
	// MostRecent takes the newest of several matches; without it, more
	// than one match is an error (which one was meant is not known).
	MostRecent bool `json:"most_recent,omitempty"`
}

// String shows the filter as the spec writes it.
func (f *ImageFilter) String() string {
	var parts []string
	if f.Name != "" {
		parts = append(parts, "name: "+strconv.Quote(f.Name))
	}
	if f.Owner != "" {
		parts = append(parts, "owner: "+strconv.Quote(f.Owner))
	}
	if len(f.Tags) > 0 {
		var tags []string
		for _, k := range slices.Sorted(maps.Keys(f.Tags)) {
			tags = append(tags, k+": "+strconv.Quote(f.Tags[k]))
		}
		parts = append(parts, "tags: {"+strings.Join(tags, ", ")+"}")
	}
	if f.Visibility != "" {
		parts = append(parts, "visibility: "+f.Visibility)
	}
	if f.MostRecent {
		parts = append(parts, "most_recent: true")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// Describe is the cloud's base image as the spec gives it: the id, or the filter.
func (c CloudSpec) Describe() string {
	if c.Filter != nil {
		return "filter " + c.Filter.String()
	}
	return c.Image
}

// imageKey is what the digest holds of the base image: the id as written,
// or the filter's canonical form (its JSON, map keys sorted).
func (c CloudSpec) imageKey() string {
	if c.Filter == nil {
		return c.Image
	}
	b, _ := json.Marshal(c.Filter) // a struct of strings, a bool and a map of strings
	return "filter:" + string(b)
}

// HasFilter reports whether any cloud's base image is a filter.
func (s *Spec) HasFilter() bool {
	for _, c := range s.Clouds {
		if c.Filter != nil {
			return true
		}
	}
	return false
}

// Lifecycle limits and defaults.
const (
	DefaultTestTimeout = 15 * time.Minute
	MaxTestTimeout     = 24 * time.Hour
	MaxKeep            = 1000
)

// Visibilities are the values of visibility in an image filter.
var Visibilities = []string{"public", "private", "shared", "community"}

var (
	imageFilterKeys = []string{"name", "owner", "tags", "visibility", "most_recent"}
	rebuildKeys     = []string{"on_base_change"}
	channelRE       = regexp.MustCompile(NamePattern)
)

// lifecycle reads one of the lifecycle keys at the top of a spec.
func (p *parser) lifecycle(l *Lifecycle, k, v *yaml.Node) {
	switch k.Value {
	case "test":
		str, ok := p.String(v, "test")
		if ok && strings.TrimSpace(str) == "" {
			p.Errorf(v, "test is empty: write the commands that check the new image (they run on a VM booted from it), or remove the key")
		}
		l.Test = str
	case "test_file":
		l.TestFile, l.Test = p.testFile(v)
	case "test_timeout":
		s, ok := p.String(v, "test_timeout")
		if !ok {
			return
		}
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			p.Errorf(v, "test_timeout %q is not a duration: write e.g. 15m, 90s or 1h", s)
		case d <= 0:
			p.Errorf(v, "test_timeout %s must be positive (default %s)", s, DefaultTestTimeout)
		case d > MaxTestTimeout:
			p.Errorf(v, "test_timeout %s is over the limit of %s", s, MaxTestTimeout)
		default:
			l.TestTimeout = d
		}
	case "keep_failed":
		l.KeepFailed = p.bool(v, "keep_failed")
	case "keep":
		n, err := strconv.Atoi(v.Value)
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || err != nil {
			p.Errorf(v, "keep must be a whole number of images (e.g. keep: 5), not %s", strictyaml.Describe(v))
			return
		}
		if n < 1 || n > MaxKeep {
			p.Errorf(v, "keep: %d: keep at least 1 image and at most %d (remove the key to keep every image)", n, MaxKeep)
			return
		}
		l.Keep = n
	case "channel":
		s, ok := p.String(v, "channel")
		if ok && (!channelRE.MatchString(s) || len(s) > MaxNameLen) {
			p.Errorf(v, "channel %q is not a valid channel name: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. stable)", s)
			return
		}
		l.Channel = s
	case "rebuild":
		if !p.mapping(v, "rebuild", "on_base_change: true") {
			return
		}
		for _, f := range p.Fields(v, "rebuild", rebuildKeys) {
			if f.Key.Value == "on_base_change" {
				l.Rebuild.OnBaseChange = p.bool(f.Value, "rebuild.on_base_change")
			}
		}
	}
}

// checkLifecycle checks the lifecycle keys against each other and the clouds.
func (p *parser) checkLifecycle(root *yaml.Node, s *Spec) {
	keyOf := func(name string) *yaml.Node {
		for _, f := range strictyaml.Pairs(root) {
			if f.Key.Value == name {
				return f.Key
			}
		}
		return nil
	}
	test, testFile := keyOf("test"), keyOf("test_file")
	switch {
	case test != nil && testFile != nil:
		later := testFile
		if test.Line > later.Line || test.Line == later.Line && test.Column > later.Column {
			later = test
		}
		p.Errorf(later, "set either test (inline) or test_file (a path in the repository), not both")
	case test == nil && testFile == nil:
		for _, k := range []string{"test_timeout", "keep_failed"} {
			if n := keyOf(k); n != nil {
				p.Errorf(n, "%s has no test to apply to: add test: (the commands that check the new image) or test_file:", k)
			}
		}
	}
	if n := keyOf("rebuild"); n != nil && s.Rebuild.OnBaseChange && len(s.Clouds) > 0 && !s.HasFilter() {
		p.Errorf(n, "rebuild.on_base_change needs a base image found by a filter (image: {name: \"debian-12-*\", most_recent: true}): with image ids the base never changes")
	}
}

// testFile reads test_file like script_file: a path inside the repository.
func (p *parser) testFile(v *yaml.Node) (file, script string) {
	name, ok := p.String(v, "test_file")
	if !ok {
		return "", ""
	}
	if msg := checkScriptPath(name); msg != "" {
		p.Errorf(v, "%s", strings.Replace(msg, "script_file", "test_file", 1))
		return "", ""
	}
	file = path.Clean(name)
	if p.repo == nil {
		p.Errorf(v, "test_file %s cannot be read: no repository was given to read it from (use test: here)", quotePath(file))
		return file, ""
	}
	data, err := readLimited(p.repo, file)
	if err != nil {
		p.Errorf(v, "test_file %s %v", quotePath(file), err)
		return file, ""
	}
	if !p.checkScript(file, data) {
		return file, ""
	}
	if strings.TrimSpace(string(data)) == "" {
		p.Errorf(v, "test_file %s is empty: write the commands that check the new image", quotePath(file))
	}
	return file, string(data)
}

// imageFilter reads image: {name: ..., owner: ..., tags: {...}, visibility: ..., most_recent: ...}.
func (p *parser) imageFilter(v *yaml.Node, where string) *ImageFilter {
	f := &ImageFilter{}
	for _, fl := range p.Fields(v, where, imageFilterKeys) {
		key, val := fl.Key.Value, fl.Value
		switch key {
		case "name":
			s, ok := p.String(val, where+".name")
			if !ok {
				continue
			}
			if strings.TrimSpace(s) == "" {
				p.Errorf(val, "%s.name is empty: give the image name, or a glob such as debian-12-genericcloud-amd64-*", where)
				continue
			}
			if _, err := path.Match(s, ""); err != nil {
				p.Errorf(val, "%s.name %q is not a valid glob: %v", where, s, err)
				continue
			}
			f.Name = s
		case "owner":
			if s, ok := p.String(val, where+".owner"); ok {
				f.Owner = s
			}
		case "tags":
			if val.Kind != yaml.MappingNode || len(val.Content) == 0 {
				p.Errorf(val, "%s.tags must be a mapping of tag to value, e.g. tags: {os: debian}", where)
				continue
			}
			f.Tags = map[string]string{}
			for _, t := range strictyaml.Pairs(val) {
				if s, ok := p.String(t.Value, where+".tags."+t.Key.Value); ok {
					f.Tags[t.Key.Value] = s
				}
			}
		case "visibility":
			s, ok := p.String(val, where+".visibility")
			if ok && !slices.Contains(Visibilities, s) {
				p.Errorf(val, "%s.visibility %q is not one of %s", where, s, strings.Join(Visibilities, ", "))
				continue
			}
			f.Visibility = s
		case "most_recent":
			f.MostRecent = p.bool(val, where+".most_recent")
		}
	}
	if f.Name == "" && len(f.Tags) == 0 && len(v.Content) > 0 {
		p.Errorf(v, "%s: a filter needs name or tags to find the image by", where)
	}
	if len(v.Content) == 0 {
		p.Errorf(v, "%s is an empty filter: give the image's id, or a filter such as {name: \"debian-12-*\", most_recent: true}", where)
	}
	return f
}

// TestTimeoutOrDefault is how long the test may run.
func (l Lifecycle) TestTimeoutOrDefault() time.Duration {
	if l.TestTimeout > 0 {
		return l.TestTimeout
	}
	return DefaultTestTimeout
}

// ChannelMovesOn reports whether an image built on branch moves the spec's
// channel: a branch the spec lists (any, when it lists none: the default
// branch is then the only one it builds).
func (s *Spec) ChannelMovesOn(branch string) bool {
	if s.Channel == "" {
		return false
	}
	return len(s.Branches) == 0 || slices.Contains(s.Branches, branch)
}
