package builds_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imagegen/imagegen/builder"
	"github.com/imagegen/imagegen/builds"
	"github.com/imagegen/imagegen/manifest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func sampleBuild() *builds.Build {
	t0 := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	return &builds.Build{
		ID: "0123456789abcdef", Repo: "octo/images", Commit: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
		Generator: "dstat", SpecFile: ".imagegen/dstat.yaml", Digest: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		Clouds: map[string]*builds.CloudRecord{
			"ec2-us-east-1": {Cloud: "ec2-us-east-1", State: builder.StateSucceeded, BaseImage: "ami-0123456789abcdef0",
				ImageID: "ami-0fedcba9876543210", ImageName: "dstat-20261123-2000-6113728", Started: t0, Finished: t0.Add(4*time.Minute + 31*time.Second)},
			"hotel-openstack": {Cloud: "hotel-openstack", State: builder.StateWaiting, AsksPassword: true, BaseImage: "6e5959e9-f349-420f-b77c-5485306fdc25"},
			"sierra-openstack": {Cloud: "sierra-openstack", State: builder.StateFailed, BaseImage: "ubuntu-24.04",
				Error: "running script: exit status 2 | apt-get: unable to locate package dstatt", Started: t0, Finished: t0.Add(95 * time.Second)},
			"local": {Cloud: "local", State: builder.StateRunning, BaseImage: "debian-12.qcow2", Started: t0.Add(time.Minute)},
		},
	}
}

// TestCheckRunGolden pins the rendered check run; run with -update after a
// deliberate change and review the diff.
func TestCheckRunGolden(t *testing.T) {
	now := time.Date(2026, 11, 23, 20, 6, 0, 0, time.UTC)
	tests := []struct {
		name   string
		golden string
		edit   func(b *builds.Build)
		status string
		concl  string
	}{
		{"in progress", "testdata/checkrun-in-progress.md", func(*builds.Build) {}, "in_progress", ""},
		{"failed", "testdata/checkrun-failed.md", func(b *builds.Build) {
			l := b.Clouds["local"]
			l.State, l.Finished, l.ImageID, l.ImageName = builder.StateSucceeded, l.Started.Add(3*time.Minute), "/var/lib/imagegen/dstat-20261123-2001-6113728.qcow2", "dstat-20261123-2001-6113728"
		}, "completed", "failure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := sampleBuild()
			tc.edit(b)
			cr := builds.RenderCheckRun(b, "https://imagegen.example.org", builds.BuildURL("https://imagegen.example.org", b.ID), now)
			if cr.Status != tc.status || cr.Conclusion != tc.concl {
				t.Errorf("status %s/%s; want %s/%s", cr.Status, cr.Conclusion, tc.status, tc.concl)
			}
			got := "# " + cr.Title + "\n\n" + cr.Summary + "\n---\n" + cr.Text
			if *update {
				if err := os.WriteFile(tc.golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tc.golden)
			if err != nil {
				t.Fatalf("%v (run go test ./builds -run Golden -update)", err)
			}
			if got != string(want) {
				t.Errorf("rendered check run differs from %s:\n%s", tc.golden, got)
			}
		})
	}
}

func TestCheckRunStaysUnderGitHubLimits(t *testing.T) {
	b := sampleBuild()
	long := strings.Repeat("x", 300)
	for i := 0; i < 2000; i++ {
		name := "cloud-" + strings.Repeat("z", 20) + string(rune('a'+i%26)) + strings.Repeat("0", i%7) + string(rune('A'+i/26%26)) + string(rune('a'+i/676))
		b.Clouds[name] = &builds.CloudRecord{Cloud: name, State: builder.StateSucceeded, ImageID: "img-" + long, ImageName: "dstat-" + long, Error: long}
	}
	cr := builds.RenderCheckRun(b, "https://imagegen.example.org", builds.BuildURL("https://imagegen.example.org", b.ID), time.Now())
	if n := len(cr.Summary); n > builds.MaxCheckRunText {
		t.Errorf("summary is %d bytes; GitHub takes %d", n, builds.MaxCheckRunText)
	}
	if n := len(cr.Text); n > builds.MaxCheckRunText {
		t.Errorf("text is %d bytes; GitHub takes %d", n, builds.MaxCheckRunText)
	}
	if !strings.Contains(cr.Summary, "more clouds") {
		t.Error("a cut summary does not say so")
	}
}

