package clouds

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// ImageFilter finds a base image by its attributes rather than its id (a
// generator spec's image: {name: ..., most_recent: true}). Each driver
// applies what its cloud has: EC2 DescribeImages filters, Glance's list, a
// file glob in a qemu cloud's dir, the simulated cloud's base images.
type ImageFilter struct {
	Name       string            // a glob (* ?) on the image's name
	Owner      string            // the owning account (EC2) or project (OpenStack)
	Tags       map[string]string // tags (EC2) or properties (OpenStack) the image carries
	Visibility string            // public, private, shared, community
	MostRecent bool              // take the newest of several matches
}

// String shows the filter as a spec writes it.
func (f ImageFilter) String() string {
	var parts []string
	if f.Name != "" {
		parts = append(parts, fmt.Sprintf("name: %q", f.Name))
	}
	if f.Owner != "" {
		parts = append(parts, fmt.Sprintf("owner: %q", f.Owner))
	}
	if len(f.Tags) > 0 {
		var tags []string
		for k, v := range f.Tags {
			tags = append(tags, fmt.Sprintf("%s: %q", k, v))
		}
		slices.Sort(tags)
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

// MatchName reports whether name matches the filter's name glob (any name
// when the filter has none).
func (f ImageFilter) MatchName(name string) bool {
	if f.Name == "" {
		return true
	}
	ok, err := path.Match(f.Name, name)
	return err == nil && ok
}

// MatchTags reports whether tags hold every tag of the filter.
func (f ImageFilter) MatchTags(tags map[string]string) bool {
	for k, v := range f.Tags {
		if got, ok := tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ImageFinder is implemented by clouds that can find base images by a filter.
type ImageFinder interface {
	// FindImages returns the usable images (available, active) that match
	// f, newest first (by Created); none is not an error. f.MostRecent is
	// for the caller (ResolveImage): FindImages returns every match.
	FindImages(ctx context.Context, f ImageFilter) ([]Image, error)
}

// ErrNoFilter says a cloud's driver cannot find images by filter.
var ErrNoFilter = errors.New("this cloud's driver cannot find base images by a filter: give the image's id")

// ResolveImage finds the one base image f names on cl: the only match, or
// the newest with f.MostRecent. No match, several without MostRecent, or a
// cloud without ImageFinder is an error of KindInvalid (or KindNotFound)
// saying which, for the build's status.
func ResolveImage(ctx context.Context, cl Cloud, f ImageFilter) (Image, error) {
	finder, ok := cl.(ImageFinder)
	if !ok {
		return Image{}, &Error{Kind: KindInvalid, Err: ErrNoFilter}
	}
	imgs, err := finder.FindImages(ctx, f)
	if err != nil {
		return Image{}, fmt.Errorf("list images for the filter %s: %w", f, err)
	}
	switch {
	case len(imgs) == 0:
		// No Op: the pipeline's phase ("finding base image") says it.
		return Image{}, &Error{Kind: KindNotFound,
			Err:  fmt.Errorf("the image filter %s matches no image", f),
			Hint: "check the name glob, owner and tags in the generator spec against the cloud's images"}
	case len(imgs) > 1 && !f.MostRecent:
		names := make([]string, 0, 3)
		for _, im := range imgs[:min(3, len(imgs))] {
			names = append(names, im.ID+" ("+im.Name+")")
		}
		more := ""
		if len(imgs) > 3 {
			more = fmt.Sprintf(" and %d more", len(imgs)-3)
		}
		return Image{}, &Error{Kind: KindInvalid,
			Err:  fmt.Errorf("the image filter %s matches %d images: %s%s", f, len(imgs), strings.Join(names, ", "), more),
			Hint: "add most_recent: true to take the newest, or narrow the filter"}
	}
	return NewestImage(imgs), nil
}

// NewestImage is the image of imgs created last (the first of equals, in order).
func NewestImage(imgs []Image) Image {
	best := imgs[0]
	for _, im := range imgs[1:] {
		if im.Created.After(best.Created) {
			best = im
		}
	}
	return best
}

// SortNewestFirst orders images newest first, ties by id, for FindImages.
func SortNewestFirst(imgs []Image) {
	slices.SortStableFunc(imgs, func(a, b Image) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
