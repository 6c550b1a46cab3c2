package manifest

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// System fields compared besides packages. An ignore pattern naming one of
// them ("@kernel") leaves that field out, as a package glob leaves packages
// out; no package name starts with '@'.
const (
	FieldOS     = "os"     // ID and VERSION_ID
	FieldKernel = "kernel" // uname -r
	FieldArch   = "arch"   // uname -m
)

// DriftOptions says what a comparison leaves out.
type DriftOptions struct {
	// Ignore holds globs (path.Match: * ? [...]) on package names, such as
	// "linux-image-*" or "cloud-init", and "@os", "@kernel", "@arch" for the
	// system fields. See CheckIgnorePattern.
	Ignore []string
}

// CheckIgnorePattern says whether p can be an Ignore entry. Spec validation
// should call it.
func CheckIgnorePattern(p string) error {
	if p == "" || len(p) > 256 {
		return fmt.Errorf("drift ignore pattern %q: empty or longer than 256 bytes", p)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("drift ignore pattern %q: %w", p, err)
	}
	return nil
}

// ignorer matches package names against the ignore globs. Most globs are
// a name or a prefix followed by '*': those are compared directly, the rest
// go through path.Match (a third of a 50 000-package diff's time otherwise).
type ignorer struct {
	exact    map[string]bool
	prefixes []string
	globs    []string
	fields   map[string]bool
}

