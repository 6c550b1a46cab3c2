package ec2

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/imagegen/imagegen/clouds"
)

// Type is the server config's type for this driver.
const Type = "ec2"

// Defaults for what a config may leave out.
const (
	DefaultSSHPort        = 22
	DefaultInstanceType   = "t3.micro"
	DefaultCheckIPURL     = "https://checkip.amazonaws.com/"
	DefaultBootTimeout    = 15 * time.Minute
	DefaultStopTimeout    = 10 * time.Minute
	DefaultImageTimeout   = 60 * time.Minute
	DefaultDeleteTimeout  = 10 * time.Minute
	DefaultConsoleTimeout = 3 * time.Minute
	DefaultRequestTimeout = 60 * time.Second
	DefaultPollInterval   = time.Second
	DefaultMaxAttempts    = 10
)

// Config is a cloud entry of type ec2 in the server config.
type Config struct {
	// Region is the AWS region, or any name an EC2-compatible cloud signs with (required).
	Region string `yaml:"region"`
	// Endpoint is the EC2 API URL of an EC2-compatible cloud (the client's BaseEndpoint);
	// empty means AWS's own endpoint for Region.
	Endpoint string `yaml:"endpoint"`
	// Profile names a shared config/credentials profile (~/.aws/config).
	Profile string `yaml:"profile"`
	// AccessKeyID pairs with the secret key a password: ask build brings; without it
	// the default chain's access key id is used.
	AccessKeyID string `yaml:"access_key_id"`

	SubnetID         string   `yaml:"subnet_id"`
	SecurityGroupIDs []string `yaml:"security_group_ids"`
	// InstanceType is the default size for specs that give none.
	InstanceType string `yaml:"instance_type"`
	// AssociatePublicIP, when set, launches through a network interface that
	// asks for (or refuses) a public address, whatever the subnet's default.
	AssociatePublicIP  *bool  `yaml:"associate_public_ip"`
	IAMInstanceProfile string `yaml:"iam_instance_profile"` // name or ARN
	VolumeSize         int32  `yaml:"volume_size"`          // root volume, GiB
	VolumeType         string `yaml:"volume_type"`          // gp3, gp2, io1, ...
	// UsePrivateIP connects to the private address even when there is a public one
	// (workers inside the VPC).
	UsePrivateIP bool `yaml:"use_private_ip"`
	// SSHPort is the port imagegen connects to and the temporary group opens.
	SSHPort int `yaml:"ssh_port"`
	// SSHCIDRs are the address ranges the temporary security group lets SSH in
	// from. Without them the worker's public address is asked of CheckIPURL.
	SSHCIDRs   []string `yaml:"ssh_cidrs"`
	CheckIPURL string   `yaml:"checkip_url"`
	// StopInstance stops the instance before CreateImage (default true). When
	// false, CreateImage reboots it, so the disk is still consistent.
	StopInstance *bool `yaml:"stop_instance"`
	// InjectHostKey installs the build's generated host key through cloud-init
	// (default true). Set false for images whose cloud-init cannot: the host
	// keys are then read from the console.
	InjectHostKey *bool `yaml:"inject_host_key"`
	// HostKey is the host key policy (default console): require (only the
	// injected key), console (the injected key, else the console's; none: the
	// launch fails) or first-use (as console, else trust the first key seen).
	HostKey clouds.HostKeyPolicy `yaml:"host_key"`

	BootTimeout    time.Duration `yaml:"boot_timeout"`    // waiting for running
	StopTimeout    time.Duration `yaml:"stop_timeout"`    // waiting for stopped
	ImageTimeout   time.Duration `yaml:"image_timeout"`   // waiting for the image to be available
	DeleteTimeout  time.Duration `yaml:"delete_timeout"`  // termination, DependencyViolation on the group
	ConsoleTimeout time.Duration `yaml:"console_timeout"` // host keys on the console (host_key: console reads it for at least the SSH timeout)
	RequestTimeout time.Duration `yaml:"request_timeout"` // one API request
	// PollInterval is the longest wait between two looks at a changing resource;
	// the SDK waiters' 15 s default wastes minutes per build.
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxAttempts bounds the SDK's retries of throttled and 5xx requests.
	MaxAttempts int `yaml:"max_attempts"`
}

