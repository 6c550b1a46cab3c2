package manifest

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/imagegen/imagegen/internal/printable"
)

// DefaultMarkdownRows is how many package rows a Markdown table shows
// before "and N more".
const DefaultMarkdownRows = 50

// maxCell is the most characters of one value a table shows.
const maxCell = 120

// RenderOptions shape the Markdown and text tables.
type RenderOptions struct {
	// MaxRows is how many package rows are shown before "and N more".
	// Markdown: 0 means DefaultMarkdownRows. Text: 0 means all of them.
	MaxRows int
	// MoreURL is where the whole table is (the build page), linked from
	// "and N more" in Markdown. Only an http(s) URL is used.
	MoreURL string
}

// visible makes s safe to show as text anywhere, cut at maxCell characters
// (internal/printable says how).
func visible(s string) string { return printable.Cell(s, maxCell) }

// Visible is a value from a machine made safe to show as text anywhere (a
// web page, a log, a terminal), as the renderers show values: invalid UTF-8,
// control characters and the invisible ones that reorder or hide text as
// escapes, backslashes doubled, cut at 120 characters. It does no HTML or
// Markdown escaping: that is for the caller's template to do after.
func Visible(s string) string { return visible(s) }

// mdCode renders untrusted text as a Markdown code span that is safe in a
// GFM table cell: nothing in it is read as HTML, a link, an emphasis, a
// mention or a new cell. visible has already doubled every backslash, so a
// '|' escaped as \| cannot have its backslash taken by another one; the
// fence is longer than any run of backticks inside.
func mdCode(s string) string {
	if s == "" {
		return ""
	}
	v := strings.ReplaceAll(visible(s), "|", `\|`)
	run, longest := 0, 0
	for i := 0; i < len(v); i++ {
		if v[i] == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	fence := strings.Repeat("`", longest+1)
	if v[0] == '`' || v[len(v)-1] == '`' || v[0] == ' ' || v[len(v)-1] == ' ' {
		v = " " + v + " " // CommonMark strips one space from each side
	}
	return fence + v + fence
}

// mdCell is a value or a dash for none.
func mdCell(s string) string {
	if s == "" {
		return "—"
	}
	return mdCode(s)
}

// mdLink is "[text](url)" when u is a plain http(s) URL, else "".
func mdLink(text, u string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return ""
	}
	s := p.String()
	if strings.ContainsAny(s, " <>()[]|`\"'\\\n\r\t") {
		return ""
	}
	return "[" + text + "](" + s + ")"
}

func maxRowsMarkdown(o RenderOptions) int {
	if o.MaxRows <= 0 {
		return DefaultMarkdownRows
	}
	return o.MaxRows
}

func moreLine(n int, o RenderOptions) string {
	s := fmt.Sprintf("…and %d more", n)
	if l := mdLink("see them all", o.MoreURL); l != "" {
		s += " (" + l + ")"
	}
	return s + ".\n"
}

func pkgLabel(name, arch string) string {
	if arch == "" {
		return name
	}
	return name + ":" + arch
}

func count(n int, one, many string) string {
	return strconv.Itoa(n) + " " + plural(n, one, many)
}

