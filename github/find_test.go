package github_test

import (
	"context"
	"errors"
	"testing"

	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/github"
	"github.com/imagegen/imagegen/github/githubtest"
)

// TestFindCheckRun: a run is found by name and external id on its commit,
// among other builds' runs of the same name; none is found elsewhere; a token
// (no App) cannot look.
func TestFindCheckRun(t *testing.T) {
	s := githubtest.NewServer(t)
	c := newClient(t, s.AppConfig(t), 42, github.Options{})
	ctx := context.Background()
	var want int64
	for _, ext := range []string{"b-1", "b-2", "b-3"} {
		id, err := c.CreateCheckRun(ctx, repo, builds.CheckRun{Name: "imagegen: dstat", HeadSHA: sha, Status: github.CheckInProgress, ExternalID: ext})
		if err != nil {
			t.Fatal(err)
		}
		if ext == "b-2" {
			want = id
		}
	}
	tests := []struct {
		name, sha, run, ext string
		found               bool
	}{
		{"an older run of the name", sha, "imagegen: dstat", "b-2", true},
		{"no such build", sha, "imagegen: dstat", "b-9", false},
		{"other name", sha, "imagegen: other", "b-2", false},
		{"other commit", "0123456789012345678901234567890123456789", "imagegen: dstat", "b-2", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, found, err := c.FindCheckRun(ctx, repo, tc.sha, tc.run, tc.ext)
			if err != nil || found != tc.found || (found && id != want) {
				t.Errorf("FindCheckRun = %d, %v, %v; want found=%v (id %d)", id, found, err, tc.found, want)
			}
		})
	}
	tok := newClient(t, s.TokenConfig(), 0, github.Options{})
	if _, _, err := tok.FindCheckRun(ctx, repo, sha, "imagegen: dstat", "b-2"); !errors.Is(err, github.ErrNeedsApp) {
		t.Errorf("token mode: %v, want ErrNeedsApp", err)
	}
}
