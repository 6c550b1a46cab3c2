package clouds

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type inner struct {
	Region string `yaml:"region"`
}

type driverSSH struct {
	Host string `yaml:"host"`
}

type driverConfig struct {
	inner    `yaml:",inline"`
	SSH      *driverSSH    `yaml:"ssh"`
	Endpoint string        `yaml:"endpoint"`
	Timeout  time.Duration `yaml:"timeout"`
	Flavor   string        // untagged: key "flavor"
	Skipped  string        `yaml:"-"`
	private  string        //nolint:unused // an unexported field is not a key: the test checks it is skipped
}

func node(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    driverConfig
		wantErr []string
	}{
		{"known keys", "type: ec2\npassword: ask\nregion: r1\nendpoint: https://e\ntimeout: 3s\nflavor: m1\n",
			driverConfig{inner: inner{Region: "r1"}, Endpoint: "https://e", Timeout: 3 * time.Second, Flavor: "m1"}, nil},
		{"unknown key", "type: ec2\nregion: r1\n  # comment\nendpiont: x\n", driverConfig{},
			[]string{"cfg.yaml:4:1", `cloud "c1"`, `unknown key "endpiont"`, "type ec2", `did you mean "endpoint"?`,
				"known: type, password, allow, endpoint, flavor, region, ssh, timeout"}},
		{"every unknown key, nested too", "region: r1\nssh: {host: h, hots: x}\nzone: z\n", driverConfig{},
			[]string{`cfg.yaml:2:16: cloud "c1": unknown key "hots" in ssh: did you mean "host"? (known: host)`,
				"\ncfg.yaml:3:1: cloud \"c1\": unknown key \"zone\" for type ec2 (known: type, password, allow, endpoint"}},
		{"ignored field is unknown", "skipped: x\n", driverConfig{}, []string{"cfg.yaml:1:1", `unknown key "skipped"`}},
		{"unexported field is unknown", "private: x\n", driverConfig{}, []string{"cfg.yaml:1:1", `unknown key "private"`}},
		{"not a mapping", "[a, b]\n", driverConfig{}, []string{"cfg.yaml:1:1", "must be a mapping"}},
		{"bad value", "timeout: soon\n", driverConfig{}, []string{"cfg.yaml", `cloud "c1"`, "soon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got driverConfig
			err := DecodeStrict(Config{Name: "c1", Type: "ec2", Node: node(t, tt.src), File: "cfg.yaml"}, &got)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Fatalf("decoded %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatal("DecodeStrict succeeded")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	var v driverConfig
	if err := DecodeStrict(Config{Name: "c1"}, &v); err != nil {
		t.Errorf("nil node: %v", err)
	}
}

type openerFunc func(context.Context, Credentials) (Cloud, error)

func (f openerFunc) Open(ctx context.Context, c Credentials) (Cloud, error) { return f(ctx, c) }

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	r.Register("zeta", func(cfg Config) (Opener, error) { return nil, errors.New("bad key") })
	r.Register("alpha", func(cfg Config) (Opener, error) {
		return openerFunc(func(context.Context, Credentials) (Cloud, error) { return nil, nil }), nil
	})
	if got := strings.Join(r.Types(), ","); got != "alpha,zeta" {
		t.Fatalf("Types() = %s", got)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Name: "a", Type: "alpha", Password: PasswordAsk}, ""},
		{"driver error names the cloud", Config{Name: "z", Type: "zeta"}, `cloud "z": bad key`},
		{"unknown type lists known", Config{Name: "q", Type: "qq"}, `cloud "q": unknown type "qq" (known: alpha, zeta)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := r.Configure(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Name != tt.cfg.Name || e.Opener == nil || !e.AsksPassword() {
				t.Fatalf("entry = %+v", e)
			}
		})
	}
}

func TestFillDurations(t *testing.T) {
	unset, given, negative := time.Duration(0), 5*time.Second, -time.Second
	if err := FillDurations(
		DurationSetting{Key: "boot_timeout", Value: &unset, Default: time.Minute},
		DurationSetting{Key: "stop_timeout", Value: &given, Default: time.Minute},
	); err != nil || unset != time.Minute || given != 5*time.Second {
		t.Fatalf("err %v, unset %s, given %s", err, unset, given)
	}
	err := FillDurations(DurationSetting{Key: "image_timeout", Value: &negative, Default: time.Minute})
	if err == nil || err.Error() != "image_timeout -1s: must be positive" {
		t.Fatalf("negative: %v", err)
	}
}
