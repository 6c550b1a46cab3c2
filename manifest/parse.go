package manifest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on what one line may carry. Longer fields are not packages.
const (
	maxLine       = 64 << 10
	maxNameLen    = 256
	maxVersionLen = 256
	maxArchLen    = 64
	maxValueLen   = 512 // os-release values, uname fields
	maxPathLen    = 4096
)

// parseState is what the parser saw of the script's own markers.
type parseState struct {
	begun  bool // the script's first marker arrived
	done   bool // and its last
	failed bool // a tool exited non-zero
}

// section is one section of the output: what was dropped, how it ended.
type section struct {
	name    string
	drops   dropCounter
	stopped bool
	code    int
}

// dropCounter counts a section's dropped lines by reason and keeps the first.
type dropCounter struct {
	n       int
	reasons map[string]int
	order   []string
	first   string
	line    int
}

func (d *dropCounter) add(reason string, lineNo int, line []byte) {
	if d.reasons == nil {
		d.reasons = map[string]int{}
	}
	if d.reasons[reason] == 0 {
		d.order = append(d.order, reason)
	}
	d.reasons[reason]++
	if d.n == 0 {
		d.first, d.line = quoteSnippet(string(line)), lineNo
	}
	d.n++
}

// note says what was dropped: "dpkg-query: dropped 2 lines (...)".
func (d *dropCounter) note(what, unit, units string) string {
	parts := make([]string, 0, len(d.order))
	for _, r := range d.order {
		parts = append(parts, fmt.Sprintf("%d %s", d.reasons[r], r))
	}
	return fmt.Sprintf("%s: dropped %d %s (%s); the first, %s %d: %s",
		what, d.n, plural(d.n, unit, units), strings.Join(parts, ", "), unit, d.line, d.first)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// parser turns the script's output into a manifest.
type parser struct {
	m        *Manifest
	opts     Options
	st       parseState
	sections map[string]*section
	order    []string // section names in the order they started
	cur      *section
	overCap  int // package lines past MaxPackages
	archs    map[string]string
	uname    int // uname lines seen
	rcOnly   int // dpkg packages left as configuration files only
	files    fileResults
	odd      []string // anomalies in the markers themselves
}

type fileResults struct {
	noMatch   []int // pattern indexes
	notFile   int
	unread    int
	limit     bool
	firstPath string
}

var knownSections = map[string]bool{
	"os-release": true, "uname": true, "dpkg": true, "rpm": true,
	"apk-list": true, "apk-info": true, "files": true,
}

// parse reads the output of the script written with marker. It never
// fails: what it cannot read it counts, drops and notes.
func parse(out []byte, marker string, opts Options) (*Manifest, parseState) {
	p := &parser{
		m:        &Manifest{Packages: []Package{}},
		opts:     opts.withDefaults(),
		sections: map[string]*section{},
		archs:    map[string]string{},
	}
	prefix := []byte(marker + " ")
	lineNo := 0
	for len(out) > 0 {
		var line []byte
		if i := bytes.IndexByte(out, '\n'); i >= 0 {
			line, out = out[:i], out[i+1:]
		} else {
			line, out = out, nil
		}
		lineNo++
		if bytes.HasPrefix(line, prefix) {
			p.marker(string(line[len(prefix):]))
			continue
		}
		if p.cur == nil || p.st.done {
			continue // before the script began (a shell's greeting) or after it ended
		}
		p.line(p.cur, lineNo, line)
	}
	p.finish()
	return p.m, p.st
}

func (p *parser) anomaly(s string) {
	if len(p.odd) < 5 {
		p.odd = append(p.odd, s)
	}
}

func (p *parser) marker(cmd string) {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		p.anomaly("an empty marker line")
		return
	}
	if !p.st.begun && f[0] != "begin" {
		p.anomaly("a marker before the script began")
		return
	}
	switch {
	case f[0] == "begin" && len(f) == 2:
		if p.st.begun {
			p.anomaly("the script began twice")
			return
		}
		p.st.begun = true
		if f[1] != "1" {
			p.anomaly("an unknown script format " + quoteSnippet(f[1]))
		}
	case f[0] == "start" && len(f) == 2 && knownSections[f[1]]:
		if p.cur != nil {
			p.anomaly(fmt.Sprintf("section %s did not end before %s began", p.cur.name, f[1]))
			p.cur = nil
		}
		if p.sections[f[1]] != nil {
			p.anomaly(fmt.Sprintf("section %s came twice; the second was ignored", f[1]))
			return
		}
		s := &section{name: f[1]}
		p.sections[f[1]] = s
		p.order = append(p.order, f[1])
		p.cur = s
	case f[0] == "stop" && len(f) == 3:
		if p.cur == nil || p.cur.name != f[1] {
			p.anomaly("a section ended that had not begun: " + quoteSnippet(f[1]))
			return
		}
		code, err := strconv.Atoi(f[2])
		if err != nil {
			code = -1
		}
		p.cur.stopped, p.cur.code = true, code
		p.cur = nil
	case f[0] == "absent" && len(f) == 2:
		// A tool that is not installed: its section is simply missing.
	case f[0] == "done" && len(f) == 1:
		if p.cur != nil {
			p.anomaly(fmt.Sprintf("section %s did not end", p.cur.name))
			p.cur = nil
		}
		p.st.done = true
	default:
		p.anomaly("an unknown marker " + quoteSnippet(cmd))
	}
}

