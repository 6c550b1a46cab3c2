package openstack

import (
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

func TestServerAddress(t *testing.T) {
	addr := func(a, typ string) map[string]any {
		return map[string]any{"addr": a, "OS-EXT-IPS:type": typ, "version": 4}
	}
	tests := []struct {
		name    string
		addrs   map[string]any
		network string
		want    string
	}{
		{"one fixed", map[string]any{"private": []any{addr("10.0.0.5", "fixed")}}, "", "10.0.0.5"},
		{"floating first", map[string]any{"private": []any{addr("10.0.0.5", "fixed"), addr("203.0.113.9", "floating")}}, "", "203.0.113.9"},
		{"configured network", map[string]any{"a": []any{addr("10.0.0.5", "fixed")}, "b": []any{addr("10.1.0.5", "fixed")}}, "b", "10.1.0.5"},
		{"IPv4 before IPv6", map[string]any{"private": []any{addr("2001:db8::5", "fixed"), addr("10.0.0.5", "fixed")}}, "", "10.0.0.5"},
		{"only IPv6", map[string]any{"private": []any{addr("2001:db8::5", "fixed")}}, "", "2001:db8::5"},
		{"none", map[string]any{}, "", ""},
		{"garbage", map[string]any{"private": "nope"}, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := serverAddress(&servers.Server{Addresses: tc.addrs}, tc.network); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