// Markdown renders d for a check run summary: one sentence when the clouds
// agree, else the system differences and a table of the packages that
// differ (the first MaxRows, then "and N more"). Every value from a machine
// is escaped.
func (d *CloudDrift) Markdown(o RenderOptions) string {
	var b strings.Builder
	b.WriteString(d.headline())
	b.WriteString("\n")
	for _, c := range d.Partial {
		fmt.Fprintf(&b, "\n> The manifest from %s is partial: differences may be missing (see its notes).\n", mdCode(c))
	}
	if len(d.NoManifest) > 0 {
		names := make([]string, len(d.NoManifest))
		for i, c := range d.NoManifest {
			names[i] = mdCode(c)
		}
		fmt.Fprintf(&b, "\n> No manifest from %s: not compared.\n", strings.Join(names, ", "))
	}
	if d.Identical || len(d.Clouds) < 2 {
		return b.String()
	}
	header := func(first string, last ...string) {
		b.WriteString("\n| " + first + " |")
		for _, c := range d.Clouds {
			b.WriteString(" " + mdCode(c) + " |")
		}
		for _, l := range last {
			b.WriteString(" " + l + " |")
		}
		b.WriteString("\n|---|")
		for range len(d.Clouds) + len(last) {
			b.WriteString("---|")
		}
		b.WriteString("\n")
	}
	if len(d.System) > 0 {
		header("System")
		for _, s := range d.System {
			b.WriteString("| " + s.Field + " |")
			for _, c := range d.Clouds {
				b.WriteString(" " + mdCell(s.Values[c]) + " |")
			}
			b.WriteString("\n")
		}
	}
	if len(d.Differences) > 0 {
		header("Package", "Newest")
		rows := maxRowsMarkdown(o)
		for i, p := range d.Differences {
			if i == rows {
				b.WriteString("\n" + moreLine(len(d.Differences)-rows, o))
				break
			}
			b.WriteString("| " + mdCode(pkgLabel(p.Name, p.Arch)) + " |")
			for _, c := range d.Clouds {
				b.WriteString(" " + mdCell(p.Versions[c]) + " |")
			}
			newest := make([]string, len(p.Newest))
			for j, c := range p.Newest {
				newest[j] = mdCode(c)
			}
			b.WriteString(" " + strings.Join(newest, ", ") + " |\n")
		}
	}
	return b.String()
}

// headline is d in one sentence; cloud names are not in it.
func (d *CloudDrift) headline() string {
	ignored := ""
	if d.Ignored > 0 {
		ignored = fmt.Sprintf("; %s ignored", count(d.Ignored, "package", "packages"))
	}
	switch {
	case len(d.Clouds) == 0:
		return "No manifests to compare."
	case len(d.Clouds) == 1:
		return fmt.Sprintf("Only one cloud has a manifest (%s%s): nothing to compare.", count(d.Packages, "package", "packages"), ignored)
	case d.Identical:
		return fmt.Sprintf("Identical on all %d clouds (%s%s).", len(d.Clouds), count(d.Packages, "package", "packages"), ignored)
	}
	var parts []string
	if n := len(d.Differences); n > 0 {
		parts = append(parts, fmt.Sprintf("%s %s", count(n, "package", "packages"), plural(n, "differs", "differ")))
	}
	if n := len(d.System); n > 0 {
		fields := make([]string, n)
		for i, s := range d.System {
			fields[i] = s.Field
		}
		parts = append(parts, strings.Join(fields, ", ")+" "+plural(n, "differs", "differ"))
	}
	return fmt.Sprintf("The %d clouds differ: %s (%s compared%s).", len(d.Clouds), strings.Join(parts, "; "), count(d.Packages, "package", "packages"), ignored)
}

