package main

import "github.com/imagegen/imagegen/clouds"

// registry lists every cloud driver the binary offers.
func registry() *clouds.Registry {
	r := clouds.NewRegistry()
	return r
}
