package secret

import (
	"bytes"
	"slices"
	"strings"
)

// matcher is an Aho–Corasick automaton over the secrets' bytes: it reads a
// text once, a byte at a time, and knows after each byte the longest secret
// ending there and how much of the text read may still begin one. Building
// it takes time and memory linear in the secrets' total length; running it,
// time linear in the text, whatever the secrets (overlapping, repetitive,
// prefixes of each other). It is never modified once built.
//
// States are numbered breadth first, so the children of a state are
// consecutive and every state comes after its fail state. The first nDense
// states, the shallow ones that ordinary text keeps visiting, have a full
// transition table; deeper ones keep their trie children and fall back
// along fail links (each fallback shortens the match in progress, which
// each byte lengthens by at most one: linear overall).
type matcher struct {
	// dense[s][c] is the state after byte c in state s < len(dense), with
	// isMatch set when a secret ends there (saving a look-up per byte).
	dense  [][256]int32
	nDense int32
	first  []int32 // the children of s are first[s] .. first[s+1]-1
	label  []byte  // the byte leading into each state
	fail   []int32 // the longest proper suffix of a state that is a state
	depth  []int32 // how many bytes of a secret each state has read
	match  []int32 // the length of the longest secret ending in each state; 0: none
	maxLen int

	// At the root, text is skipped to where a secret may begin: to its
	// next pair of bytes that begins one, and when every secret begins
	// with the same byte, with IndexByte first.
	pairs    *[1 << 16]bool // [a|b<<8]: some secret begins with a, b
	oneFirst bool
	firstB   byte
}

// isMatch marks, in dense, a state in which a secret ends.
const isMatch = -1 << 31

// denseRows bounds the states with a full transition table (1 KiB each).
const denseRows = 64

// newMatcher builds the automaton for secrets, which must not be empty
// strings; duplicates are harmless. Four passes, each linear: the trie,
// its edges grouped by parent in byte order, the breadth-first numbering,
// then fail links, matches and dense rows.
func newMatcher(secrets []string) *matcher {
	t := buildTrie(secrets)
	start, grouped := t.groupEdges()
	m, parent := t.renumber(start, grouped)
	m.link(parent)
	for _, s := range secrets {
		m.pairs[uint16(s[0])|uint16(s[1])<<8] = true // secrets have MinLen bytes at least
	}
	if m.first[1]-m.first[0] == 1 {
		m.oneFirst, m.firstB = true, m.label[1]
	}
	return m
}

// trie is the secrets' trie, its states numbered as they were made.
type trie struct {
	edges  []trieEdge
	term   []int32 // a secret's length at its last state
	maxLen int
}

type trieEdge struct {
	parent int32
	c      byte
	child  int32
}

func buildTrie(secrets []string) *trie {
	total := 0
	for _, s := range secrets {
		total += len(s)
	}
	// A state's first child is found in a slice, the others (rare, but at
	// the root) in a map: a map of every edge makes long secrets slow.
	firstChild := make([]int32, 1, total+1)
	firstLabel := make([]byte, 1, total+1)
	more := map[uint64]int32{}
	t := &trie{edges: make([]trieEdge, 0, total), term: make([]int32, 1, total+1)}
	for _, s := range secrets {
		cur := int32(0)
		for i := 0; i < len(s); i++ {
			c := s[i]
			var next int32
			switch {
			case firstChild[cur] != 0 && firstLabel[cur] == c:
				next = firstChild[cur]
			case firstChild[cur] != 0:
				next = more[uint64(cur)<<8|uint64(c)]
			}
			if next == 0 {
				next = int32(len(t.term))
				if firstChild[cur] == 0 {
					firstChild[cur], firstLabel[cur] = next, c
				} else {
					more[uint64(cur)<<8|uint64(c)] = next
				}
				t.edges = append(t.edges, trieEdge{cur, c, next})
				t.term = append(t.term, 0)
				firstChild = append(firstChild, 0)
				firstLabel = append(firstLabel, 0)
			}
			cur = next
		}
		t.term[cur] = int32(len(s))
		t.maxLen = max(t.maxLen, len(s))
	}
	return t
}

// groupEdges sorts each state's children by byte: a counting sort by byte,
// then (stably) by parent. The children of state s are
// grouped[start[s]:start[s+1]].
func (t *trie) groupEdges() (start []int, grouped []trieEdge) {
	n := len(t.term)
	var byByte [257]int
	for _, e := range t.edges {
		byByte[int(e.c)+1]++
	}
	for c := 1; c <= 256; c++ {
		byByte[c] += byByte[c-1]
	}
	sorted := make([]trieEdge, len(t.edges))
	for _, e := range t.edges {
		sorted[byByte[e.c]] = e
		byByte[e.c]++
	}
	start = make([]int, n+1)
	for _, e := range sorted {
		start[e.parent+1]++
	}
	for i := 1; i <= n; i++ {
		start[i] += start[i-1]
	}
	grouped = t.edges // reuse: every edge is written once
	at := slices.Clone(start[:n])
	for _, e := range sorted {
		grouped[at[e.parent]] = e
		at[e.parent]++
	}
	return start, grouped
}