func (p *parser) line(s *section, lineNo int, line []byte) {
	if len(line) == 0 {
		return // the blank line before each marker, or a tool's
	}
	if len(line) > maxLine {
		s.drops.add("longer than 64 KiB", lineNo, line[:200])
		return
	}
	if !utf8.Valid(line) {
		s.drops.add("not valid UTF-8", lineNo, line)
		return
	}
	switch s.name {
	case "dpkg", "rpm", "apk-list", "apk-info":
		if p.full() {
			p.overCap++
			return
		}
	}
	switch s.name {
	case "os-release":
		p.osRelease(s, lineNo, line)
	case "uname":
		p.unameLine(s, lineNo, line)
	case "dpkg":
		p.dpkgLine(s, lineNo, line)
	case "rpm":
		p.rpmLine(s, lineNo, line)
	case "apk-list", "apk-info":
		p.apkLine(s, lineNo, line)
	case "files":
		p.fileLine(s, lineNo, line)
	}
}

// full says whether MaxPackages are kept: package lines are then only counted.
func (p *parser) full() bool { return len(p.m.Packages) >= p.opts.MaxPackages }

// intern returns one string for each architecture: there are few of them.
func (p *parser) intern(b []byte) string {
	if s, ok := p.archs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(p.archs) < 64 {
		p.archs[s] = s
	}
	return s
}

// splitFields splits line at sep into dst and returns how many fields there
// are, len(dst)+1 meaning more than dst holds. It allocates nothing.
func splitFields(line []byte, sep byte, dst [][]byte) int {
	for n := range dst {
		i := bytes.IndexByte(line, sep)
		if i < 0 {
			dst[n] = line
			return n + 1
		}
		dst[n], line = line[:i], line[i+1:]
	}
	return len(dst) + 1
}

// dpkgLine: "ii \tname\tversion\tarch".
func (p *parser) dpkgLine(s *section, lineNo int, line []byte) {
	var f [4][]byte
	if splitFields(line, '\t', f[:]) != 4 {
		s.drops.add("not four tab-separated fields", lineNo, line)
		return
	}
	status, name, version, arch := f[0], f[1], f[2], f[3]
	if len(status) != 3 || bytes.IndexByte([]byte("uihrp"), status[0]) < 0 || bytes.IndexByte([]byte("ncHUFWti"), status[1]) < 0 || (status[2] != ' ' && status[2] != 'R') {
		s.drops.add("an unknown package status", lineNo, line)
		return
	}
	switch status[1] {
	case 'n':
		return // not installed: dpkg remembers a selection, nothing more
	case 'c':
		p.rcOnly++ // removed, its configuration files left: not installed
		return
	}
	if why := checkPackage(name, version, arch); why != "" {
		s.drops.add(why, lineNo, line)
		return
	}
	p.m.Packages = append(p.m.Packages, Package{Manager: Deb, Name: string(name), Version: string(version), Arch: p.intern(arch)})
}

