package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
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
	topKeys   = []string{"name", "script", "script_file", "branches", "clouds"}
	cloudKeys = []string{"image", "ssh_user", "size"}
)

// NamePattern is what a generator name must match: it becomes part of image
// names and of GitHub status contexts (imagegen/<generator>/<cloud>).
const NamePattern = `^[a-z0-9][a-z0-9._-]*$`

// MaxNameLen keeps image names (<generator>-<yyyymmdd-hhmm>-<sha>) within
// every cloud's limit (EC2 allows 128 characters).
const MaxNameLen = 64

// maxDepth bounds how deep the parser looks into a document: a spec is three
// levels deep, so anything far deeper is a mistake or an attack.
const maxDepth = 32

var nameRE = regexp.MustCompile(NamePattern)

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
	p := &parser{file: file, data: data, repo: repo, opts: opts}
	s := p.parse()
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
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
				Msg: fmt.Sprintf("generator name %q is also used by %s: names must be unique in a repository; rename one (set name:)", s.Name, first.nameAt())})
			continue
		}
		seen[s.Name] = s
		specs = append(specs, s)
	}
	if len(errs) > 0 {
		errs.sort()
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

// OpenRepo returns an fs.FS over the local directory dir that refuses paths
// and symlinks leading out of it, so a spec cannot read the host's files.
func OpenRepo(dir string) (fs.FS, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	return root.FS(), nil
}

// readLimited reads name from repo, refusing files over MaxFileSize without
// reading them whole, and symlinks out of the repository.
func readLimited(repo fs.FS, name string) ([]byte, error) {
	if repo == nil {
		return nil, errors.New("no repository to read it from")
	}
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("%q is not a path inside the repository", name)
	}
	f, err := repo.Open(name)
	if err != nil {
		return nil, describeOpenErr(repo, name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, errors.New("is a directory, not a file")
	}
	if fi.Size() > MaxFileSize {
		return nil, tooLarge(fi.Size())
	}
	// Stat may lie (a file still growing): cap the read itself too.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(int64(len(data)))
	}
	return data, nil
}

func tooLarge(n int64) error {
	return fmt.Errorf("is %d bytes, over the limit of %d bytes (1 MiB): have the script download large content instead", n, MaxFileSize)
}

func describeOpenErr(repo fs.FS, name string, err error) error {
	if fi, lerr := fs.Lstat(repo, name); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 && !errors.Is(err, fs.ErrNotExist) {
		return errors.New("is a symlink leading out of the repository: imagegen reads only files inside it")
	}
	if strings.Contains(err.Error(), "escapes") {
		return errors.New("leads out of the repository through a symlink: imagegen reads only files inside it")
	}
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("does not exist in the repository")
	}
	return err
}

type pos struct{ line, col int }

type parser struct {
	file string
	data []byte
	repo fs.FS
	opts Options
	errs Errors

	lineStarts []int // byte offset of each line, computed on the first error
}

// maxErrors is how many errors one file reports: enough to fix a file in one
// go, few enough that a hostile file cannot flood a commit status or a log.
const maxErrors = 50

