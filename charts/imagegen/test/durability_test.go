package charttest

import (
	"strings"
	"testing"
)

// redis.durability becomes redis_durability in the config; fsync makes the
// bundled Redis fsync every write; replica is refused with the bundled
// Redis, which has no replica.
func TestRedisDurability(t *testing.T) {
	for _, tc := range []struct {
		name        string
		values, set []string
		config      string // in imagegen.yaml
		fsync       string // the bundled Redis's appendfsync; "" none bundled
	}{
		{name: "default", config: `redis_durability: "ack"`, fsync: "everysec"},
		{name: "fsync", set: []string{"redis.durability=fsync"}, config: `redis_durability: "fsync"`, fsync: "always"},
		{name: "replica on sentinel", values: []string{"ci/redis-sentinel-values.yaml"}, set: []string{"redis.durability=replica"}, config: `redis_durability: "replica"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmTemplate(t, tc.values, tc.set)
			if err != nil {
				t.Fatal(err)
			}
			c := decode(t, out)
			found := false
			for _, cm := range c.configMaps {
				if y, ok := cm.Data["imagegen.yaml"]; ok {
					found = true
					if !strings.Contains(y, "\n"+tc.config+"\n") {
						t.Errorf("imagegen.yaml lacks %s:\n%s", tc.config, y)
					}
				}
			}
			if !found {
				t.Fatal("no imagegen.yaml rendered")
			}
			var args string
			for _, ss := range c.statefulSets {
				for _, ct := range ss.Spec.Template.Spec.Containers {
					args += strings.Join(ct.Args, " ")
				}
			}
			if tc.fsync != "" && !strings.Contains(args, "--appendfsync "+tc.fsync+" ") {
				t.Errorf("the bundled Redis runs %q, want --appendfsync %s", args, tc.fsync)
			}
		})
	}
	_, err := helmTemplate(t, nil, []string{"redis.durability=replica"})
	if want := "redis.durability is replica, but the bundled Redis has no replica"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("replica with the bundled Redis: %v, want %q", err, want)
	}
}
