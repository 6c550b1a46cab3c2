package manifest

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		m    Manager
		a, b string
		want int
		ok   bool
	}{
		// dpkg: epoch first, ~ before anything, letters before non-letters.
		{Deb, "1:1.0", "2.0", 1, true},
		{Deb, "1.0~rc1", "1.0", -1, true},
		{Deb, "3.0.15-1~deb12u1", "3.0.14-1~deb12u2", 1, true},
		{Deb, "2.36-9+deb12u7", "2.36-9+deb12u10", -1, true},
		{Deb, "1.0", "1.0", 0, true},
		{Deb, "1.0", "not a version", -1, false}, // an order, not a meaningful one
		// rpm: epoch, version, release with rpmvercmp.
		{RPM, "1:3.0.7-27.el9", "3.0.8-1.el9", 1, true},
		{RPM, "5.14.0-427.13.1.el9_4", "5.14.0-427.20.1.el9_4", -1, true},
		{RPM, "1.0-1.el9", "1.0-1.el9", 0, true},
		// apk.
		{APK, "1.2.5-r0", "1.2.5-r1", -1, true},
		{APK, "3.3.1-r3", "3.3.10-r0", -1, true},
		{APK, "1.0_rc1-r0", "1.0-r0", -1, true},
		{APK, "1.0", "1.0bc", -1, false},
		{"pacman", "1", "2", -1, false},
	}
	for _, tt := range tests {
		got, ok := CompareVersions(tt.m, tt.a, tt.b)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CompareVersions(%s, %q, %q) = %d, %v; want %d, %v", tt.m, tt.a, tt.b, got, ok, tt.want, tt.ok)
		}
		if tt.ok {
			if back, _ := CompareVersions(tt.m, tt.b, tt.a); back != -tt.want {
				t.Errorf("CompareVersions(%s, %q, %q) = %d, not the opposite", tt.m, tt.b, tt.a, back)
			}
		}
	}
}

// TestCompareAPK: apk-tools' own expectations (a sample of its test data,
// and the rules added since: ~commit hashes, leading zeros as strings).
func TestCompareAPK(t *testing.T) {
	tests := []struct {
		a, op, b string
	}{
		{"2.34", ">", "0.1.0_alpha"},
		{"23_foo", ">", "4_beta"},
		{"1.0", "<", "1.0bc"},
		{"0.1.0_alpha", "=", "0.1.0_alpha"},
		{"0.1.0_alpha", "<", "0.1.3_alpha"},
		{"0.1.0_alpha2", ">", "0.1.0_alpha"},
		{"0.1.0_alpha", "<", "2.2.39-r1"},
		{"1.0.4-r3", "<", "1.0.4-r4"},
		{"1.1", ">", "1.1_alpha1"},
		{"1.2.1", ">", "1.2"},
		{"1.3_alpha2", "<", "1.3_alpha3"},
		{"0.8_beta4", "<", "4.8-r1"},
		{"2.3.0b-r1", "<", "2.3.0b-r2"},
		{"3.1_p16", "<", "3.1_p17"},
		{"1.06-r6", "<", "006"},
		{"1.2.2-r1", ">", "1.2.2"},
		{"2.59", "<", "20050718-r1"},
		{"1.0", ">", "0.99.3.20040818"},
		{"20060720", ">", "3.0.20060720"},
		{"2.5.1-r8", "<", "2.5.1a-r1"},
		{"1.1a", "<", "1.3a"},
		{"0.15.1b-r2", ">", "0.15.1b"},
		{"4.5_p1-r1", ">", "4.5_p1"},
		{"1.8.5", "<", "1.8.5_p2"},
		{"2.9.11_pre20051101-r3", ">", "2.9.11_pre20051101"},
		{"7.0.17", "<", "7.0.174"},
		{"1.3_pre1-r1", "<", "1.3.2"},
		{"1.0_p10-r0", ">", "1.0_p9-r0"},
		{"0.1.0_alpha_pre2", "<", "0.1.0_alpha"},
		{"1.0.0_pre20191002222144-r0", "<", "1.0.0_pre20210530193627-r0"},
		// Leading zeros after a dot compare as strings (1.02 < 1.1 < 1.10).
		{"1.02", "<", "1.1"},
		{"1.01", "<", "1.02"},
		{"1.010", ">", "1.01"},
		// A commit hash sorts after the release it annotates, before a revision.
		{"1.0~abc123", ">", "1.0"},
		{"1.0~abc123-r1", ">", "1.0~abc123-r0"},
		{"1.0~abc", "<", "1.0~abd"},
		{"1.0-r1", "<", "1.0~abc"}, // as apk orders them: the hash token comes before the revision in the grammar
		{"1.0_git20240101", ">", "1.0"},
		{"1.0_rc1", "<", "1.0_p1"},
	}
	for _, tt := range tests {
		got := CompareAPK(tt.a, tt.b)
		want := map[string]int{"<": -1, "=": 0, ">": 1}[tt.op]
		if got != want {
			t.Errorf("CompareAPK(%q, %q) = %d, want %s", tt.a, tt.b, got, tt.op)
		}
		if back := CompareAPK(tt.b, tt.a); back != -want {
			t.Errorf("CompareAPK(%q, %q) = %d, not the opposite", tt.b, tt.a, back)
		}
	}
}

func TestValidAPK(t *testing.T) {
	for v, want := range map[string]bool{
		"1.2.3-r0": true, "1.0_rc1": true, "1.0~abc123-r4": true, "20240801.120000": true, "2.3.0b-r1": true,
		"": false, "1.0bc": false, "a1": false, "1.0-1": false, "1.0_foo": false, "1.0~": false, "1..0": false, "1.0-r": false,
	} {
		if got := ValidAPK(v); got != want {
			t.Errorf("ValidAPK(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestSplitAPKName(t *testing.T) {
	for s, want := range map[string][2]string{
		"musl-1.2.5-r0":                      {"musl", "1.2.5-r0"},
		"py3-setuptools-70.3.0-r0":           {"py3-setuptools", "70.3.0-r0"},
		"ca-certificates-bundle-20240705-r0": {"ca-certificates-bundle", "20240705-r0"},
		"lib-2-go-1.0":                       {"lib-2-go", "1.0"},
		"x-1":                                {"x", "1"},
		"nodash":                             {"", ""},
		"-1.0":                               {"", ""},
		"a-b-c":                              {"", ""},
		"name-1.0-r0-extra-more":             {"", ""},
	} {
		name, ver, ok := splitAPKName(s)
		if name != want[0] || ver != want[1] || ok != (want[0] != "") {
			t.Errorf("splitAPKName(%q) = %q, %q, %v; want %q", s, name, ver, ok, want)
		}
	}
}