func (p *parser) errAt(line, col int, format string, args ...any) {
	switch {
	case len(p.errs) > maxErrors:
		return
	case len(p.errs) == maxErrors:
		line, col = p.clamp(line, col)
		p.errs = append(p.errs, Error{File: p.file, Line: line, Col: col, Msg: fmt.Sprintf("more than %d errors: fix these first", maxErrors)})
		return
	}
	line, col = p.clamp(line, col)
	p.errs = append(p.errs, Error{File: p.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// clamp keeps a position inside the input: yaml.v3 places the end of a
// document without a final line break on a line of its own.
func (p *parser) clamp(line, col int) (int, int) {
	if p.lineStarts == nil {
		p.lineStarts = []int{0}
		for i, b := range p.data {
			if b == '\n' {
				p.lineStarts = append(p.lineStarts, i+1)
			}
		}
	}
	if line > len(p.lineStarts) {
		line, col = len(p.lineStarts), 1<<30
	}
	line = max(line, 1)
	start := p.lineStarts[line-1]
	end := len(p.data)
	if line < len(p.lineStarts) {
		end = p.lineStarts[line] - 1
	}
	if col > end-start+1 {
		// Columns count characters: only long ones need counting.
		col = min(col, utf8.RuneCount(p.data[start:end])+1)
	}
	return line, max(1, col)
}

func (p *parser) errNode(n *yaml.Node, format string, args ...any) {
	p.errAt(n.Line, n.Column, format, args...)
}

func (p *parser) parse() *Spec {
	if len(p.data) > MaxFileSize {
		p.errs = append(p.errs, Error{File: p.file, Msg: tooLarge(int64(len(p.data))).Error()})
		return nil
	}
	if !p.checkText(p.file, p.data) {
		return nil
	}
	root := p.decode()
	if root == nil {
		return nil
	}
	p.checkNodes(root, 0)
	if len(p.errs) > 0 {
		// Aliases, anchors, tags or runaway nesting: the tree is not worth reading further.
		return nil
	}
	return p.spec(root)
}

// checkText refuses text YAML would misread or that cannot be shown in a
// status: invalid UTF-8 and control characters.
func (p *parser) checkText(file string, data []byte) bool {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			line, col := position(data, i)
			p.errs = append(p.errs, Error{File: file, Line: line, Col: col,
				Msg: fmt.Sprintf("the file is not valid UTF-8 (byte 0x%02x): save it as UTF-8", data[i])})
			return false
		}
		if r == '\r' && (i+1 == len(data) || data[i+1] != '\n') || r == 0x85 || r == 0x2028 || r == 0x2029 {
			// YAML counts these as line breaks where editors and we do not:
			// positions would disagree.
			line, col := position(data, i)
			p.errs = append(p.errs, Error{File: file, Line: line, Col: col,
				Msg: fmt.Sprintf("line break %U is not allowed: save the file with LF (or CRLF) line ends", r)})
			return false
		}
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			line, col := position(data, i)
			p.errs = append(p.errs, Error{File: file, Line: line, Col: col,
				Msg: fmt.Sprintf("control character %U is not allowed: remove it", r)})
			return false
		}
		i += size
	}
	return true
}

