package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/config"
)

func TestListLocalImages(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"web-20260101-0000-aaaaaaa", "web-20260102-0000-bbbbbbb"} {
		if err := os.WriteFile(filepath.Join(dir, name+".qcow2"), []byte("QFI\xfb"), 0o644); err != nil {
			t.Fatal(err)
		}
		pv := qemu.Provenance{Name: name, Disk: name + ".qcow2", Created: time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC), Tags: map[string]string{
			clouds.TagGenerator: "web", clouds.TagRepo: "acme/images", clouds.TagCommit: strings.Repeat(string(rune('a'+i)), 40), clouds.TagScriptSHA: strings.Repeat("5", 64),
		}}
		b, _ := json.Marshal(pv)
		if err := os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := clouds.NewRegistry()
	reg.Register(qemu.Type, qemu.Configure)
	cfg, err := config.Parse([]byte("clouds:\n  local: {type: qemu, dir: "+dir+"}\n"), "imagegen.yaml", reg, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		only    string
		want    []string // each row's leading fields, in order
		wantErr string
	}{
		{want: []string{"CLOUD IMAGE GENERATOR REPO COMMIT SCRIPT-SHA256 FILE", "local web-20260102-0000-bbbbbbb web acme/images bbbbbbbbbbbb 555555555555 " + dir + "/web-20260102-0000-bbbbbbb.qcow2", "local web-20260101-0000-aaaaaaa web acme/images aaaaaaaaaaaa"}},
		{only: "local", want: []string{"CLOUD", "local web-20260102-0000-bbbbbbb", "local web-20260101-0000-aaaaaaa"}},
		{only: "nope", wantErr: `no qemu cloud named "nope"`},
	}
	for _, tt := range tests {
		t.Run("only="+tt.only, func(t *testing.T) {
			var out strings.Builder
			err := listLocalImages(&out, cfg, tt.only)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(tt.want), out.String())
			}
			for i, w := range tt.want {
				if got := strings.Join(strings.Fields(lines[i]), " "); !strings.HasPrefix(got, w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
		})
	}
}