func newIgnorer(o DriftOptions) (*ignorer, error) {
	ig := &ignorer{exact: map[string]bool{}, fields: map[string]bool{}}
	for _, p := range o.Ignore {
		if err := CheckIgnorePattern(p); err != nil {
			return nil, err
		}
		switch meta := strings.IndexAny(p, `*?[\`); {
		case p == "@"+FieldOS, p == "@"+FieldKernel, p == "@"+FieldArch:
			ig.fields[p[1:]] = true
		case meta < 0:
			ig.exact[p] = true
		case meta == len(p)-1 && p[meta] == '*':
			ig.prefixes = append(ig.prefixes, p[:meta])
		default:
			ig.globs = append(ig.globs, p)
		}
	}
	return ig, nil
}

func (ig *ignorer) pkg(name string) bool {
	if ig.exact[name] {
		return true
	}
	for _, p := range ig.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, g := range ig.globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// pkgKey is what a comparison matches packages on. Arch is empty for the
// manifest's native architecture and for architecture-independent packages
// (all, noarch), so that the same image built for amd64 on one cloud and
// arm64 on another compares package by package (the arch difference shows
// as a system difference), and a package that became arch: all in a new
// version is upgraded, not removed and added; a foreign architecture (i386
// on amd64, multilib i686) keeps its name.
type pkgKey struct {
	Manager Manager
	Name    string
	Arch    string
}

func compareKeys(a, b pkgKey) int {
	return cmp.Or(cmp.Compare(a.Manager, b.Manager), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Arch, b.Arch))
}

// group is one key's versions in one manifest (several for rpm's
// side-by-side kernels), sorted as strings.
type group struct {
	key      pkgKey
	versions []string
}

// groups returns m's packages by key, sorted by key, without the ignored
// ones, and how many names were ignored.
func groups(m *Manifest, ig *ignorer) ([]group, int) {
	native := nativeArchs(m)
	type kv struct {
		key     pkgKey
		version string
	}
	kvs := make([]kv, 0, len(m.Packages))
	ignored := 0
	var lastIgnored string
	for _, p := range m.Packages {
		if ig.pkg(p.Name) {
			if p.Name != lastIgnored {
				ignored++
				lastIgnored = p.Name
			}
			continue
		}
		arch := p.Arch
		if archIndependent(arch) || arch == native.of(p.Manager) {
			arch = ""
		}
		kvs = append(kvs, kv{pkgKey{p.Manager, p.Name, arch}, p.Version})
	}
	// Packages come sorted by name and arch; turning the native arch into ""
	// can move it before a foreign one: sort again only then.
	byKey := func(a, b kv) int { return compareKeys(a.key, b.key) }
	if !slices.IsSortedFunc(kvs, byKey) {
		slices.SortStableFunc(kvs, byKey)
	}
	versions := make([]string, len(kvs)) // one backing array for every group's versions
	out := make([]group, 0, len(kvs))
	for i := 0; i < len(kvs); {
		j := i + 1
		for j < len(kvs) && kvs[j].key == kvs[i].key {
			j++
		}
		vs := versions[i:j:j]
		for k := i; k < j; k++ {
			vs[k-i] = kvs[k].version
		}
		if len(vs) > 1 {
			slices.Sort(vs)
			vs = slices.Compact(vs)
		}
		out = append(out, group{key: kvs[i].key, versions: vs})
		i = j
	}
	return out, ignored
}

func archIndependent(arch string) bool {
	switch arch {
	case "", "all", "noarch", "any":
		return true
	}
	return false
}

// archCount counts one manager's packages of one architecture.
type archCount struct {
	mgr   Manager
	arch  string
	count int
}

// natives is each manager's native architecture in one manifest.
type natives []archCount

func (n natives) of(m Manager) string {
	for _, c := range n {
		if c.mgr == m {
			return c.arch
		}
	}
	return ""
}

// nativeArchs is each manager's most common architecture in m, leaving out
// the architecture-independent ones; ties go to the first in name order.
func nativeArchs(m *Manifest) natives {
	var counts []archCount // a handful: a slice beats a map
	for _, p := range m.Packages {
		if archIndependent(p.Arch) {
			continue
		}
		i := slices.IndexFunc(counts, func(c archCount) bool { return c.mgr == p.Manager && c.arch == p.Arch })
		if i < 0 {
			counts = append(counts, archCount{p.Manager, p.Arch, 0})
			i = len(counts) - 1
		}
		counts[i].count++
	}
	var best natives
	for _, c := range counts {
		i := slices.IndexFunc(best, func(b archCount) bool { return b.mgr == c.mgr })
		switch {
		case i < 0:
			best = append(best, c)
		case c.count > best[i].count || c.count == best[i].count && c.arch < best[i].arch:
			best[i] = c
		}
	}
	return best
}

// versionString is how a key's versions read: "1.2-3", or "a, b" for several.
func versionString(mgr Manager, vs []string) string {
	if len(vs) == 1 {
		return vs[0]
	}
	s := slices.Clone(vs)
	slices.SortStableFunc(s, func(a, b string) int { c, _ := CompareVersions(mgr, a, b); return c })
	return strings.Join(s, ", ")
}

// newest is the highest of a key's versions in one manifest.
func newest(mgr Manager, vs []string) (string, bool) {
	best, ok := vs[0], true
	for _, v := range vs[1:] {
		c, known := CompareVersions(mgr, v, best)
		ok = ok && known
		if c > 0 {
			best = v
		}
	}
	return best, ok
}

func systemValue(m *Manifest, field string) string {
	switch field {
	case FieldOS:
		return m.OS.String()
	case FieldKernel:
		return m.Kernel
	case FieldArch:
		return m.Arch
	}
	return ""
}

// CloudManifest is one cloud's manifest in a build. A nil Manifest is a
// cloud whose collection failed: it is listed, not compared.
type CloudManifest struct {
	Cloud    string
	Manifest *Manifest
}

// CloudDrift is how the clouds of one build differ. It holds no markup:
// every string is as the machines reported it, for the renderers (and Go
// templates) to escape.
type CloudDrift struct {
	Clouds    []string `json:"clouds"`    // compared, sorted by name
	Identical bool     `json:"identical"` // no difference in packages or system fields
	Packages  int      `json:"packages"`  // distinct packages compared, ignored ones left out
	Ignored   int      `json:"ignored,omitempty"`

	System      []SystemDiff  `json:"system,omitempty"`
	Differences []PackageDiff `json:"differences,omitempty"` // sorted by manager, name, arch

	Partial    []string `json:"partial,omitempty"`     // clouds whose manifest is partial: differences may be missing ones
	NoManifest []string `json:"no_manifest,omitempty"` // clouds without a manifest
}

// SystemDiff is a system field that differs: Values has one entry per cloud.
type SystemDiff struct {
	Field  string            `json:"field"` // FieldOS, FieldKernel, FieldArch
	Values map[string]string `json:"values"`
}

// PackageDiff is a package that is not the same on every cloud.
type PackageDiff struct {
	Manager Manager `json:"manager"`
	Name    string  `json:"name"`
	Arch    string  `json:"arch,omitempty"` // only a foreign architecture (i386 on amd64): see pkgKey
	// Versions maps the clouds that have the package to its version there
	// ("a, b" when several are installed side by side).
	Versions map[string]string `json:"versions"`
	Missing  []string          `json:"missing,omitempty"` // clouds without it
	// Newest are the clouds with the highest version, when at least two
	// versions differ and the manager's order knows them.
	Newest []string `json:"newest,omitempty"`
}

// AcrossClouds compares the manifests of one build's clouds. Cloud names
// must be unique. Errors are only for bad input (a bad ignore pattern, a
// repeated cloud).
func AcrossClouds(ms []CloudManifest, opts DriftOptions) (*CloudDrift, error) {
	ig, err := newIgnorer(opts)
	if err != nil {
		return nil, err
	}
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b CloudManifest) int { return cmp.Compare(a.Cloud, b.Cloud) })
	d := &CloudDrift{Clouds: []string{}}
	var clouds []string
	var lists [][]group
	var mans []*Manifest
	for i, cm := range ms {
		if i > 0 && ms[i-1].Cloud == cm.Cloud {
			return nil, fmt.Errorf("drift: cloud %q given twice", cm.Cloud)
		}
		if cm.Manifest == nil {
			d.NoManifest = append(d.NoManifest, cm.Cloud)
			continue
		}
		if cm.Manifest.Partial {
			d.Partial = append(d.Partial, cm.Cloud)
		}
		gs, ignored := groups(cm.Manifest, ig)
		d.Ignored = max(d.Ignored, ignored)
		clouds = append(clouds, cm.Cloud)
		lists = append(lists, gs)
		mans = append(mans, cm.Manifest)
	}
	d.Clouds = clouds
	if d.Clouds == nil {
		d.Clouds = []string{}
	}

	for _, f := range []string{FieldOS, FieldKernel, FieldArch} {
		if ig.fields[f] || len(mans) < 2 {
			continue
		}
		vals := map[string]string{}
		same := true
		for i, m := range mans {
			vals[clouds[i]] = systemValue(m, f)
			same = same && vals[clouds[i]] == vals[clouds[0]]
		}
		if !same {
			d.System = append(d.System, SystemDiff{Field: f, Values: vals})
		}
	}

	// A k-way merge of the sorted key lists.
	pos := make([]int, len(lists))
	var here []int
	for {
		var key pkgKey
		found := false
		for i, gs := range lists {
			if pos[i] < len(gs) && (!found || compareKeys(gs[pos[i]].key, key) < 0) {
				key, found = gs[pos[i]].key, true
			}
		}
		if !found {
			break
		}
		d.Packages++
		here = here[:0] // indexes of the clouds that have key
		for i, gs := range lists {
			if pos[i] < len(gs) && gs[pos[i]].key == key {
				here = append(here, i)
			}
		}
		if len(here) == len(lists) && sameVersions(lists, pos, here) {
			for _, i := range here {
				pos[i]++
			}
			continue
		}
		diff := PackageDiff{Manager: key.Manager, Name: key.Name, Arch: key.Arch, Versions: map[string]string{}}
		for i := range lists {
			if !slices.Contains(here, i) {
				diff.Missing = append(diff.Missing, clouds[i])
			}
		}
		diff.Newest = newestClouds(key.Manager, lists, pos, here, clouds)
		for _, i := range here {
			diff.Versions[clouds[i]] = versionString(key.Manager, lists[i][pos[i]].versions)
			pos[i]++
		}
		d.Differences = append(d.Differences, diff)
	}
	d.Identical = len(d.Differences) == 0 && len(d.System) == 0
	return d, nil
}

func sameVersions(lists [][]group, pos, here []int) bool {
	first := lists[here[0]][pos[here[0]]].versions
	for _, i := range here[1:] {
		if !slices.Equal(lists[i][pos[i]].versions, first) {
			return false
		}
	}
	return true
}

// newestClouds: the clouds holding the highest version of a key, when at
// least two clouds' versions differ and every comparison is known. It makes
// one comparison a cloud: dpkg's order is the costly part of a diff.
func newestClouds(mgr Manager, lists [][]group, pos, here []int, clouds []string) []string {
	if len(here) < 2 {
		return nil
	}
	tops := make([]string, len(here))
	distinct := false
	for j, i := range here {
		v, ok := newest(mgr, lists[i][pos[i]].versions)
		if !ok {
			return nil
		}
		tops[j] = v
		distinct = distinct || v != tops[0]
	}
	if !distinct {
		return nil
	}
	best, out := tops[0], []string{clouds[here[0]]}
	for j, v := range tops[1:] {
		c, ok := CompareVersions(mgr, v, best)
		switch {
		case !ok:
			return nil
		case c > 0:
			best, out = v, append(out[:0], clouds[here[j+1]])
		case c == 0:
			out = append(out, clouds[here[j+1]])
		}
	}
	return out
}

// ChangeKind is how a package changed between two images.
type ChangeKind string

// The kinds, in the order Changes lists them.
const (
	Added      ChangeKind = "added"
	Removed    ChangeKind = "removed"
	Upgraded   ChangeKind = "upgraded"
	Downgraded ChangeKind = "downgraded"
	Changed    ChangeKind = "changed" // the versions differ, their order is not known
)

// kindOrder is the order Changes lists the kinds in.
var kindOrder = map[ChangeKind]int{Added: 0, Removed: 1, Upgraded: 2, Downgraded: 3, Changed: 4}

// Changes is how an image differs from the previous one on the same cloud.
// Like CloudDrift, it holds no markup.
type Changes struct {
	Identical bool `json:"identical"`
	Packages  int  `json:"packages"` // packages in the new image, ignored ones left out
	Ignored   int  `json:"ignored,omitempty"`

	System  []SystemChange  `json:"system,omitempty"`
	Changes []PackageChange `json:"changes,omitempty"` // by kind (added, removed, upgraded, downgraded, changed), then name

	Added      int `json:"added"`
	Removed    int `json:"removed"`
	Upgraded   int `json:"upgraded"`
	Downgraded int `json:"downgraded"`
	Changed    int `json:"changed"`

	FromPartial bool `json:"from_partial,omitempty"` // the previous manifest is partial
	ToPartial   bool `json:"to_partial,omitempty"`   // the new one is
}

// SystemChange is a system field that changed.
type SystemChange struct {
	Field string `json:"field"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// PackageChange is one package that changed. From is empty when it was
// added, To when it was removed.
type PackageChange struct {
	Kind    ChangeKind `json:"kind"`
	Manager Manager    `json:"manager"`
	Name    string     `json:"name"`
	Arch    string     `json:"arch,omitempty"` // only a foreign architecture
	From    string     `json:"from,omitempty"`
	To      string     `json:"to,omitempty"`
}

// OverTime compares an image's manifest (to) with the previous image's
// (from). When several versions of a package are installed side by side on
// either side, the versions that went are "removed" and the ones that came
// "added".
func OverTime(from, to *Manifest, opts DriftOptions) (*Changes, error) {
	if from == nil || to == nil {
		return nil, errors.New("drift: a manifest is missing")
	}
	ig, err := newIgnorer(opts)
	if err != nil {
		return nil, err
	}
	c := &Changes{FromPartial: from.Partial, ToPartial: to.Partial}
	for _, f := range []string{FieldOS, FieldKernel, FieldArch} {
		if ig.fields[f] {
			continue
		}
		if a, b := systemValue(from, f), systemValue(to, f); a != b {
			c.System = append(c.System, SystemChange{Field: f, From: a, To: b})
		}
	}
	old, _ := groups(from, ig)
	cur, ignored := groups(to, ig)
	c.Packages, c.Ignored = len(cur), ignored
	var byKind [5][]PackageChange // in kindOrder; each in key order as the merge finds them
	add := func(k ChangeKind, key pkgKey, from, to string) {
		i := kindOrder[k]
		byKind[i] = append(byKind[i], PackageChange{Kind: k, Manager: key.Manager, Name: key.Name, Arch: key.Arch, From: from, To: to})
	}
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		var r int
		switch {
		case i == len(old):
			r = 1
		case j == len(cur):
			r = -1
		default:
			r = compareKeys(old[i].key, cur[j].key)
		}
		switch {
		case r < 0:
			for _, v := range old[i].versions {
				add(Removed, old[i].key, v, "")
			}
			i++
		case r > 0:
			for _, v := range cur[j].versions {
				add(Added, cur[j].key, "", v)
			}
			j++
		default:
			a, b := old[i].versions, cur[j].versions
			key := old[i].key
			i, j = i+1, j+1
			if slices.Equal(a, b) {
				continue
			}
			if len(a) == 1 && len(b) == 1 {
				switch cmpv, ok := CompareVersions(key.Manager, a[0], b[0]); {
				case !ok || cmpv == 0:
					add(Changed, key, a[0], b[0])
				case cmpv < 0:
					add(Upgraded, key, a[0], b[0])
				default:
					add(Downgraded, key, a[0], b[0])
				}
				continue
			}
			for _, v := range a {
				if !slices.Contains(b, v) {
					add(Removed, key, v, "")
				}
			}
			for _, v := range b {
				if !slices.Contains(a, v) {
					add(Added, key, "", v)
				}
			}
		}
	}
	c.Added, c.Removed, c.Upgraded, c.Downgraded, c.Changed = len(byKind[0]), len(byKind[1]), len(byKind[2]), len(byKind[3]), len(byKind[4])
	if n := c.Added + c.Removed + c.Upgraded + c.Downgraded + c.Changed; n > 0 {
		c.Changes = make([]PackageChange, 0, n)
		for _, k := range byKind {
			c.Changes = append(c.Changes, k...)
		}
	}
	c.Identical = len(c.Changes) == 0 && len(c.System) == 0
	return c, nil
}
