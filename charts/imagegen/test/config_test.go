package charttest

import (
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/clouds/sshhost"
	"github.com/imagegen/imagegen/config"
)

// serviceError is a config that loads but that serve and worker refuse.
type serviceError struct{ err error }

func (e *serviceError) Error() string { return e.err.Error() }
func (e *serviceError) Unwrap() error { return e.err }

// loadConfig loads a config as `imagegen serve` and `imagegen worker` do, with
// every cloud driver imagegen has.
func loadConfig(data []byte, lookup func(string) (string, bool)) error {
	reg := clouds.NewRegistry()
	reg.Register(simulated.Type, simulated.Configure)
	reg.Register(openstack.Type, openstack.Configure)
	reg.Register(ec2.Type, ec2.Configure)
	reg.Register(qemu.Type, qemu.Configure)
	reg.Register(sshhost.Type, sshhost.Configure)
	cfg, err := config.Parse(data, "imagegen.yaml", reg, lookup)
	if err != nil {
		return err
	}
	if err := cfg.CheckService(); err != nil {
		return &serviceError{err}
	}
	return nil
}
