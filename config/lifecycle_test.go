package config

import (
	"strings"
	"testing"
	"time"
)

func TestBaseCheckInterval(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	c, err := Parse([]byte("base_check_interval: 30m\nclouds: {}\n"), "imagegen.yaml", nil, none)
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseCheckInterval != 30*time.Minute {
		t.Errorf("base_check_interval = %s", c.BaseCheckInterval)
	}
	_, err = Parse([]byte("base_check_interval: -1h\nclouds: {}\n"), "imagegen.yaml", nil, none)
	if err == nil || !strings.Contains(err.Error(), "base_check_interval: must be positive, got -1h0m0s") {
		t.Errorf("a negative interval: %v", err)
	}
}