// position returns the 1-based line and column (in characters) of byte offset off.
func position(data []byte, off int) (line, col int) {
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	start := bytes.LastIndexByte(before, '\n') + 1
	col = utf8.RuneCount(before[start:]) + 1
	return line, col
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decode parses the single YAML document of p.data into a node tree. Aliases
// are not expanded here (a Node keeps them as references), so an alias bomb
// costs no more than its text; checkNodes then refuses them.
func (p *parser) decode() (root *yaml.Node) {
	defer func() {
		// yaml.v3 reports errors by panicking internally; should a panic ever
		// escape it, answer with an error rather than crash the server.
		if r := recover(); r != nil {
			p.errAt(1, 1, "invalid YAML: the parser failed (%v)", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(p.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errAt(1, 1, "the spec is empty: it needs at least a script and clouds (see the example in the imagegen README)")
			return nil
		}
		p.yamlErr(err)
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.yamlErr(err)
		return nil
	default:
		p.errAt(extra.Line, extra.Column, "a spec file holds one YAML document: remove this \"---\" and what follows, or move it to its own file")
		return nil
	}
	if len(doc.Content) == 0 {
		p.errAt(1, 1, "the spec is empty: it needs at least a script and clouds")
		return nil
	}
	return doc.Content[0]
}

// parserProblems are the yaml.v3 errors raised by its parser rather than its
// scanner: yaml.v3 reports their (0-based) line without adding one.
var parserProblems = []string{
	"did not find expected ','", "did not find expected <", "did not find expected '-' indicator",
	"did not find expected key", "did not find expected node content",
	"found duplicate %", "found incompatible YAML document", "found undefined tag handle",
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// yamlErr turns a yaml.v3 syntax error ("yaml: line 3: ...") into an Error.
// yaml.v3 gives no column: point at the line's first character.
func (p *parser) yamlErr(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	for _, pp := range parserProblems {
		if strings.HasPrefix(msg, pp) {
			line++
			break
		}
	}
	if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(p.data, []byte("*"+m[1])); i >= 0 {
			l, c := position(p.data, i)
			p.errAt(l, c, "invalid YAML: %s (and anchors and aliases are not allowed in generator specs anyway)", msg)
			return
		}
	}
	lines := bytes.Split(p.data, []byte("\n"))
	line = max(1, min(line, len(lines)))
	text := string(lines[line-1])
	col := utf8.RuneCountInString(text) - utf8.RuneCountInString(strings.TrimLeft(text, " \t")) + 1
	p.errAt(line, col, "invalid YAML: %s (check the indentation, and quote values that contain ': ' or start with a special character)", msg)
}

// checkNodes refuses what a spec never needs and an attacker would use:
// anchors and aliases (billion laughs), tags, and deep nesting.
func (p *parser) checkNodes(n *yaml.Node, depth int) {
	if depth > maxDepth {
		p.errNode(n, "nested more than %d levels deep: a spec is a flat mapping with a clouds mapping inside", maxDepth)
		return
	}
	if n.Kind == yaml.AliasNode {
		p.errNode(n, "aliases (*%s) are not allowed in generator specs: write the value out", n.Value)
		return
	}
	if n.Anchor != "" {
		p.errNode(n, "anchors (&%s) are not allowed in generator specs: write values out where they are used", n.Anchor)
	}
	if n.Style&yaml.TaggedStyle != 0 && n.Tag != "!!str" {
		p.errNode(n, "YAML tags (%s) are not allowed in generator specs: remove the tag", n.Tag)
	}
	for _, c := range n.Content {
		p.checkNodes(c, depth+1)
		if len(p.errs) > maxErrors {
			return
		}
	}
}

func (p *parser) spec(root *yaml.Node) *Spec {
	if root.Kind != yaml.MappingNode {
		p.errNode(root, "a spec is a mapping (name:, script:, clouds:, ...), not %s", describe(root))
		return nil
	}
	base := path.Base(p.file)
	s := &Spec{File: p.file, Name: strings.TrimSuffix(base, path.Ext(base))}
	var scriptKey, scriptFileKey, cloudsKey, nameNode *yaml.Node
	var cloudsVal *yaml.Node
	for _, kv := range p.pairs(root, "") {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "name":
			if str, ok := p.str(v, "name"); ok {
				s.Name = str
				nameNode = v
			}
		case "script":
			scriptKey = k
			if str, ok := p.str(v, "script"); ok {
				if strings.TrimSpace(str) == "" {
					p.errNode(v, "script is empty: write the commands that customize the image")
				}
				s.Script = str
			}
		case "script_file":
			scriptFileKey = k
			if str, ok := p.str(v, "script_file"); ok {
				s.ScriptFile = p.scriptFile(v, str)
				if s.ScriptFile != "" {
					s.Script = p.readScript(v, s.ScriptFile)
				}
			}
		case "branches":
			s.Branches = p.branches(v)
		case "clouds":
			cloudsKey, cloudsVal = k, v
		default:
			p.unknownKey(k, "", topKeys)
		}
	}
	switch {
	case scriptKey != nil && scriptFileKey != nil:
		later := scriptFileKey
		if scriptKey.Line > later.Line || scriptKey.Line == later.Line && scriptKey.Column > later.Column {
			later = scriptKey
		}
		p.errNode(later, "set either script (inline) or script_file (a path in the repository), not both")
	case scriptKey == nil && scriptFileKey == nil:
		p.errNode(root, "no script: set script (the commands, inline) or script_file (a path in the repository)")
	}
	if cloudsKey == nil {
		p.errNode(root, "no clouds: add clouds: {NAME: {image: IMAGE, ssh_user: USER}} naming clouds of the server config")
	} else {
		s.Clouds = p.clouds(cloudsKey, cloudsVal)
	}
	if nameNode != nil {
		s.namePos = pos{nameNode.Line, nameNode.Column}
		p.checkName(nameNode.Line, nameNode.Column, s.Name, "name")
	} else {
		s.namePos = pos{1, 1}
		p.checkName(1, 1, s.Name, "the generator name defaults to the file name, and")
	}
	return s
}

func (p *parser) checkName(line, col int, name, what string) {
	switch {
	case name == "":
		p.errAt(line, col, "%s is empty: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit", what)
	case !nameRE.MatchString(name):
		p.errAt(line, col, "%s %q is not a valid generator name: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (it becomes part of image names and GitHub status contexts)", what, name)
	case len(name) > MaxNameLen:
		p.errAt(line, col, "%s %q is %d characters long: keep it to %d (it becomes part of image names)", what, name, len(name), MaxNameLen)
	}
}

// pairs returns a mapping's key/value pairs, reporting duplicate and non-string keys.
func (p *parser) pairs(m *yaml.Node, where string) [][2]*yaml.Node {
	var out [][2]*yaml.Node
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errNode(k, "keys%s must be plain names, not %s", inWhere(where), describe(k))
			continue
		}
		if first, ok := seen[k.Value]; ok {
			p.errNode(k, "key %q%s is already set at line %d: keep one", k.Value, inWhere(where), first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out
}

func inWhere(where string) string {
	if where == "" {
		return ""
	}
	return " in " + where
}

func (p *parser) unknownKey(k *yaml.Node, where string, known []string) {
	if len(p.errs) > maxErrors {
		return
	}
	sorted := slices.Sorted(slices.Values(known))
	hint := ""
	if near := closest(k.Value, known); near != "" {
		hint = fmt.Sprintf(": did you mean %q?", near)
	}
	p.errNode(k, "unknown key %q%s%s (known: %s)", k.Value, inWhere(where), hint, strings.Join(sorted, ", "))
}

// str reads a scalar that must hold text.
func (p *parser) str(v *yaml.Node, key string) (string, bool) {
	switch {
	case v.Kind != yaml.ScalarNode:
		p.errNode(v, "%s must be a string, not %s", key, describe(v))
		return "", false
	case v.ShortTag() == "!!null" && v.Style == 0:
		p.errNode(v, "%s has no value: give it one or remove the key", key)
		return "", false
	case v.ShortTag() == "!!bool" && v.Style == 0:
		p.errNode(v, "%s is the boolean %s: write text (quote it if you mean the word)", key, v.Value)
		return "", false
	}
	return v.Value, true
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("the value %q", truncate(n.Value, 40))
	default:
		return "an alias"
	}
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "..."
}

// scriptFile checks a script_file path and returns it cleaned, or "" when refused.
func (p *parser) scriptFile(v *yaml.Node, name string) string {
	if strings.TrimSpace(name) == "" {
		p.errNode(v, "script_file is empty: give the script's path relative to the repository root (e.g. scripts/setup.sh)")
		return ""
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || len(name) > 1 && name[1] == ':' {
		p.errNode(v, "script_file %q is an absolute path: give a path relative to the repository root (e.g. scripts/setup.sh)", name)
		return ""
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		p.errNode(v, "script_file %q leads out of the repository: imagegen reads only files inside it; give a path relative to the repository root", name)
		return ""
	}
	if !fs.ValidPath(clean) || clean == "." {
		p.errNode(v, "script_file %q is not a valid path: give a slash-separated path relative to the repository root", name)
		return ""
	}
	return clean
}

func (p *parser) readScript(v *yaml.Node, name string) string {
	if p.repo == nil {
		p.errNode(v, "script_file %q cannot be read: no repository was given to read it from (use script: here)", name)
		return ""
	}
	data, err := readLimited(p.repo, name)
	if err != nil {
		p.errNode(v, "script_file %q %v", name, err)
		return ""
	}
	if !p.checkScript(name, data) {
		return ""
	}
	if strings.TrimSpace(string(data)) == "" {
		p.errNode(v, "script_file %q is empty: write the commands that customize the image", name)
	}
	return string(data)
}

// checkScript refuses scripts that are not UTF-8 text, pointing into the script file.
func (p *parser) checkScript(name string, data []byte) bool {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line, col := position(data, i)
		p.errs = append(p.errs, Error{File: name, Line: line, Col: col, Msg: "the script contains a NUL byte: a script is text, not a binary"})
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
		line, col := position(data, off)
		p.errs = append(p.errs, Error{File: name, Line: line, Col: col,
			Msg: fmt.Sprintf("the script is not valid UTF-8 (byte 0x%02x): save it as UTF-8", data[off])})
		return false
	}
	return true
}

func (p *parser) branches(v *yaml.Node) []string {
	if v.Kind != yaml.SequenceNode {
		p.errNode(v, "branches must be a list, not %s: write branches: [main] (or a list with one branch per line)", describe(v))
		return nil
	}
	if len(v.Content) == 0 {
		p.errNode(v, "branches is empty: list at least one branch, or remove the key to build the repository's default branch")
		return nil
	}
	var out []string
	for _, b := range v.Content {
		name, ok := p.str(b, "a branch")
		if !ok {
			continue
		}
		if !validBranch(name) {
			p.errNode(b, "branch %q is not a valid branch name: give the branch's plain name, e.g. main", name)
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
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		p.errNode(k, "no clouds: list under clouds: the clouds to build on, each with image and ssh_user")
		return nil
	}
	if v.Kind != yaml.MappingNode {
		p.errNode(v, "clouds must be a mapping of cloud name to settings, not %s: write clouds: {NAME: {image: IMAGE, ssh_user: USER}}", describe(v))
		return nil
	}
	if len(v.Content) == 0 {
		p.errNode(v, "clouds is empty: add at least one cloud of the server config, with image and ssh_user")
		return nil
	}
	out := map[string]CloudSpec{}
	for _, kv := range p.pairs(v, "clouds") {
		ck, cv := kv[0], kv[1]
		name := ck.Value
		makesImages := true
		if p.opts.Clouds != nil {
			images, ok := p.opts.Clouds[name]
			if !ok {
				p.errNode(ck, "unknown cloud %q: %s", name, knownClouds(p.opts.Clouds))
				continue
			}
			makesImages = images
		}
		where := "clouds." + name
		if cv.Kind == yaml.ScalarNode && cv.ShortTag() == "!!null" {
			p.errNode(ck, "%s is empty: set image and ssh_user", where)
			continue
		}
		if cv.Kind != yaml.MappingNode {
			p.errNode(cv, "%s must be a mapping with image and ssh_user, not %s", where, describe(cv))
			continue
		}
		var cs CloudSpec
		var hasImage, hasUser bool
		for _, kv := range p.pairs(cv, where) {
			key, val := kv[0], kv[1]
			switch key.Value {
			case "image":
				hasImage = true
				if s, ok := p.str(val, where+".image"); ok {
					if strings.TrimSpace(s) == "" {
						p.errNode(val, "%s.image is empty: give the base image's id or name on that cloud", where)
					}
					cs.Image = s
				}
			case "ssh_user":
				hasUser = true
				if s, ok := p.str(val, where+".ssh_user"); ok {
					if s == "" || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
						p.errNode(val, "%s.ssh_user %q is not a user name: give the user the base image accepts SSH logins for (e.g. ubuntu)", where, s)
					}
					cs.SSHUser = s
				}
			case "size":
				if s, ok := p.str(val, where+".size"); ok {
					cs.Size = s
				}
			default:
				p.unknownKey(key, where, cloudKeys)
			}
		}
		if !hasImage && makesImages && p.opts.Clouds != nil {
			p.errNode(ck, "%s: image is missing: set the base image (its id or name on that cloud)", where)
		}
		if !hasUser {
			p.errNode(ck, "%s: ssh_user is missing: set the user the base image accepts SSH logins for (e.g. ubuntu, ec2-user, debian)", where)
		}
		out[name] = cs
	}
	return out
}

func knownClouds(m map[string]bool) string {
	if len(m) == 0 {
		return "the server config defines no clouds"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return "the server config defines " + strings.Join(names, ", ")
}

// closest returns the known key nearest to k by edit distance, when near enough to be a typo.
func closest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // no typo is that long; keep the cost bounded
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b Error) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
}
