package builds

import (
	"fmt"
	"strings"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// maxListed bounds the images one cloud's retention line names.
const maxListed = 20

// renderLifecycle is the check run summary's Test and Retention sections:
// each cloud's test result, and the older images retention removed (or
// could not). Empty when the build has neither, so other check runs read as
// they always did.
func renderLifecycle(b *Build) string {
	var test, prune strings.Builder
	for _, name := range b.CloudNames() {
		c := b.Clouds[name]
		if t := c.Test; t != nil {
			fmt.Fprintf(&test, "- **%s**: %s\n", mdCell(name), testLine(c))
		}
		if len(c.Pruned) > 0 {
			ids := make([]string, 0, min(len(c.Pruned), maxListed))
			for _, p := range c.Pruned[:min(len(c.Pruned), maxListed)] {
				s := code(p.ID)
				if p.Name != "" && p.Name != p.ID {
					s += " (" + code(p.Name) + ")"
				}
				ids = append(ids, s)
			}
			if len(c.Pruned) > maxListed {
				ids = append(ids, fmt.Sprintf("and %d more", len(c.Pruned)-maxListed))
			}
			fmt.Fprintf(&prune, "- **%s**: removed %d older %s: %s\n", mdCell(name), len(c.Pruned), plural(len(c.Pruned), "image", "images"), strings.Join(ids, ", "))
		}
		for i, e := range c.PruneErrors {
			if i == maxListed {
				fmt.Fprintf(&prune, "- **%s**: … %d more could not be removed\n", mdCell(name), len(c.PruneErrors)-i)
				break
			}
			fmt.Fprintf(&prune, "- **%s**: could not remove an older image (the sweep tries again; the build stands): %s\n", mdCell(name), mdCell(truncate(e, 500)))
		}
	}
	var out strings.Builder
	if test.Len() > 0 {
		out.WriteString("\n### Test\n\nThe spec's test, on a fresh VM booted from each new image:\n\n")
		out.WriteString(test.String())
	}
	if prune.Len() > 0 {
		out.WriteString("\n### Retention\n\nOlder images of this generator beyond the spec's `keep:`, on this branch:\n\n")
		out.WriteString(prune.String())
	}
	return out.String()
}

// testLine says how a cloud's test went.
func testLine(c *CloudRecord) string {
	t := c.Test
	d := ""
	if t.Duration > 0 {
		d = " in " + t.Duration.Round(100*time.Millisecond).String()
	}
	switch t.Result {
	case clouds.TestedPassed:
		return "✅ passed" + d + tagNote(t.Tagged, clouds.TestedPassed)
	case clouds.TestedSkipped:
		return "⚪ not run: the cloud gives no SSH endpoint" + tagNote(t.Tagged, clouds.TestedSkipped)
	}
	how := "❌ failed"
	if t.ExitCode >= 0 {
		how += fmt.Sprintf(" (exit code %d)", t.ExitCode)
	}
	if t.Kept {
		return how + d + "; the image is kept (`keep_failed: true`)" + tagNote(t.Tagged, clouds.TestedFailed)
	}
	return how + d + "; the image was deleted"
}

func tagNote(tagged bool, v string) string {
	if !tagged {
		return "; the cloud could not be tagged with the result"
	}
	return fmt.Sprintf(", tagged `%s=%s`", clouds.TagTested, v)
}