// Text renders d as aligned plain text for a terminal, values made visible
// (no control characters reach the terminal).
func (d *CloudDrift) Text(o RenderOptions) string {
	var b strings.Builder
	b.WriteString(d.headline() + "\n")
	for _, c := range d.Partial {
		fmt.Fprintf(&b, "The manifest from %s is partial: differences may be missing.\n", visible(c))
	}
	for _, c := range d.NoManifest {
		fmt.Fprintf(&b, "No manifest from %s: not compared.\n", visible(c))
	}
	if d.Identical || len(d.Clouds) < 2 {
		return b.String()
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	clouds := make([]string, len(d.Clouds))
	for i, c := range d.Clouds {
		clouds[i] = visible(c)
	}
	if len(d.System) > 0 {
		b.WriteString("\n")
		row(append([]string{"SYSTEM"}, clouds...)...)
		for _, s := range d.System {
			cells := []string{s.Field}
			for _, c := range d.Clouds {
				cells = append(cells, textCell(s.Values[c]))
			}
			row(cells...)
		}
		tw.Flush()
	}
	if len(d.Differences) > 0 {
		b.WriteString("\n")
		row(append(append([]string{"PACKAGE"}, clouds...), "NEWEST")...)
		for i, p := range d.Differences {
			if o.MaxRows > 0 && i == o.MaxRows {
				tw.Flush()
				fmt.Fprintf(&b, "...and %d more\n", len(d.Differences)-o.MaxRows)
				break
			}
			cells := []string{visible(pkgLabel(p.Name, p.Arch))}
			for _, c := range d.Clouds {
				cells = append(cells, textCell(p.Versions[c]))
			}
			newest := make([]string, len(p.Newest))
			for j, c := range p.Newest {
				newest[j] = visible(c)
			}
			cells = append(cells, textCell(strings.Join(newest, ",")))
			row(cells...)
		}
		tw.Flush()
	}
	return b.String()
}

func textCell(s string) string {
	if s == "" {
		return "-"
	}
	// A tab would start a new column: visible has made it \x09 already.
	return visible(s)
}

func (c *Changes) headline() string {
	if c.Identical {
		return fmt.Sprintf("No changes since the previous image (%s).", count(c.Packages, "package", "packages"))
	}
	var parts []string
	for _, k := range []struct {
		n    int
		what string
	}{{c.Added, "added"}, {c.Removed, "removed"}, {c.Upgraded, "upgraded"}, {c.Downgraded, "downgraded"}, {c.Changed, "changed"}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k.n, k.what))
		}
	}
	for _, s := range c.System {
		parts = append(parts, s.Field+" changed")
	}
	return fmt.Sprintf("Since the previous image: %s (%s now).", strings.Join(parts, ", "), count(c.Packages, "package", "packages"))
}

func (c *Changes) partialNote() string {
	switch {
	case c.FromPartial && c.ToPartial:
		return "Both manifests are partial: changes may be missing."
	case c.FromPartial:
		return "The previous manifest is partial: changes may be missing."
	case c.ToPartial:
		return "This manifest is partial: changes may be missing."
	}
	return ""
}

// Markdown renders c for a check run summary, like CloudDrift.Markdown.
func (c *Changes) Markdown(o RenderOptions) string {
	var b strings.Builder
	b.WriteString(c.headline() + "\n")
	if n := c.partialNote(); n != "" {
		b.WriteString("\n> " + n + "\n")
	}
	if len(c.System) > 0 {
		b.WriteString("\n| System | Before | Now |\n|---|---|---|\n")
		for _, s := range c.System {
			b.WriteString("| " + s.Field + " | " + mdCell(s.From) + " | " + mdCell(s.To) + " |\n")
		}
	}
	if len(c.Changes) > 0 {
		b.WriteString("\n| Package | Change | Before | Now |\n|---|---|---|---|\n")
		rows := maxRowsMarkdown(o)
		for i, p := range c.Changes {
			if i == rows {
				b.WriteString("\n" + moreLine(len(c.Changes)-rows, o))
				break
			}
			b.WriteString("| " + mdCode(pkgLabel(p.Name, p.Arch)) + " | " + string(p.Kind) + " | " + mdCell(p.From) + " | " + mdCell(p.To) + " |\n")
		}
	}
	return b.String()
}

// Text renders c as aligned plain text, like CloudDrift.Text.
func (c *Changes) Text(o RenderOptions) string {
	var b strings.Builder
	b.WriteString(c.headline() + "\n")
	if n := c.partialNote(); n != "" {
		b.WriteString(n + "\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if len(c.System) > 0 {
		b.WriteString("\n")
		fmt.Fprintln(tw, "SYSTEM\tBEFORE\tNOW")
		for _, s := range c.System {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Field, textCell(s.From), textCell(s.To))
		}
		tw.Flush()
	}
	if len(c.Changes) > 0 {
		b.WriteString("\n")
		fmt.Fprintln(tw, "PACKAGE\tCHANGE\tBEFORE\tNOW")
		for i, p := range c.Changes {
			if o.MaxRows > 0 && i == o.MaxRows {
				tw.Flush()
				fmt.Fprintf(&b, "...and %d more\n", len(c.Changes)-o.MaxRows)
				break
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", visible(pkgLabel(p.Name, p.Arch)), p.Kind, textCell(p.From), textCell(p.To))
		}
		tw.Flush()
	}
	return b.String()
}