func TestStatusDescriptions(t *testing.T) {
	b := sampleBuild()
	tests := []struct {
		cloud string
		state string
		want  string
	}{
		{"ec2-us-east-1", "success", "built dstat-20261123-2000-6113728 (ami-0fedcba9876543210)"},
		{"hotel-openstack", "pending", "needs password: imagegen rerun --server https://imagegen.example.org --cloud hotel-openstack 0123456789abcdef"},
		{"sierra-openstack", "failure", "failed: running script: exit status 2 | apt-get: unable to locate package dstatt"},
		{"local", "pending", "running"},
	}
	for _, tc := range tests {
		st := builds.CloudStatus(b, b.Clouds[tc.cloud], "https://imagegen.example.org", builds.BuildURL("https://imagegen.example.org", b.ID))
		if st.State != tc.state || st.Description != tc.want || st.Context != "imagegen/dstat/"+tc.cloud || st.TargetURL != "https://imagegen.example.org/api/v1/builds/0123456789abcdef" {
			t.Errorf("%s: %+v; want %s %q", tc.cloud, st, tc.state, tc.want)
		}
	}
	// Descriptions never exceed GitHub's 140 characters.
	b.Clouds["local"].State, b.Clouds["local"].Error = builder.StateFailed, strings.Repeat("é", 500)
	if st := builds.CloudStatus(b, b.Clouds["local"], "https://x", builds.BuildURL("https://x", b.ID)); utf8.RuneCountInString(st.Description) != builds.MaxStatusDescription {
		t.Errorf("long error: %d characters", utf8.RuneCountInString(st.Description))
	}
	long := "https://imagegen." + strings.Repeat("very-long-", 10) + "example.org"
	if st := builds.CloudStatus(b, b.Clouds["hotel-openstack"], long, builds.BuildURL(long, b.ID)); st.Description != "needs password: imagegen rerun --cloud hotel-openstack 0123456789abcdef" {
		t.Errorf("long base URL: %q", st.Description)
	}
}

// TestCheckRunDriftStaysUnderGitHubLimits: a drift table too wide for 50
// rows (30 clouds, long versions) is cut to fit, and the summary and text
// stay within GitHub's limit.
func TestCheckRunDriftStaysUnderGitHubLimits(t *testing.T) {
	b := sampleBuild()
	var ms []manifest.CloudManifest
	for i := range 30 {
		name := fmt.Sprintf("cloud-%02d-%s", i, strings.Repeat("n", 100))
		b.Clouds[name] = &builds.CloudRecord{Cloud: name, State: builder.StateSucceeded}
		m := &manifest.Manifest{OS: manifest.OS{ID: "debian"}}
		for p := range 300 {
			m.Packages = append(m.Packages, manifest.Package{Manager: manifest.Deb, Name: fmt.Sprintf("pkg-%03d", p), Version: fmt.Sprintf("%d.%s", i, strings.Repeat("9", 100))})
		}
		ms = append(ms, manifest.CloudManifest{Cloud: name, Manifest: m})
	}
	for _, c := range b.Clouds {
		c.State = builder.StateSucceeded
	}
	across, err := manifest.AcrossClouds(ms, manifest.DriftOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dr := &builds.Drift{Across: across, OnDrift: "warn"}
	for _, cm := range ms {
		dr.OverTime = append(dr.OverTime, builds.CloudChanges{Cloud: cm.Cloud, Note: strings.Repeat("x", 3000)})
	}
	cr := builds.RenderCheckRunDrift(b, dr, "https://imagegen.example.org", builds.BuildURL("https://imagegen.example.org", b.ID), time.Now())
	if n := len(cr.Summary); n > builds.MaxCheckRunText || !strings.Contains(cr.Summary, "### Drift") || !strings.Contains(cr.Summary, "more (") {
		t.Errorf("summary of %d bytes (limit %d), with the drift cut and linked?\n%.2000s", n, builds.MaxCheckRunText, cr.Summary)
	}
	if n := len(cr.Text); n > builds.MaxCheckRunText {
		t.Errorf("text of %d bytes", n)
	}
}
