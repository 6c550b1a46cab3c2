package sshhost

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/clouds"
)

// Type is the config's type value for this driver.
const Type = "ssh"

// DefaultPort is the SSH port when the config names none.
const DefaultPort = 22

type config struct {
	Host           string `yaml:"host"`
	Port           int    `yaml:"port"`
	User           string `yaml:"user"` // overrides the spec's ssh_user when set
	PrivateKeyFile string `yaml:"private_key_file"`
	HostKey        string `yaml:"host_key"`
}

// Configure reads a type: ssh cloud's keys. It reads the key file now, so a
// bad path or key fails at start, not in the middle of a build.
func Configure(cfg clouds.Config) (clouds.Opener, error) {
	var c config
	if err := clouds.DecodeStrict(cfg, &c); err != nil {
		return nil, err
	}
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("host is required: the machine's address"))
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is not a TCP port", c.Port))
	}
	var hostKey string
	if strings.TrimSpace(c.HostKey) == "" {
		errs = append(errs, fmt.Errorf("host_key is required: the machine exists, so its host key is known and imagegen pins it rather than trusting whatever answers (get it with: ssh-keyscan -t ed25519 %s, and drop the host name in front)", orPlaceholder(c.Host)))
	} else if _, err := clouds.ParseHostKeyPolicy(c.HostKey, ""); err == nil {
		errs = append(errs, fmt.Errorf("host_key %q: a type ssh cloud's host_key is the machine's key (an authorized_keys line such as \"ssh-ed25519 AAAA...\"), always pinned; require, console and first-use are for openstack and ec2", c.HostKey))
	} else if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.HostKey)); err != nil {
		errs = append(errs, fmt.Errorf("host_key: %w (want an authorized_keys-style line such as \"ssh-ed25519 AAAA...\")", err))
	} else {
		hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	}
	var signer ssh.Signer
	if c.PrivateKeyFile == "" {
		errs = append(errs, errors.New("private_key_file is required: the key imagegen logs in with"))
	} else if b, err := os.ReadFile(c.PrivateKeyFile); err != nil {
		errs = append(errs, fmt.Errorf("private_key_file: %w", err))
	} else if signer, err = ssh.ParsePrivateKey(b); err != nil {
		// The parse error never quotes the key, so it is safe to show.
		errs = append(errs, fmt.Errorf("private_key_file %s: %w (an unencrypted OpenSSH or PEM private key is needed)", c.PrivateKeyFile, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &Cloud{addr: net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), user: c.User, signer: signer, hostKey: hostKey}, nil
}

func orPlaceholder(h string) string {
	if h == "" {
		return "HOST"
	}
	return h
}
