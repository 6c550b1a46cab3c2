package qemu

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Type is the config's type value for this driver.
const Type = "qemu"

// Defaults for the config's keys.
const (
	DefaultMemory          = 1024 // MiB
	DefaultCPUs            = 1
	DefaultBootTimeout     = 5 * time.Minute
	DefaultShutdownTimeout = 2 * time.Minute
)

// config is a type: qemu cloud's keys.
type config struct {
	Dir             string        `yaml:"dir"`              // base images, built images, work/ for running builds
	Memory          int           `yaml:"memory"`           // MiB per VM
	CPUs            int           `yaml:"cpus"`             // vCPUs per VM
	Accel           string        `yaml:"accel"`            // auto | kvm | tcg
	CPUModel        string        `yaml:"cpu_model"`        // QEMU's -cpu; default: what the accelerator probe chose
	QEMU            string        `yaml:"qemu"`             // qemu-system-x86_64 binary
	QEMUImg         string        `yaml:"qemu_img"`         // qemu-img binary
	BootTimeout     time.Duration `yaml:"boot_timeout"`     // from start to an SSH banner
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"` // from poweroff to QEMU's exit, then it is killed
}

// Configure reads a type: qemu cloud's keys. It starts nothing and does not
// look for QEMU, so a config naming a local cloud validates on machines
// without QEMU; Launch says what is missing.
func Configure(cfg clouds.Config) (clouds.Opener, error) {
	var c config
	if err := clouds.DecodeStrict(cfg, &c); err != nil {
		return nil, err
	}
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("dir is required: where base images live and built images go"))
	} else if abs, err := filepath.Abs(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("dir: %w", err))
	} else {
		c.Dir = abs
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	if c.Memory < 64 {
		errs = append(errs, fmt.Errorf("memory %d: want MiB, at least 64", c.Memory))
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.CPUs < 1 || c.CPUs > 256 {
		errs = append(errs, fmt.Errorf("cpus %d: want 1 to 256", c.CPUs))
	}
	switch c.Accel {
	case "":
		c.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		errs = append(errs, fmt.Errorf("accel %q: want auto, kvm or tcg", c.Accel))
	}
	if strings.ContainsAny(c.CPUModel, " \t\n") || strings.HasPrefix(c.CPUModel, "-") {
		errs = append(errs, fmt.Errorf("cpu_model %q: want a QEMU -cpu value such as host, host,-arch-capabilities or max", c.CPUModel))
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.QEMUImg == "" {
		c.QEMUImg = "qemu-img"
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.BootTimeout < 0 || c.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("boot_timeout and shutdown_timeout must be positive durations"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return newCloud(c), nil
}