// rpmLine: "name\tepoch\tversion\trelease\tarch", epoch empty when none.
func (p *parser) rpmLine(s *section, lineNo int, line []byte) {
	var f [5][]byte
	if splitFields(line, '\t', f[:]) != 5 {
		s.drops.add("not five tab-separated fields", lineNo, line)
		return
	}
	name, epoch, ver, rel, arch := f[0], f[1], f[2], f[3], f[4]
	if string(epoch) == "(none)" {
		epoch = nil
	}
	if string(arch) == "(none)" {
		arch = nil // gpg-pubkey
	}
	if len(epoch) > 0 && !allDigits(epoch) || len(epoch) > 10 {
		s.drops.add("an epoch that is not a number", lineNo, line)
		return
	}
	epoch = bytes.TrimLeft(epoch, "0") // rpm reads no epoch as 0: one spelling
	if len(ver) == 0 || len(rel) == 0 || bytes.IndexByte(ver, '-') >= 0 || bytes.IndexByte(rel, '-') >= 0 {
		s.drops.add("a version or release rpm does not allow", lineNo, line)
		return
	}
	version := make([]byte, 0, len(epoch)+len(ver)+len(rel)+2)
	if len(epoch) > 0 {
		version = append(append(version, epoch...), ':')
	}
	version = append(append(append(version, ver...), '-'), rel...)
	if why := checkPackage(name, version, arch); why != "" {
		s.drops.add(why, lineNo, line)
		return
	}
	p.m.Packages = append(p.m.Packages, Package{Manager: RPM, Name: string(name), Version: string(version), Arch: p.intern(arch)})
}

// apkLine: apk list -I, "name-version arch {origin} (license) [installed]",
// or apk info -v, "name-version".
func (p *parser) apkLine(s *section, lineNo int, line []byte) {
	if bytes.HasPrefix(line, []byte("WARNING: ")) || bytes.HasPrefix(line, []byte("ERROR: ")) {
		s.drops.add("an apk message", lineNo, line)
		return
	}
	nameVer, rest, spaced := bytes.Cut(line, []byte(" "))
	var arch []byte
	switch {
	case s.name == "apk-info" && !spaced:
	case s.name == "apk-list" && spaced && bytes.HasSuffix(rest, []byte(" [installed]")):
		arch, _, _ = bytes.Cut(rest, []byte(" "))
	default:
		s.drops.add("not an installed package in apk's format", lineNo, line)
		return
	}
	name, version, ok := splitAPKName(nameVer)
	if !ok {
		s.drops.add("no name-version split apk would accept", lineNo, line)
		return
	}
	if why := checkPackage(name, version, arch); why != "" {
		s.drops.add(why, lineNo, line)
		return
	}
	p.m.Packages = append(p.m.Packages, Package{Manager: APK, Name: string(name), Version: string(version), Arch: p.intern(arch)})
}

// splitAPKName splits "name-version" as apk does: the version starts after
// the last '-' that is followed by a digit, with at most one more '-' (the
// -rN revision) after it.
func splitAPKName[S text](s S) (name, version S, ok bool) {
	dashes := 0
	for i := len(s) - 2; i >= 0; i-- {
		if s[i] != '-' {
			continue
		}
		if s[i+1] >= '0' && s[i+1] <= '9' {
			if i == 0 {
				return name, version, false
			}
			return s[:i], s[i+1:], true
		}
		if dashes++; dashes >= 2 {
			return name, version, false
		}
	}
	return name, version, false
}

func (p *parser) osRelease(s *section, lineNo int, line []byte) {
	text := strings.TrimSpace(string(line))
	if text == "" || text[0] == '#' {
		return
	}
	key, raw, ok := strings.Cut(text, "=")
	if !ok {
		s.drops.add("not KEY=value", lineNo, line)
		return
	}
	var dst *string
	switch key {
	case "ID":
		dst = &p.m.OS.ID
	case "VERSION_ID":
		dst = &p.m.OS.VersionID
	case "PRETTY_NAME":
		dst = &p.m.OS.PrettyName
	default:
		return
	}
	v, ok := unquoteOSRelease(raw)
	if !ok || !plainText(v) || len(v) > maxValueLen {
		s.drops.add("a value that is not printable text", lineNo, line)
		return
	}
	*dst = v
}

// unquoteOSRelease reads a value as os-release(5) writes it: bare, in
// single quotes, or in double quotes with \" \\ \$ \` escapes.
func unquoteOSRelease(raw string) (string, bool) {
	if raw == "" {
		return "", true
	}
	switch raw[0] {
	case '\'':
		if len(raw) < 2 || raw[len(raw)-1] != '\'' || strings.Contains(raw[1:len(raw)-1], "'") {
			return "", false
		}
		return raw[1 : len(raw)-1], true
	case '"':
		if len(raw) < 2 || raw[len(raw)-1] != '"' {
			return "", false
		}
		in := raw[1 : len(raw)-1]
		var b strings.Builder
		for i := 0; i < len(in); i++ {
			c := in[i]
			if c == '\\' && i+1 < len(in) && strings.IndexByte("\"\\$`", in[i+1]) >= 0 {
				i++
				c = in[i]
			} else if c == '"' {
				return "", false
			}
			b.WriteByte(c)
		}
		return b.String(), true
	}
	if strings.ContainsAny(raw, " \t'\"\\$`") {
		return "", false
	}
	return raw, true
}

