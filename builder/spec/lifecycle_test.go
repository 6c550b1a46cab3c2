package spec

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseLifecycle(t *testing.T) {
	repo := fstest.MapFS{"tests/check.sh": {Data: []byte("test -f /etc/marker\n")}}
	const clouds = "clouds:\n  hotel: {image: {name: \"debian-12-*\", owner: \"136693071363\", tags: {os: debian}, visibility: public, most_recent: true}, ssh_user: debian}\n  ec2: {image: ami-1, ssh_user: admin}\n"
	tests := []struct {
		name string
		src  string
		want Lifecycle
		flt  *ImageFilter
	}{
		{
			name: "everything",
			src:  "script: x\ntest: |\n  test -f /etc/marker\ntest_timeout: 90s\nkeep_failed: true\nkeep: 2\nchannel: stable\nbranches: [main]\nrebuild: {on_base_change: true}\n" + clouds,
			want: Lifecycle{Test: "test -f /etc/marker\n", TestTimeout: 90 * time.Second, KeepFailed: true, Keep: 2, Channel: "stable", Rebuild: Rebuild{OnBaseChange: true}},
			flt:  &ImageFilter{Name: "debian-12-*", Owner: "136693071363", Tags: map[string]string{"os": "debian"}, Visibility: "public", MostRecent: true},
		},
		{
			name: "test_file",
			src:  "script: x\ntest_file: ./tests/check.sh\n" + clouds,
			want: Lifecycle{Test: "test -f /etc/marker\n", TestFile: "tests/check.sh"},
			flt:  &ImageFilter{Name: "debian-12-*", Owner: "136693071363", Tags: map[string]string{"os": "debian"}, Visibility: "public", MostRecent: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseBytes(repo, ".imagegen/g.yaml", []byte(tt.src), testOpts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Lifecycle, tt.want) {
				t.Errorf("lifecycle %+v, want %+v", s.Lifecycle, tt.want)
			}
			if !reflect.DeepEqual(s.Clouds["hotel"].Filter, tt.flt) || s.Clouds["hotel"].Image != "" {
				t.Errorf("hotel %+v, filter %+v", s.Clouds["hotel"], s.Clouds["hotel"].Filter)
			}
			if s.Clouds["ec2"].Image != "ami-1" || s.Clouds["ec2"].Filter != nil {
				t.Errorf("ec2 %+v", s.Clouds["ec2"])
			}
		})
	}
}

func TestParseLifecycleErrors(t *testing.T) {
	const cl = "clouds: {hotel: {image: i, ssh_user: u}}\n"
	tests := []struct{ src, want string }{
		{"script: x\ntest: x\ntest_file: t.sh\n" + cl, "g.yaml:3:1: set either test (inline) or test_file (a path in the repository), not both"},
		{"script: x\ntest: \"  \"\n" + cl, "g.yaml:2:7: test is empty"},
		{"script: x\ntest_timeout: 5m\n" + cl, "g.yaml:2:1: test_timeout has no test to apply to: add test:"},
		{"script: x\nkeep_failed: true\n" + cl, "g.yaml:2:1: keep_failed has no test to apply to"},
		{"script: x\ntest: x\ntest_timeout: soon\n" + cl, `g.yaml:3:15: test_timeout "soon" is not a duration`},
		{"script: x\ntest: x\ntest_timeout: -1m\n" + cl, "test_timeout -1m must be positive"},
		{"script: x\nkeep: 0\n" + cl, "keep: 0: keep at least 1 image"},
		{"script: x\nkeep: two\n" + cl, "keep must be a whole number of images"},
		{"script: x\nchannel: Stable!\n" + cl, `channel "Stable!" is not a valid channel name`},
		{"script: x\nrebuild: {on_base_change: true}\n" + cl, "g.yaml:2:1: rebuild.on_base_change needs a base image found by a filter"},
		{"script: x\nrebuild: {on_base: true}\n" + cl, `unknown key "on_base" in rebuild`},
		{"script: x\nclouds: {hotel: {image: {}, ssh_user: u}}\n", "clouds.hotel.image is an empty filter"},
		{"script: x\nclouds: {hotel: {image: {owner: me}, ssh_user: u}}\n", "clouds.hotel.image: a filter needs name or tags"},
		{"script: x\nclouds: {hotel: {image: {name: \"[\"}, ssh_user: u}}\n", `clouds.hotel.image.name "[" is not a valid glob`},
		{"script: x\nclouds: {hotel: {image: {name: a, newest: true}, ssh_user: u}}\n", `unknown key "newest" in clouds.hotel.image (known: most_recent, name, owner, tags, visibility)`},
		{"script: x\nclouds: {hotel: {image: {name: a, visibility: everyone}, ssh_user: u}}\n", `clouds.hotel.image.visibility "everyone" is not one of public, private, shared, community`},
		{"script: x\ntest_file: ../t.sh\n" + cl, "test_file \"../t.sh\" leads out of the repository"},
	}
	for _, tt := range tests {
		_, err := ParseBytes(fstest.MapFS{}, "g.yaml", []byte(tt.src), testOpts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got %v\nwant %s", tt.src, err, tt.want)
		}
	}
}

// A filter is part of the digest, in a canonical form; an id spec's digest
// is what it always was, and the lifecycle keys change nothing.
func TestDigestWithFilter(t *testing.T) {
	parse := func(src string) string {
		t.Helper()
		s, err := ParseBytes(nil, "g.yaml", []byte(src), testOpts)
		if err != nil {
			t.Fatal(err)
		}
		return s.Digest
	}
	id := parse("script: x\nclouds: {hotel: {image: i, ssh_user: u}}\n")
	if got := parse("script: x\ntest: y\nkeep: 3\nchannel: stable\nclouds: {hotel: {image: i, ssh_user: u}}\n"); got != id {
		t.Errorf("lifecycle keys changed the digest")
	}
	a := parse("script: x\nclouds: {hotel: {image: {name: \"d-*\", most_recent: true, tags: {b: \"2\", a: \"1\"}}, ssh_user: u}}\n")
	b := parse("script: x\nclouds: {hotel: {image: {tags: {a: \"1\", b: \"2\"}, most_recent: true, name: \"d-*\"}, ssh_user: u}}\n")
	c := parse("script: x\nclouds: {hotel: {image: {name: \"e-*\", most_recent: true}, ssh_user: u}}\n")
	if a != b || a == c || a == id {
		t.Errorf("digests: %s %s %s %s", a, b, c, id)
	}
}

func TestFilterString(t *testing.T) {
	f := &ImageFilter{Name: "debian-12-*", Owner: "136693071363", Tags: map[string]string{"b": "2", "a": "1"}, MostRecent: true}
	want := `{name: "debian-12-*", owner: "136693071363", tags: {a: "1", b: "2"}, most_recent: true}`
	if f.String() != want {
		t.Errorf("got %s\nwant %s", f, want)
	}
}
