package strictyaml

import (
	"gopkg.in/yaml.v3"
)

// guard walks a parsed tree once, refusing what no file of ours needs and an
// attacker would use: runaway nesting, aliases (or, where allowed, aliases
// that expand past the limit or into themselves), tags, duplicate and
// non-scalar keys.
type guard struct {
	*Doc
	aliasNodes int                // nodes the aliases seen so far add to the document
	expanded   map[*yaml.Node]int // a node's size with its aliases expanded; -1 while counting it
}

func (g *guard) walk(n *yaml.Node, depth int, where string) {
	kind := g.opts.Kind
	if depth > g.opts.MaxDepth {
		g.Errorf(n, "nested more than %d levels deep: no %s needs that many", g.opts.MaxDepth, kind)
		return
	}
	if n.Kind == yaml.AliasNode {
		if !g.opts.AllowAliases {
			g.Errorf(n, "aliases (*%s) are not allowed in %ss: write the value out", n.Value, kind)
			return
		}
		g.alias(n)
		return
	}
	if n.Anchor != "" && !g.opts.AllowAliases {
		g.Errorf(n, "anchors (&%s) are not allowed in %ss: write values out where they are used", n.Anchor, kind)
	}
	if n.Style&yaml.TaggedStyle != 0 && n.Tag != "!!str" && !g.opts.AllowTags {
		g.Errorf(n, "YAML tags (%s) are not allowed in %ss: remove the tag", n.Tag, kind)
	}
	if n.Kind == yaml.MappingNode {
		g.keys(n, where)
	}
	for i, c := range n.Content {
		child := where
		if n.Kind == yaml.MappingNode && i%2 == 1 {
			child = join(where, n.Content[i-1].Value)
		}
		g.walk(c, depth+1, child)
		if g.Full() {
			return
		}
	}
}

// keys refuses duplicate keys, and keys that are not plain scalars.
func (g *guard) keys(m *yaml.Node, where string) {
	seen := make(map[string]*yaml.Node, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Kind != yaml.ScalarNode {
			g.Errorf(k, "keys%s must be plain names, not %s", in(where), Describe(k))
			continue
		}
		if first, ok := seen[k.Value]; ok {
			g.Errorf(k, "key %q%s is already set at line %d: keep one", k.Value, in(where), first.Line)
			continue
		}
		seen[k.Value] = k
	}
}

// alias counts what alias a adds to the document once expanded, refusing an
// alias that contains itself and expansion past MaxAliasNodes (a billion
// laughs decodes into gigabytes from a few hundred bytes).
func (g *guard) alias(a *yaml.Node) {
	limit := g.opts.MaxAliasNodes
	n := g.size(a.Alias, limit+1)
	if n < 0 {
		g.Errorf(a, "alias *%s is used inside the value of its own anchor: write the value out", a.Value)
		return
	}
	g.aliasNodes = min(g.aliasNodes+n, limit+1)
	if g.aliasNodes > limit {
		g.Errorf(a, "aliases expand to more than %d values: write the values out instead", limit)
		g.aliasNodes = -1 << 30 // say it once
	}
}

// size returns how many nodes n stands for with its aliases expanded, at most
// limit, or -1 when n contains an alias to itself. Each node is counted once.
func (g *guard) size(n *yaml.Node, limit int) int {
	if n == nil {
		return 0
	}
	if s, ok := g.expanded[n]; ok {
		return s
	}
	g.expanded[n] = -1
	s := 1
	for _, c := range n.Content {
		cs := g.size(c, limit)
		if cs < 0 {
			return -1 // stays -1 for n: it contains the cycle too
		}
		s = min(s+cs, limit)
	}
	if n.Kind == yaml.AliasNode {
		as := g.size(n.Alias, limit)
		if as < 0 {
			return -1
		}
		s = min(s+as, limit)
	}
	g.expanded[n] = s
	return s
}

// in is " in where", or "" at the top of a document.
func in(where string) string {
	if where == "" {
		return ""
	}
	return " in " + where
}

// join appends key to the dotted path where.
func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}
