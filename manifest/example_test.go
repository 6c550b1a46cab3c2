package manifest_test

import (
	"fmt"

	"github.com/imagegen/imagegen/manifest"
)

func debianManifest(kernel string, pkgs ...manifest.Package) *manifest.Manifest {
	return &manifest.Manifest{OS: manifest.OS{ID: "debian", VersionID: "12"}, Kernel: kernel, Arch: "x86_64", Packages: pkgs}
}

// Three clouds of one build, compared for the check run.
func ExampleAcrossClouds() {
	bash := manifest.Package{Manager: manifest.Deb, Name: "bash", Version: "5.2.15-2+b7", Arch: "amd64"}
	ssl := func(v string) manifest.Package {
		return manifest.Package{Manager: manifest.Deb, Name: "openssl", Version: v, Arch: "amd64"}
	}
	d, err := manifest.AcrossClouds([]manifest.CloudManifest{
		{Cloud: "ec2-us-east-1", Manifest: debianManifest("6.1.0-26-cloud-amd64", bash, ssl("3.0.15-1~deb12u1"))},
		{Cloud: "hotel-openstack", Manifest: debianManifest("6.1.0-26-cloud-amd64", bash, ssl("3.0.14-1~deb12u2"))},
		{Cloud: "sierra-openstack", Manifest: debianManifest("6.1.0-26-cloud-amd64", bash, ssl("3.0.15-1~deb12u1"))},
	}, manifest.DriftOptions{Ignore: []string{"linux-image-*", "cloud-init"}})
	if err != nil {
		panic(err)
	}
	fmt.Print(d.Markdown(manifest.RenderOptions{}))
	// Output:
	// The 3 clouds differ: 1 package differs (2 packages compared).
	//
	// | Package | `ec2-us-east-1` | `hotel-openstack` | `sierra-openstack` | Newest |
	// |---|---|---|---|---|
	// | `openssl` | `3.0.15-1~deb12u1` | `3.0.14-1~deb12u2` | `3.0.15-1~deb12u1` | `ec2-us-east-1`, `sierra-openstack` |
}

// This image against the previous one on the same cloud, for the CLI.
func ExampleOverTime() {
	bash := manifest.Package{Manager: manifest.Deb, Name: "bash", Version: "5.2.15-2+b7", Arch: "amd64"}
	dstat := manifest.Package{Manager: manifest.Deb, Name: "dstat", Version: "0.7.4-6.1", Arch: "all"}
	c, err := manifest.OverTime(debianManifest("6.1.0-26-cloud-amd64", bash), debianManifest("6.1.0-26-cloud-amd64", bash, dstat), manifest.DriftOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Print(c.Text(manifest.RenderOptions{}))
	// Output:
	// Since the previous image: 1 added (2 packages now).
	//
	// PACKAGE  CHANGE  BEFORE  NOW
	// dstat    added   -       0.7.4-6.1
}