func (p *parser) unameLine(s *section, lineNo int, line []byte) {
	v := string(line)
	if !plainText(v) || strings.ContainsAny(v, " \t") || len(v) > maxValueLen {
		s.drops.add("not one printable word", lineNo, line)
		return
	}
	switch p.uname {
	case 0:
		p.m.Kernel = v
	case 1:
		p.m.Arch = v
	default:
		s.drops.add("more than two lines", lineNo, line)
		return
	}
	p.uname++
}

func (p *parser) fileLine(s *section, lineNo int, line []byte) {
	f := strings.SplitN(string(line), " ", 5)
	idx := func(x string) (int, bool) {
		i, err := strconv.Atoi(x)
		return i, err == nil && i >= 0 && i < len(p.opts.Files)
	}
	switch {
	case f[0] == "L" && len(f) == 1:
		p.files.limit = true
	case f[0] == "N" && len(f) == 2:
		i, ok := idx(f[1])
		if !ok {
			s.drops.add("an unknown pattern", lineNo, line)
			return
		}
		p.files.noMatch = append(p.files.noMatch, i)
	case f[0] == "E" && len(f) == 5:
		if _, ok := idx(f[1]); !ok {
			s.drops.add("an unknown pattern", lineNo, line)
			return
		}
		path, ok := filePath(f[3], f[4])
		if !ok {
			s.drops.add("a path that is not an absolute file name", lineNo, line)
			return
		}
		if p.files.firstPath == "" {
			p.files.firstPath = path
		}
		switch f[2] {
		case "notfile":
			p.files.notFile++
		case "unreadable":
			p.files.unread++
		default:
			s.drops.add("an unknown file error", lineNo, line)
		}
	case f[0] == "F" && len(f) == 5:
		if _, ok := idx(f[1]); !ok {
			s.drops.add("an unknown pattern", lineNo, line)
			return
		}
		sum := f[2]
		if len(sum) != 64 || !isHex(sum) {
			s.drops.add("a sha256 that is not 64 hex digits", lineNo, line)
			return
		}
		path, ok := filePath(f[3], f[4])
		if !ok {
			s.drops.add("a path that is not an absolute file name", lineNo, line)
			return
		}
		if len(p.m.Files) >= p.opts.MaxFiles {
			p.files.limit = true
			return
		}
		p.m.Files = append(p.m.Files, File{Path: path, SHA256: strings.ToLower(sum)})
	default:
		s.drops.add("not a file line", lineNo, line)
	}
}

// filePath decodes a files-section path: "p PATH" plain, "x HEX".
func filePath(kind, v string) (string, bool) {
	var path string
	switch kind {
	case "p":
		path = v
	case "x":
		if len(v)%2 != 0 || len(v) > 2*maxPathLen {
			return "", false
		}
		b := make([]byte, len(v)/2)
		for i := range b {
			n, err := strconv.ParseUint(v[2*i:2*i+2], 16, 8)
			if err != nil {
				return "", false
			}
			b[i] = byte(n)
		}
		path = string(b)
	default:
		return "", false
	}
	if path == "" || path[0] != '/' || len(path) > maxPathLen || strings.IndexByte(path, 0) >= 0 {
		return "", false
	}
	if !utf8.ValidString(path) {
		// Keep the file, say what its name was: a manifest's strings are UTF-8.
		path = strings.ToValidUTF8(path, "\uFFFD")
	}
	return path, true
}

