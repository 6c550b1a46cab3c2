// Package clouds is the contract every cloud driver meets (Cloud), with the errors, retries and registry they share.
// It must not know any driver, GitHub, Redis or the build pipeline: drivers import it, never the reverse.
//
// # Writing a driver
//
// A driver is a package under clouds/ (openstack, ec2, qemu, sshhost, simulated) that
// exports Type and Configure, which the binary registers (cmd/imagegen/drivers.go).
// It passes the conformance suite clouds/cloudtest against a fake or emulator of its
// cloud (openstack/openstacktest, ec2/ec2test), and keeps its code in files named by
// role, so a reader finds "how does ec2 stop an instance" without a search:
//
//	driver.go     the package doc; Opener and Open (log in, make the API clients),
//	              the Cloud type, Features, and what every step uses (retry, names, tags)
//	config.go     Type, the config's keys and defaults, Options (test tuning),
//	              Configure and New: validation, no network
//	launch.go     Launch, then its named steps, then their look-ups and helpers
//	console.go    the VM's console: host keys cloud-init prints, copying it to the build
//	lifecycle.go  waiting for instance states, Stop, Terminate
//	images.go     Snapshot, waiting for an image, DeleteImage, BuildImages (ImageLister),
//	              DescribeImage and TagImage (ImageDescriber, ImageTagger)
//	baseimages.go FindImages (ImageFinder): base images by a filter
//	leftovers.go  Leftovers and Remove: a build's resources found by tag and removed one
//	              at a time, by the sweep and by Terminate
//	errors.go     the cloud's API errors mapped to a Kind (transient, quota, auth, ...)
//
// A driver with little to do uses fewer files (sshhost: config.go and driver.go), and
// one with more adds files named for what they hold (qemu: accel.go, the accelerator
// probe; seed.go, the NoCloud seed; proc.go, QEMU processes; simulated: faults.go,
// the fault injection; state.go, the state file). Every driver that launches runs
// clouds/cloudtest in its conformance_test.go.
//
// This package's own files: cloud.go, the Cloud contract and what it passes; errors.go,
// Kind and Error; retry.go, Backoff, Retry, Poll, Within and Sleep; poller.go, Poller: one
// batched look at every resource an account's builds wait on; shared.go, SharedLookups:
// one look-up (a base image) for the builds that want it at once; registry.go, the
// registry and the strict decoding of a cloud's config entry; hostkey.go, the host_key
// policies and the host-key step drivers that inject or read the console share;
// describe.go, the optional ImageDescriber and ImageTagger (an existing image's tags,
// read for trace and verify, set for provenance and the test's result); baseimage.go,
// image filters, ImageFinder and ResolveImage; tagger.go, the lifecycle's tag values.
package clouds
