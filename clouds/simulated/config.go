package simulated

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/manifest"
)

// Type is the server config's cloud type for the simulated cloud: a fake
// Cloud that launches nothing, for load tests and trying the service.
const Type = "simulated"

// Options shape a fake cloud. The zero value is a cloud that does everything at once.
type Options struct {
	// LaunchDelay is how long a server takes to become active, SSHDelay how much
	// longer until it would answer SSH; StopDelay and SnapshotDelay likewise.
	LaunchDelay, SSHDelay, StopDelay, SnapshotDelay time.Duration

	// FailRate is the fraction of API calls that fail with a transient error;
	// the fake retries them with a short backoff, as real drivers retry theirs,
	// so only a run of failures reaches the caller.
	FailRate float64
	// PermanentFailRate is the fraction of API calls that fail permanently
	// (clouds.KindFailed); these reach the caller at once.
	PermanentFailRate float64

	// SSH, when set, is where launched instances are reachable (a real local
	// sshd). Nil: inst.SSH stays nil and the pipeline runs no script.
	SSH *clouds.Endpoint

	// NoImages makes Features().Images false, like type ssh.
	NoImages bool
	// PoweroffOverSSH sets Features().PoweroffOverSSH, like type qemu.
	PoweroffOverSSH bool

	// BaseImages, when set, are the only base images Launch accepts (besides
	// images this cloud made); any other fails with clouds.KindNotFound.
	// Empty: every image name is accepted.
	BaseImages []string
	// BaseImageList are base images with names and dates, for image
	// filters (FindImages); Launch accepts them too.
	BaseImageList []BaseImage

	// StateFile, when set, keeps the cloud's resources and images in that file
	// (locked per call) instead of in memory, so they outlive the process and
	// every process using the file sees one cloud (see state.go).
	StateFile string

	// Manifest, when set, is what every instance holds, for the pipeline
	// to record as the image's manifest when there is no SSH (the cloud is
	// a clouds.ManifestSource). ManifestFile, when set instead, is a
	// CycloneDX JSON file read at each build, so editing it between builds
	// shows as a change over time.
	Manifest     *manifest.Manifest
	ManifestFile string

	// Seed seeds the randomness of FailRate and image ids (0: time-based).
	Seed int64
	// Now is the clock for creation times (nil: time.Now). Delays are always
	// real time, so a frozen test clock cannot make a wait endless.
	Now func() time.Time
}

// simConfig is a simulated cloud's entry in the server config.
type simConfig struct {
	LaunchDelay       time.Duration `yaml:"launch_delay"`
	SSHDelay          time.Duration `yaml:"ssh_delay"`
	StopDelay         time.Duration `yaml:"stop_delay"`
	SnapshotDelay     time.Duration `yaml:"snapshot_delay"`
	FailRate          float64       `yaml:"fail_rate"`
	PermanentFailRate float64       `yaml:"permanent_fail_rate"`
	StateFile         string        `yaml:"state_file"`
	SSH               *sshConfig    `yaml:"ssh"`
	// Manifest describes what the simulated instances hold (manifest.go).
	Manifest *manifestConfig `yaml:"manifest"`
	// BaseImages are base images an image filter finds (baseimages.go).
	BaseImages []BaseImage `yaml:"base_images"`
}

// sshConfig names a local sshd that stands in for every launched instance,
// so the generator's script really runs.
type sshConfig struct {
	Host           string `yaml:"host"`
	Port           int    `yaml:"port"`
	User           string `yaml:"user"` // overrides the spec's ssh_user: a local sshd rarely has "ubuntu"
	PrivateKeyFile string `yaml:"private_key_file"`
	HostKey        string `yaml:"host_key"` // authorized_keys line, or first-use to trust the first key seen (required)
}

var sshKeys = []string{"host", "port", "user", "private_key_file", "host_key"}

