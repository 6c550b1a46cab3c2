package clouds

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/internal/secret"
	"github.com/imagegen/imagegen/internal/strictyaml"
)

// PasswordAsk is the value of a cloud's "password" key that means: never store
// this cloud's password; each build brings it (the re-run API) and drops it.
const PasswordAsk = "ask"

// Config is one entry of the server config's clouds map, before its driver
// has read its own keys.
type Config struct {
	Name     string     // the key in the clouds map: what specs name
	Type     string     // the driver: openstack, ec2, qemu, ssh, simulated
	Password string     // "" or PasswordAsk
	Node     *yaml.Node `json:"-"` // the entry's mapping, for the driver to decode with DecodeStrict
	File     string     // the config file, for error positions
}

// Credentials are what a build brings to Open: set only for password: ask clouds.
type Credentials struct {
	Password secret.String
}

// Opener is a validated cloud config. Open makes a Cloud for a build; for a
// password: ask cloud it is called with the build's password and the Cloud is
// dropped when the build ends.
type Opener interface {
	Open(ctx context.Context, cred Credentials) (Cloud, error)
}

// ConfigureFunc reads and validates a cloud's driver-specific keys. It is called
// once, at start, and must not reach the network.
type ConfigureFunc func(cfg Config) (Opener, error)

// Entry is a configured cloud.
type Entry struct {
	Config
	Opener
}

// AsksPassword reports whether the cloud's password comes with each build.
func (e *Entry) AsksPassword() bool { return e.Password == PasswordAsk }

// Registry maps cloud types to drivers. It is built explicitly by the binary
// (no init-time registration), so tests can register fakes.
type Registry struct {
	drivers map[string]ConfigureFunc
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{drivers: map[string]ConfigureFunc{}} }

// Register adds a driver for typ.
func (r *Registry) Register(typ string, f ConfigureFunc) { r.drivers[typ] = f }

// Types lists the registered types, sorted.
func (r *Registry) Types() []string {
	ts := make([]string, 0, len(r.drivers))
	for t := range r.drivers {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// Configure validates cfg with its driver.
func (r *Registry) Configure(cfg Config) (*Entry, error) {
	f, ok := r.drivers[cfg.Type]
	if !ok {
		return nil, fmt.Errorf("cloud %q: unknown type %q (known: %s)", cfg.Name, cfg.Type, strings.Join(r.Types(), ", "))
	}
	op, err := f(cfg)
	if err != nil {
		return nil, fmt.Errorf("cloud %q: %w", cfg.Name, err)
	}
	return &Entry{Config: cfg, Opener: op}, nil
}

// commonKeys are read by the config loader for every cloud, not by drivers:
// the driver, password: ask, and who may build there (allow).
var commonKeys = []string{"type", "password", "allow"}

// DecodeStrict decodes cfg.Node into v (a pointer to a struct with yaml tags),
// refusing keys v does not declare, at every level. Errors carry
// file:line:col and the known keys.
func DecodeStrict(cfg Config, v any) error {
	n := cfg.Node
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return strictyaml.Error{File: cfg.File, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf("cloud %q must be a mapping", cfg.Name)}
	}
	errs := strictyaml.CheckKeys(cfg.File, n, v, strictyaml.KeyCheck{Context: "for type " + cfg.Type, Extra: commonKeys})
	if len(errs) > 0 {
		for i := range errs {
			errs[i].Msg = fmt.Sprintf("cloud %q: %s", cfg.Name, errs[i].Msg)
		}
		return errs
	}
	if err := n.Decode(v); err != nil {
		return fmt.Errorf("%s: cloud %q: %w", cfg.File, cfg.Name, err)
	}
	return nil
}

// DurationSetting is one duration key of a driver's config, for FillDurations.
type DurationSetting struct {
	Key     string         // the config key, for the error
	Value   *time.Duration // the decoded value; 0 means unset
	Default time.Duration
}

// FillDurations refuses negative durations, naming the key, and gives unset
// ones their default.
func FillDurations(settings ...DurationSetting) error {
	for _, d := range settings {
		if *d.Value < 0 {
			return fmt.Errorf("%s %s: must be positive", d.Key, *d.Value)
		}
		if *d.Value == 0 {
			*d.Value = d.Default
		}
	}
	return nil
}
