// Package strictyaml reads YAML that people write and attackers may send:
// one document, bounded in size, depth and alias expansion, no duplicate keys,
// unknown keys refused, and every error at file:line:col.
//
// It is the one YAML front end of generator specs (builder/spec), the server
// config (config) and the clouds' settings (clouds). It knows nothing of them:
// callers name their file kind and known keys.
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Limits applied when Options leaves them zero.
const (
	DefaultMaxBytes      = 1 << 20 // a file larger than this is refused unread
	DefaultMaxDepth      = 32      // nesting of mappings and lists
	DefaultMaxAliasNodes = 10_000  // values aliases may add to a document, when allowed
	DefaultMaxErrors     = 50      // errors reported per file
)

// Error is one problem in a file, at a position.
type Error struct {
	File string
	Line int // 1-based; 0 when the problem has no position (file too large)
	Col  int // 1-based, in characters
	Msg  string
}

func (e Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in one or more files, one per line.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders es by file, line and column, keeping the order of errors at
// the same position.
func (es Errors) Sort() {
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

// Options say what a kind of file may hold.
type Options struct {
	// Kind names the file in messages: "generator spec", "config".
	Kind string
	// AllowAliases admits anchors and aliases (an operator's file may share
	// settings that way); their expansion is still bounded by MaxAliasNodes.
	// Without it, every anchor and alias is an error.
	AllowAliases bool
	// AllowTags admits explicit YAML tags (!!int, !custom). Without it, only
	// !!str is accepted.
	AllowTags bool

	MaxBytes      int // default DefaultMaxBytes
	MaxDepth      int // default DefaultMaxDepth
	MaxAliasNodes int // default DefaultMaxAliasNodes
	MaxErrors     int // default DefaultMaxErrors
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxBytes, DefaultMaxBytes)
	def(&o.MaxDepth, DefaultMaxDepth)
	def(&o.MaxAliasNodes, DefaultMaxAliasNodes)
	def(&o.MaxErrors, DefaultMaxErrors)
	if o.Kind == "" {
		o.Kind = "file"
	}
	return o
}

// Doc is one parsed file: its root node and the errors found in it so far.
// Callers reading the tree report their own errors through it, so that every
// error is positioned the same way and the count stays bounded.
type Doc struct {
	File string
	// Root is the document's top node; nil when the file holds no document
	// (empty or only comments) or when Parse found errors.
	Root *yaml.Node
	Errs Errors

	data       []byte
	opts       Options
	lineStarts []int // byte offset of each line, computed on the first error
}

// Parse reads the single YAML document of data. Parse errors are in
// doc.Errs, and then doc.Root is nil: a tree with aliases where none are
// allowed, duplicate keys or runaway nesting is not worth reading further.
// An empty file gives a nil Root and no errors; the caller says what it needed.
//
// Aliases are never expanded here (a yaml.Node keeps them as references), so
// an alias bomb costs no more than its text.
func Parse(file string, data []byte, opts Options) *Doc {
	d := &Doc{File: file, data: data, opts: opts.withDefaults()}
	if len(data) > d.opts.MaxBytes {
		d.Errs = append(d.Errs, Error{File: file, Msg: TooLarge(int64(len(data)), d.opts.MaxBytes)})
		return d
	}
	if !d.checkText() {
		return d
	}
	root := d.decode()
	if root == nil {
		return d
	}
	g := guard{Doc: d, expanded: map[*yaml.Node]int{}}
	g.walk(root, 0, "")
	if len(d.Errs) == 0 {
		d.Root = root
	}
	d.Errs.Sort()
	return d
}

// TooLarge says that a file of n bytes is over the limit of maxBytes.
func TooLarge(n int64, maxBytes int) string {
	limit := fmt.Sprintf("%d bytes", maxBytes)
	if maxBytes%(1<<20) == 0 {
		limit += fmt.Sprintf(" (%d MiB)", maxBytes>>20)
	}
	return fmt.Sprintf("is %d bytes, over the limit of %s", n, limit)
}

// Full reports whether the error limit is reached: callers may stop looking.
func (d *Doc) Full() bool { return len(d.Errs) > d.opts.MaxErrors }

// Errorf reports a problem at node n.
func (d *Doc) Errorf(n *yaml.Node, format string, args ...any) {
	d.ErrorAt(n.Line, n.Column, format, args...)
}

// ErrorAt reports a problem at line:col (kept inside the input). Past the
// error limit, one last error says so and the rest are dropped: enough to fix
// a file in one go, few enough that a hostile file cannot flood a commit
// status or a log.
func (d *Doc) ErrorAt(line, col int, format string, args ...any) {
	if d.Full() {
		return
	}
	line, col = d.clamp(line, col)
	if len(d.Errs) == d.opts.MaxErrors {
		d.Errs = append(d.Errs, Error{File: d.File, Line: line, Col: col, Msg: fmt.Sprintf("more than %d errors: fix these first", d.opts.MaxErrors)})
		return
	}
	d.Errs = append(d.Errs, Error{File: d.File, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// clamp keeps a position inside the input: yaml.v3 places the end of a
// document without a final line break on a line of its own.
func (d *Doc) clamp(line, col int) (int, int) {
	if d.lineStarts == nil {
		d.lineStarts = []int{0}
		for i, b := range d.data {
			if b == '\n' {
				d.lineStarts = append(d.lineStarts, i+1)
			}
		}
	}
	if line > len(d.lineStarts) {
		line, col = len(d.lineStarts), 1<<30
	}
	line = max(line, 1)
	start := d.lineStarts[line-1]
	end := len(d.data)
	if line < len(d.lineStarts) {
		end = d.lineStarts[line] - 1
	}
	if col > end-start+1 {
		// Columns count characters: only long ones need counting.
		col = min(col, utf8.RuneCount(d.data[start:end])+1)
	}
	return line, max(1, col)
}

// Position returns the 1-based line and column (in characters) of byte offset off.
func Position(data []byte, off int) (line, col int) {
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	start := bytes.LastIndexByte(before, '\n') + 1
	col = utf8.RuneCount(before[start:]) + 1
	return line, col
}

// checkText refuses text YAML would misread or that cannot be shown in a
// status: invalid UTF-8, line breaks editors do not count, control characters.
func (d *Doc) checkText() bool {
	data := d.data
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		var msg string
		switch {
		case r == utf8.RuneError && size <= 1:
			msg = fmt.Sprintf("the file is not valid UTF-8 (byte 0x%02x): save it as UTF-8", data[i])
		case r == '\r' && (i+1 == len(data) || data[i+1] != '\n') || r == 0x85 || r == 0x2028 || r == 0x2029:
			// YAML counts these as line breaks where editors and we do not:
			// positions would disagree.
			msg = fmt.Sprintf("line break %U is not allowed: save the file with LF (or CRLF) line ends", r)
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f:
			msg = fmt.Sprintf("control character %U is not allowed: remove it", r)
		}
		if msg != "" {
			line, col := Position(data, i)
			d.Errs = append(d.Errs, Error{File: d.File, Line: line, Col: col, Msg: msg})
			return false
		}
		i += size
	}
	return true
}

// decode parses the single YAML document of d.data into a node tree.
func (d *Doc) decode() (root *yaml.Node) {
	defer func() {
		// yaml.v3 reports errors by panicking internally; should a panic ever
		// escape it, answer with an error rather than crash the server.
		if r := recover(); r != nil {
			d.ErrorAt(1, 1, "invalid YAML: the parser failed (%v)", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(d.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.yamlErr(err)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.yamlErr(err)
		return nil
	default:
		d.ErrorAt(extra.Line, extra.Column, "a %s file holds one YAML document: remove this \"---\" and what follows, or move it to its own file", d.opts.Kind)
		return nil
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

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
func (d *Doc) yamlErr(err error) {
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
		if i := bytes.Index(d.data, []byte("*"+m[1])); i >= 0 {
			l, c := Position(d.data, i)
			if d.opts.AllowAliases {
				d.ErrorAt(l, c, "invalid YAML: %s: define the anchor (&%s) before its first use", msg, m[1])
			} else {
				d.ErrorAt(l, c, "invalid YAML: %s (and anchors and aliases are not allowed in %ss anyway)", msg, d.opts.Kind)
			}
			return
		}
	}
	lines := bytes.Split(d.data, []byte("\n"))
	line = max(1, min(line, len(lines)))
	text := string(lines[line-1])
	col := utf8.RuneCountInString(text) - utf8.RuneCountInString(strings.TrimLeft(text, " \t")) + 1
	d.ErrorAt(line, col, "invalid YAML: %s (check the indentation, and quote values that contain ': ' or start with a special character)", msg)
}