// Configure reads a simulated cloud's keys. It reads ssh.private_key_file (a
// local file) but reaches no network.
func Configure(cfg clouds.Config) (clouds.Opener, error) {
	if err := checkSSHKeys(cfg); err != nil {
		return nil, err
	}
	var sc simConfig
	if err := clouds.DecodeStrict(cfg, &sc); err != nil {
		return nil, err
	}
	var errs []error
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"launch_delay", sc.LaunchDelay}, {"ssh_delay", sc.SSHDelay}, {"stop_delay", sc.StopDelay}, {"snapshot_delay", sc.SnapshotDelay}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %s must not be negative", cfg.File, d.key))
		}
	}
	for _, r := range []struct {
		key string
		v   float64
	}{{"fail_rate", sc.FailRate}, {"permanent_fail_rate", sc.PermanentFailRate}} {
		if r.v < 0 || r.v > 1 {
			errs = append(errs, fmt.Errorf("%s: %s is a fraction between 0 and 1, not %g", cfg.File, r.key, r.v))
		}
	}
	if sc.FailRate+sc.PermanentFailRate > 1 {
		errs = append(errs, fmt.Errorf("%s: fail_rate + permanent_fail_rate exceeds 1", cfg.File))
	}
	opts := Options{
		LaunchDelay:       sc.LaunchDelay,
		SSHDelay:          sc.SSHDelay,
		StopDelay:         sc.StopDelay,
		SnapshotDelay:     sc.SnapshotDelay,
		FailRate:          sc.FailRate,
		PermanentFailRate: sc.PermanentFailRate,
		StateFile:         sc.StateFile,
	}
	for i, b := range sc.BaseImages {
		if b.ID == "" || b.Name == "" {
			errs = append(errs, fmt.Errorf("%s: base_images[%d]: id and name are required", cfg.File, i))
		}
	}
	opts.BaseImageList = sc.BaseImages
	if sc.SSH != nil {
		ep, err := sc.SSH.endpoint(cfg.File)
		if err != nil {
			errs = append(errs, err)
		}
		opts.SSH = ep
	}
	if sc.Manifest != nil {
		if err := sc.Manifest.options(cfg.File, &opts); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &opener{cloud: New(opts), ask: cfg.Password == clouds.PasswordAsk}, nil
}

// checkSSHKeys refuses unknown keys inside ssh:, which DecodeStrict (top
// level only) lets through.
func checkSSHKeys(cfg clouds.Config) error {
	if cfg.Node == nil || cfg.Node.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(cfg.Node.Content); i += 2 {
		if cfg.Node.Content[i].Value != "ssh" {
			continue
		}
		n := cfg.Node.Content[i+1]
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s:%d:%d: cloud %q: ssh must be a mapping (%s)", cfg.File, n.Line, n.Column, cfg.Name, strings.Join(sshKeys, ", "))
		}
		for j := 0; j+1 < len(n.Content); j += 2 {
			k := n.Content[j]
			if !slices.Contains(sshKeys, k.Value) {
				return fmt.Errorf("%s:%d:%d: cloud %q: unknown key %q in ssh (known: %s)", cfg.File, k.Line, k.Column, cfg.Name, k.Value, strings.Join(sshKeys, ", "))
			}
		}
	}
	return nil
}

func (s *sshConfig) endpoint(file string) (*clouds.Endpoint, error) {
	if s.Host == "" {
		return nil, fmt.Errorf("%s: ssh.host is required", file)
	}
	port := s.Port
	if port == 0 {
		port = 22
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("%s: ssh.port %d is not a port", file, s.Port)
	}
	if s.PrivateKeyFile == "" {
		return nil, fmt.Errorf("%s: ssh.private_key_file is required (the key that logs in to the local sshd)", file)
	}
	pem, err := os.ReadFile(s.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s: ssh.private_key_file: %w", file, err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		// The error never contains the key itself, only what is wrong with it.
		return nil, fmt.Errorf("%s: ssh.private_key_file %s: %w", file, s.PrivateKeyFile, err)
	}
	ep := &clouds.Endpoint{Addr: net.JoinHostPort(s.Host, strconv.Itoa(port)), User: s.User, Signer: signer}
	switch hk := strings.TrimSpace(s.HostKey); hk {
	case "":
		return nil, fmt.Errorf("%s: ssh.host_key is required: the sshd's host key, an authorized_keys line (get it with: ssh-keyscan -t ed25519 %s, and drop the host name in front), "+
			"or first-use to trust the first key it presents (a throwaway container whose key changes; not recommended)", file, s.Host)
	case string(clouds.HostKeyFirstUse):
		// Said in the config, and warned about in every build's log.
		ep.HostKeyPolicy, ep.HostKeySource = clouds.HostKeyFirstUse, clouds.SourceFirstUse
	default:
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
		if err != nil {
			return nil, fmt.Errorf("%s: ssh.host_key: %w (want an authorized_keys line such as \"ssh-ed25519 AAAA...\", or first-use)", file, err)
		}
		ep.HostKeys = []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))}
		ep.HostKeySource, ep.HostKeyPolicy = clouds.SourceConfig, clouds.HostKeyRequire
	}
	return ep, nil
}