// renumber numbers the states breadth first, which makes a state's children
// consecutive; it returns the matcher's arrays so far and each state's parent.
func (t *trie) renumber(start []int, grouped []trieEdge) (*matcher, []int32) {
	n := len(t.term)
	m := &matcher{
		first:  make([]int32, n+1),
		label:  make([]byte, n),
		fail:   make([]int32, n),
		depth:  make([]int32, n),
		match:  make([]int32, n),
		maxLen: t.maxLen,
		nDense: int32(min(n, denseRows)),
	}
	parent := make([]int32, n)
	order := make([]int32, 1, n) // new number → trie number
	for h := 0; h < n; h++ {
		old := order[h]
		m.first[h] = int32(len(order))
		m.match[h] = t.term[old] // for now: the secret ending exactly here
		for _, e := range grouped[start[old]:start[old+1]] {
			v := len(order)
			order = append(order, e.child)
			m.label[v] = e.c
			m.depth[v] = m.depth[h] + 1
			parent[v] = int32(h)
		}
	}
	m.first[n] = int32(n)
	return m, parent
}

// link sets fail links, matches and dense rows, in breadth-first order: each
// state's fail state, and that one's row, are ready before it.
func (m *matcher) link(parent []int32) {
	n := int32(len(m.label))
	m.dense = make([][256]int32, m.nDense)
	m.pairs = new([1 << 16]bool)
	for v := int32(0); v < n; v++ {
		if u := parent[v]; v > 0 && u > 0 {
			m.fail[v] = m.step(m.fail[u], m.label[v])
		}
		if m.match[v] == 0 {
			m.match[v] = m.match[m.fail[v]]
		}
		if v < m.nDense {
			row := &m.dense[v]
			if v > 0 {
				*row = m.dense[m.fail[v]]
			}
			for w := m.first[v]; w < m.first[v+1]; w++ {
				row[m.label[w]] = w
			}
		}
	}
	// Flag the matches in dense now that every state's is known (a row
	// holds deeper states than its own).
	for v := range m.dense {
		for c, w := range m.dense[v] {
			if m.match[w] != 0 {
				m.dense[v][c] = w | isMatch
			}
		}
	}
}

// step is the state after byte c in state s.
func (m *matcher) step(s int32, c byte) int32 {
	for s >= m.nDense {
		lo, hi := m.first[s], m.first[s+1]
		if hi-lo <= 8 {
			for v := lo; v < hi; v++ {
				if m.label[v] == c {
					return v
				}
			}
		} else if v, ok := slices.BinarySearch(m.label[lo:hi], c); ok {
			return lo + int32(v)
		}
		s = m.fail[s]
	}
	return m.dense[s][c] &^ isMatch
}

// advance runs the automaton from state s over p until a byte completes a
// secret or p ends. It returns the state it is in and how many bytes of p
// it read: a secret of length match[state] ends at the last of them, if
// match[state] is not 0.
func advance[T string | []byte](m *matcher, s int32, p T) (int32, int) {
	dense := m.dense
	i := 0
	for {
		if s == 0 {
			i = skip(m, p, i)
		}
		if i >= len(p) {
			return s, i
		}
		c := p[i]
		i++
		if s < int32(len(dense)) {
			s = dense[s][c]
			if s < 0 {
				return s &^ isMatch, i
			}
			continue
		}
		s = m.step(s, c)
		if m.match[s] != 0 {
			return s, i
		}
	}
}

// skip returns where in p, from i on, a secret may begin, judging by pairs
// of bytes. A byte skipped begins no secret, so after it the automaton may
// as well be at the root: what it would be matching cannot end in a secret.
// The last byte is not skipped: the next piece of a stream completes its pair.
func skip[T string | []byte](m *matcher, p T, i int) int {
	if m.oneFirst {
		for {
			j := indexByte(p[i:], m.firstB)
			if j < 0 {
				return len(p)
			}
			i += j
			if i+1 >= len(p) || m.beginsPair(p[i], p[i+1]) {
				return i
			}
			i++
		}
	}
	for i+1 < len(p) && !m.beginsPair(p[i], p[i+1]) {
		i++
	}
	return i
}

func (m *matcher) beginsPair(a, b byte) bool {
	return m.pairs[uint16(a)|uint16(b)<<8]
}

func indexByte[T string | []byte](p T, c byte) int {
	switch p := any(p).(type) {
	case string:
		return strings.IndexByte(p, c)
	case []byte:
		return bytes.IndexByte(p, c)
	}
	panic("unreachable")
}
