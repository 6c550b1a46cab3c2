package openstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	osclouds "github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"github.com/imagegen/imagegen/clouds"
)

// Type is the server config's type for this driver.
const Type = "openstack"

// Defaults for the timeouts a config may leave out.
const (
	DefaultSSHPort        = 22
	DefaultBootTimeout    = 20 * time.Minute
	DefaultStopTimeout    = 10 * time.Minute
	DefaultImageTimeout   = 60 * time.Minute
	DefaultDeleteTimeout  = 10 * time.Minute
	DefaultConsoleTimeout = 2 * time.Minute
	DefaultRequestTimeout = 60 * time.Second
)

// Config is a cloud entry of type openstack in the server config.
type Config struct {
	// Cloud names the clouds.yaml entry (required).
	Cloud string `yaml:"cloud"`
	// CloudsFile is an explicit clouds.yaml path; without it OS_CLIENT_CONFIG_FILE
	// and the usual locations (./, ~/.config/openstack/, /etc/openstack/) are searched.
	CloudsFile string `yaml:"clouds_file"`
	// Region overrides clouds.yaml's region_name.
	Region string `yaml:"region"`
	// Network is the name or id of the network servers attach to; empty lets Nova choose.
	Network string `yaml:"network"`
	// Flavor is the default size, by name or id, for specs that give none.
	Flavor string `yaml:"flavor"`
	// FloatingIPPool is the external network (name or id) to take a floating IP
	// from, for when the server's own network is not reachable from imagegen.
	FloatingIPPool   string   `yaml:"floating_ip_pool"`
	SecurityGroups   []string `yaml:"security_groups"`
	AvailabilityZone string   `yaml:"availability_zone"`
	UseConfigDrive   bool     `yaml:"use_config_drive"`
	// VolumeSize, in GB, boots from a new volume of that size instead of local disk.
	VolumeSize int `yaml:"volume_size"`
	// SSHPort is the port imagegen connects to; default 22.
	SSHPort int `yaml:"ssh_port"`
	// InjectHostKey installs the build's generated host key through cloud-init
	// (default true). Set false for images whose cloud-init cannot: the host
	// keys are then read from the console log.
	InjectHostKey *bool `yaml:"inject_host_key"`
	// HostKey is the host key policy (default console): require (only the
	// injected key), console (the injected key, else the console's; none: the
	// launch fails) or first-use (as console, else trust the first key seen).
	HostKey clouds.HostKeyPolicy `yaml:"host_key"`

	BootTimeout    time.Duration `yaml:"boot_timeout"`    // waiting for ACTIVE
	StopTimeout    time.Duration `yaml:"stop_timeout"`    // waiting for SHUTOFF
	ImageTimeout   time.Duration `yaml:"image_timeout"`   // waiting for the image to be active
	DeleteTimeout  time.Duration `yaml:"delete_timeout"`  // waiting for a deleted server to be gone
	ConsoleTimeout time.Duration `yaml:"console_timeout"` // reading host keys from the console log (host_key: console reads it for at least the SSH timeout)
	RequestTimeout time.Duration `yaml:"request_timeout"` // one API request
}

// Options tune the driver for tests; the zero value means the defaults.
type Options struct {
	Poll  clouds.Backoff // polling for state changes: the account's pollers look every Max (default 1s), the first time after Initial
	Retry clouds.Backoff // retrying transient API errors; default clouds.DefaultRetry capped at 3s
	// ImageNotFoundTries is how many 404s in a row Glance may answer for a new
	// image before the snapshot fails; default 5.
	ImageNotFoundTries int
	// HTTPClient replaces the default client (its Timeout is then its own).
	HTTPClient *http.Client
	// Logger gets the driver's own messages outside any build; default slog.Default().
	Logger *slog.Logger
}