// finish turns what the sections said into notes and the Partial flag.
func (p *parser) finish() {
	m := p.m
	partial := func(s string) { m.Partial = true; m.note(s) }
	for _, a := range p.odd {
		partial("the collection output was not what the script prints: " + a)
	}
	tools := map[string]string{
		"os-release": "reading /etc/os-release", "uname": "uname",
		"dpkg": "dpkg-query", "rpm": "rpm -qa", "apk-list": "apk list -I", "apk-info": "apk info -v", "files": "hashing files",
	}
	for _, name := range p.order {
		s := p.sections[name]
		if !s.stopped {
			if p.st.done {
				partial(fmt.Sprintf("%s did not finish", tools[name]))
			} else {
				partial(fmt.Sprintf("%s did not finish: its output is cut", tools[name]))
			}
		} else if s.code != 0 {
			if name == "apk-list" && p.sections["apk-info"] != nil {
				// apk without `list`: apk info -v took over.
			} else {
				p.st.failed = true
				partial(fmt.Sprintf("%s exited with code %d: what it printed is kept, but may be incomplete", tools[name], s.code))
			}
		}
		if s.drops.n > 0 {
			partial(s.drops.note(tools[name], "line", "lines"))
		}
	}
	if p.overCap > 0 {
		partial(fmt.Sprintf("more than %d packages: %d more were not kept", p.opts.MaxPackages, p.overCap))
	}
	if p.rcOnly > 0 {
		m.note(fmt.Sprintf("dpkg: %d removed %s with configuration files left (rc) are not installed and not listed", p.rcOnly, plural(p.rcOnly, "package", "packages")))
	}
	if p.st.done {
		managers := 0
		for _, s := range []string{"dpkg", "rpm", "apk-list", "apk-info"} {
			if p.sections[s] != nil {
				managers++
			}
		}
		if managers == 0 {
			m.note("no package manager found (dpkg-query, rpm, apk): the package list is empty")
		}
		if p.sections["os-release"] != nil && m.OS.ID == "" {
			m.note("/etc/os-release has no ID")
		}
	}
	p.fileNotes()
	if dup := m.Sort(); dup > 0 {
		m.note(fmt.Sprintf("%d duplicate %s removed", dup, plural(dup, "entry was", "entries were")))
	}
}

func (p *parser) fileNotes() {
	m, r := p.m, p.files
	for _, i := range r.noMatch {
		m.note(fmt.Sprintf("no file matches %s", p.opts.Files[i]))
	}
	if r.notFile > 0 {
		m.note(fmt.Sprintf("%d matched %s not hashed (the first: %s)",
			r.notFile, plural(r.notFile, "path is not a regular file and was", "paths are not regular files and were"), quoteSnippet(r.firstPath)))
	}
	if r.unread > 0 {
		m.Partial = true
		m.note(fmt.Sprintf("%d %s could not be read (the first: %s)", r.unread, plural(r.unread, "file", "files"), quoteSnippet(r.firstPath)))
	}
	if r.limit {
		m.Partial = true
		m.note(fmt.Sprintf("more than %d files matched: the rest were not hashed", p.opts.MaxFiles))
	}
}

// text is what the validators read: machine output as bytes, or strings.
type text interface{ ~string | ~[]byte }

// checkPackage says why name, version and arch are not a package, or "".
// The character sets are the union of what dpkg, rpm and apk allow (apk's
// virtual packages start with a dot): anything else, a '|', '<', a
// backtick, a space, did not come from a package manager.
func checkPackage[S text](name, version, arch S) string {
	switch {
	case len(name) == 0 || len(name) > maxNameLen || !validName(name):
		return "a name outside the characters package managers allow"
	case len(version) == 0 || len(version) > maxVersionLen || !validVersion(version):
		return "a version outside the characters package managers allow"
	case len(arch) > maxArchLen || !validArch(arch):
		return "an architecture outside the characters package managers allow"
	}
	return ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func validName[S text](s S) bool {
	if !isAlnum(s[0]) && s[0] != '_' && s[0] != '.' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && strings.IndexByte("._+~^-", c) < 0 {
			return false
		}
	}
	return true
}

func validVersion[S text](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && strings.IndexByte("._+~^:-", c) < 0 {
			return false
		}
	}
	return true
}

func validArch[S text](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func allDigits[S text](s S) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

func isHex[S text](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// plainText: valid UTF-8 without control characters.
func plainText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// quoteSnippet quotes machine output for a note: ASCII-only, with escapes,
// at most about 80 characters.
func quoteSnippet(s string) string {
	const max = 80
	cut := false
	if len(s) > max {
		n := max
		for n > max-3 && !utf8.RuneStart(s[n]) {
			n-- // do not split a rune in two
		}
		s, cut = s[:n], true
	}
	q := strconv.QuoteToASCII(s)
	if cut {
		q += "..."
	}
	return q
}
