package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/config"
)

// fuzzSecret is what every ${VAR} expands to.
const fuzzSecret = "fuzz-s3cret-value-7f3a9c"

// FuzzParse feeds the config parser arbitrary YAML (aliases, deep nesting,
// ${VAR}s). It must not panic; an error must say something; a config it
// accepts must have its defaults filled in, print no secret-typed value
// (%+v, as a careless log line would), and parse again to the same.
// An error may echo a ${VAR} value given to a plain key (redis: ${X} that is
// not a URL): only secret-typed keys are secrets.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"github: {token: t, webhook_secret: s}\nclouds:\n  sim: {type: simulated}\n",
		"listen: \":8080\"\nredis: redis://127.0.0.1:6379/0\ngithub:\n  app_id: 1\n  private_key_file: /nonexistent\n  webhook_secret: ${IMAGEGEN_WEBHOOK_SECRET}\napi_tokens: [\"${IMAGEGEN_API_TOKEN}\"]\nclouds:\n  sim: {type: simulated, launch_delay: 2s, fail_rate: 0.5}\n",
		"build: {timeout: -1s, concurrency: -3, sweep_interval: 1ms}\nclouds: {}\n",
		"github: {token: ${TOKEN}, webhook_secret: ${SECRET}}\nclouds:\n  s: {type: simulated, password: ask, ssh: {host: h, port: 99999}}\n",
		"a: &a [*a, *a]\n",
		"x: &x {y: *x}\n",
		"clouds: [1, 2]\n",
		"- just\n- a list\n",
		"{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
		"redis: ${}\n",
		"",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	lookup := func(string) (string, bool) { return fuzzSecret, true }
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := config.Parse([]byte(src), "imagegen.yaml", reg, lookup)
		if err != nil {
			msg := err.Error()
			if strings.TrimSpace(msg) == "" {
				t.Fatalf("an empty error for %q", src)
			}
			return
		}
		b := cfg.Build
		if b.Timeout <= 0 || b.CleanupTimeout <= 0 || b.SSHTimeout <= 0 || b.Concurrency <= 0 || b.SweepInterval <= 0 || b.Retention <= 0 {
			t.Fatalf("accepted a config with unusable build limits %+v from %q", b, src)
		}
		for _, v := range []any{cfg.GitHub.WebhookSecret, cfg.GitHub.Token, cfg.EncryptionKey, cfg.Pages.LinkKey, cfg.APITokens} {
			if strings.Contains(fmt.Sprintf("%+v %v %s", v, v, v), fuzzSecret) {
				t.Fatalf("a secret-typed value prints in clear: %T", v)
			}
		}
		again, err := config.Parse([]byte(src), "imagegen.yaml", reg, lookup)
		if err != nil {
			t.Fatalf("parsed once, failed the second time: %v", err)
		}
		if strings.Join(again.CloudNames(), ",") != strings.Join(cfg.CloudNames(), ",") {
			t.Fatalf("two parses disagree on the clouds: %v vs %v", cfg.CloudNames(), again.CloudNames())
		}
	})
}