// Options tune the driver for tests; the zero value means the defaults.
type Options struct {
	Poll  clouds.Backoff // polling; default clouds.DefaultPoll capped at PollInterval
	Retry clouds.Backoff // retrying DependencyViolation and other transient errors
	// MaxBackoff caps the SDK retryer's wait between attempts; default 20s.
	MaxBackoff time.Duration
	// NoRetryQuota lifts the SDK's client-side retry token bucket.
	NoRetryQuota bool
	// Credentials replaces the default chain (for tests).
	Credentials aws.CredentialsProvider
	// HTTPClient replaces the default client.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

var (
	// awsRegion is the shape of AWS's own region names, for catching a typo or a
	// research cloud's region given without its endpoint.
	awsRegion  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	volumeType = map[string]bool{"standard": true, "gp2": true, "gp3": true, "io1": true, "io2": true, "st1": true, "sc1": true}
)

// Configure reads a cloud entry of type ec2. It never reaches the network.
func Configure(cfg clouds.Config) (clouds.Opener, error) {
	var c Config
	if err := clouds.DecodeStrict(cfg, &c); err != nil {
		return nil, err
	}
	return New(cfg.Name, c, cfg.Password == clouds.PasswordAsk, Options{})
}

// New validates c (named name in the server config). ask means the secret
// access key comes with each build.
func New(name string, c Config, ask bool, opts Options) (*Opener, error) {
	if c.Region == "" {
		return nil, errors.New(`"region" is required (an AWS region, or the region name an EC2-compatible cloud signs with)`)
	}
	if c.Endpoint == "" && !awsRegion.MatchString(c.Region) {
		return nil, fmt.Errorf("region %q is not an AWS region: for an EC2-compatible cloud set endpoint too", c.Region)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: want an http(s) URL", c.Endpoint)
		}
	}
	if c.InstanceType == "" {
		c.InstanceType = DefaultInstanceType
	}
	if c.VolumeSize < 0 {
		return nil, fmt.Errorf("volume_size %d: must be a positive number of GiB", c.VolumeSize)
	}
	if c.VolumeType != "" && !volumeType[c.VolumeType] {
		return nil, fmt.Errorf("volume_type %q: want one of standard, gp2, gp3, io1, io2, st1, sc1", c.VolumeType)
	}
	if c.SSHPort == 0 {
		c.SSHPort = DefaultSSHPort
	}
	if c.SSHPort < 0 || c.SSHPort > 65535 {
		return nil, fmt.Errorf("ssh_port %d: not a port", c.SSHPort)
	}
	for _, cidr := range c.SSHCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return nil, fmt.Errorf("ssh_cidrs: %w", err)
		}
	}
	if len(c.SSHCIDRs) > 0 && len(c.SecurityGroupIDs) > 0 {
		return nil, errors.New("ssh_cidrs and security_group_ids exclude each other: ssh_cidrs shape the temporary group made when no group is given")
	}
	if c.CheckIPURL == "" {
		c.CheckIPURL = DefaultCheckIPURL
	}
	if u, err := url.Parse(c.CheckIPURL); err != nil || u.Host == "" {
		return nil, fmt.Errorf("checkip_url %q: want an http(s) URL", c.CheckIPURL)
	}
	if c.StopInstance == nil {
		t := true
		c.StopInstance = &t
	}
	if c.InjectHostKey == nil {
		t := true
		c.InjectHostKey = &t
	}
	var err error
	if c.HostKey, err = clouds.ParseHostKeyPolicy(string(c.HostKey), clouds.HostKeyConsole); err != nil {
		return nil, err
	}
	if c.HostKey == clouds.HostKeyRequire && !*c.InjectHostKey {
		return nil, errors.New("host_key: require needs inject_host_key: true: only an injected key is known before imagegen first connects (host_key: console reads it from the console)")
	}
	if err := clouds.FillDurations(
		clouds.DurationSetting{Key: "boot_timeout", Value: &c.BootTimeout, Default: DefaultBootTimeout},
		clouds.DurationSetting{Key: "stop_timeout", Value: &c.StopTimeout, Default: DefaultStopTimeout},
		clouds.DurationSetting{Key: "image_timeout", Value: &c.ImageTimeout, Default: DefaultImageTimeout},
		clouds.DurationSetting{Key: "delete_timeout", Value: &c.DeleteTimeout, Default: DefaultDeleteTimeout},
		clouds.DurationSetting{Key: "console_timeout", Value: &c.ConsoleTimeout, Default: DefaultConsoleTimeout},
		clouds.DurationSetting{Key: "request_timeout", Value: &c.RequestTimeout, Default: DefaultRequestTimeout},
		clouds.DurationSetting{Key: "poll_interval", Value: &c.PollInterval, Default: DefaultPollInterval},
	); err != nil {
		return nil, err
	}
	if c.MaxAttempts < 0 {
		return nil, fmt.Errorf("max_attempts %d: must be positive", c.MaxAttempts)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if opts.Poll == (clouds.Backoff{}) {
		opts.Poll = clouds.DefaultPoll
		opts.Poll.Max = c.PollInterval
	}
	if opts.Retry == (clouds.Backoff{}) {
		opts.Retry = clouds.Backoff{Initial: time.Second, Max: c.PollInterval, Factor: 1.5, Attempts: 6}
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 20 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Opener{name: name, cfg: c, ask: ask, opts: opts}, nil
}

// Config returns the validated config, defaults filled in.
func (o *Opener) Config() Config { return o.cfg }