// Configure reads a cloud entry of type openstack: its keys, then its clouds.yaml
// entry. It reads files but never the network.
func Configure(cfg clouds.Config) (clouds.Opener, error) {
	var c Config
	if err := clouds.DecodeStrict(cfg, &c); err != nil {
		return nil, err
	}
	return New(cfg.Name, c, cfg.Password == clouds.PasswordAsk, Options{})
}

// New validates c (named name in the server config) and reads its clouds.yaml
// entry. ask means the password comes with each build: one in clouds.yaml is ignored.
func New(name string, c Config, ask bool, opts Options) (*Opener, error) {
	if c.Cloud == "" {
		return nil, errors.New(`"cloud" is required: the name of an entry in clouds.yaml`)
	}
	if c.VolumeSize < 0 {
		return nil, fmt.Errorf("volume_size %d: must be a positive number of GB", c.VolumeSize)
	}
	if c.SSHPort == 0 {
		c.SSHPort = DefaultSSHPort
	}
	if c.SSHPort < 0 || c.SSHPort > 65535 {
		return nil, fmt.Errorf("ssh_port %d: not a port", c.SSHPort)
	}
	var err error
	if c.HostKey, err = clouds.ParseHostKeyPolicy(string(c.HostKey), clouds.HostKeyConsole); err != nil {
		return nil, err
	}
	if c.HostKey == clouds.HostKeyRequire && c.InjectHostKey != nil && !*c.InjectHostKey {
		return nil, errors.New("host_key: require needs inject_host_key: true: only an injected key is known before imagegen first connects (host_key: console reads it from the console)")
	}
	if err := clouds.FillDurations(
		clouds.DurationSetting{Key: "boot_timeout", Value: &c.BootTimeout, Default: DefaultBootTimeout},
		clouds.DurationSetting{Key: "stop_timeout", Value: &c.StopTimeout, Default: DefaultStopTimeout},
		clouds.DurationSetting{Key: "image_timeout", Value: &c.ImageTimeout, Default: DefaultImageTimeout},
		clouds.DurationSetting{Key: "delete_timeout", Value: &c.DeleteTimeout, Default: DefaultDeleteTimeout},
		clouds.DurationSetting{Key: "console_timeout", Value: &c.ConsoleTimeout, Default: DefaultConsoleTimeout},
		clouds.DurationSetting{Key: "request_timeout", Value: &c.RequestTimeout, Default: DefaultRequestTimeout},
	); err != nil {
		return nil, err
	}
	popts := []osclouds.ParseOption{osclouds.WithCloudName(c.Cloud)}
	if c.CloudsFile != "" {
		popts = append(popts, osclouds.WithLocations(c.CloudsFile))
	}
	if c.Region != "" {
		popts = append(popts, osclouds.WithRegion(c.Region))
	}
	ao, eo, tlsConfig, err := osclouds.Parse(popts...)
	if err != nil {
		return nil, fmt.Errorf("clouds.yaml entry %q: %w", c.Cloud, err)
	}
	if ao.IdentityEndpoint == "" {
		return nil, fmt.Errorf("clouds.yaml entry %q has no auth.auth_url", c.Cloud)
	}
	if ask {
		// password: ask: whatever clouds.yaml or secure.yaml say, the password
		// is the one the build brings.
		ao.Password = ""
	}
	// Builds outlive tokens (image uploads take an hour on slow clouds).
	ao.AllowReauth = true
	if opts.Poll == (clouds.Backoff{}) {
		// One poller looks for every build of the account: it can look
		// every second.
		opts.Poll = clouds.DefaultPoll
		opts.Poll.Max = time.Second
	}
	if opts.Retry == (clouds.Backoff{}) {
		opts.Retry = clouds.DefaultRetry
		opts.Retry.Max = 3 * time.Second
	}
	if opts.ImageNotFoundTries == 0 {
		opts.ImageNotFoundTries = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Opener{name: name, cfg: c, ask: ask, auth: ao, endpoint: eo, tls: tlsConfig, opts: opts}, nil
}

// Config returns the validated config, defaults filled in.
func (o *Opener) Config() Config { return o.cfg }
