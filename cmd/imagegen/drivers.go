package main

import (
	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/ec2"
	"github.com/imagegen/imagegen/clouds/openstack"
	"github.com/imagegen/imagegen/clouds/qemu"
	"github.com/imagegen/imagegen/clouds/simulated"
	"github.com/imagegen/imagegen/clouds/sshhost"
)

// registry lists every cloud driver the binary offers.
func registry() *clouds.Registry {
	r := clouds.NewRegistry()
	r.Register(sshhost.Type, sshhost.Configure)
	r.Register(simulated.Type, simulated.Configure)
	r.Register(ec2.Type, ec2.Configure)
	r.Register(openstack.Type, openstack.Configure)
	r.Register(qemu.Type, qemu.Configure)
	return r
}
