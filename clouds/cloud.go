package clouds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/imagegen/imagegen/internal/secret"
)

// Tags carried by imagegen's resources. Every resource a build creates carries
// TagBuild, so a sweep can find what a crashed worker left behind; images carry
// all of them, so the cloud itself answers "which change made this image".
const (
	TagBuild     = "imagegen:build"
	TagRepo      = "imagegen:repo"
	TagCommit    = "imagegen:commit"
	TagGenerator = "imagegen:generator"
	TagScriptSHA = "imagegen:script-sha256"
	TagBaseImage = "imagegen:base-image"
	TagImageName = "imagegen:image-name"
	// TagProvenance holds the SHA-256 of the image's signed provenance
	// (package provenance's Digest of its DSSE envelope). It is set after
	// Snapshot, through ImageTagger: the statement names the image id, which
	// exists only once the cloud has made the image.
	TagProvenance = "imagegen:provenance-sha256"
	TagCloud      = "imagegen:cloud"
	TagManagedKey = "imagegen" // value "true" on resources some clouds cannot tag otherwise

	// TagManifestSHA is the sha256 of the image's manifest (the CycloneDX
	// JSON document, builder/manifest's SHA256): what the image holds, as
	// the build record and the API keep it. Absent when none was collected.
	TagManifestSHA = "imagegen:manifest-sha256"
)

// Cloud is one configured cloud, opened for one build (with that build's
// credentials). The pipeline calls Launch, then, when Features().Images,
// Stop and Snapshot; it always calls Terminate, and DeleteImage when the build
// failed after Snapshot had recorded an image id.
//
// The methods must be safe for concurrent use across different instances:
// one Cloud serves every build on that cloud in a worker.
type Cloud interface {
	// Features says what this cloud does, so the pipeline can skip what does not apply.
	Features() Features

	// Launch starts one instance of req.Image for req.Build and returns when it is
	// running and reachable over SSH (inst.SSH set), or with an error.
	//
	// Every resource Launch creates (key pair, security group, server, floating IP,
	// process, file) carries the tag TagBuild=req.Build where the cloud has tags, and
	// is appended to inst.Resources the moment the cloud returns its id, before
	// Launch waits on it; inst.ID is set at that moment too. So Terminate(inst)
	// finds everything even when Launch fails or ctx is canceled mid-wait.
	// A canceled ctx makes Launch return promptly with ctx's error.
	Launch(ctx context.Context, req LaunchRequest, inst *Instance) error

	// Stop shuts the instance down so its disk is consistent, and returns when
	// it is stopped. With Features().PoweroffOverSSH the pipeline has already
	// asked the guest to power off; Stop then waits for it (and forces it after a timeout).
	Stop(ctx context.Context, inst *Instance) error

	// Snapshot saves the stopped instance's disk as a new image named req.Name and
	// carrying req.Tags, and returns only when the image is usable (active,
	// available). It records the image id in img.ID the moment the cloud returns
	// it, so a failed or canceled Snapshot leaves the pipeline able to DeleteImage.
	// Instances must not be deleted before their image is usable: Snapshot's
	// return is the signal that Terminate may run.
	Snapshot(ctx context.Context, inst *Instance, req SnapshotRequest, img *Image) error

	// Terminate removes every resource recorded in inst, newest first, and waits
	// until they are gone. It is idempotent: a resource already gone is success,
	// and it must not fail when called twice or after a Launch that failed or
	// created nothing. It is called on a fresh context even when the build was canceled.
	Terminate(ctx context.Context, inst *Instance) error

	// DeleteImage removes an image and what backs it (snapshots, files), for a build
	// that failed after Snapshot recorded img.ID. Idempotent like Terminate.
	DeleteImage(ctx context.Context, img *Image) error

	// Leftovers lists the resources tagged TagBuild=build (every imagegen build's
	// resources when build is ""), images excepted: a finished image is the
	// product, not a leftover. The sweep removes them with Remove.
	Leftovers(ctx context.Context, build string) ([]Resource, error)

	// Remove deletes one resource found by Leftovers. Idempotent.
	Remove(ctx context.Context, r Resource) error
}

// Features says what a cloud does.
type Features struct {
	// Images is false for clouds that run the script and make no image (type ssh).
	Images bool
	// PoweroffOverSSH asks the pipeline to run "poweroff" in the guest before
	// Stop (the local QEMU cloud has no API that shuts a guest down cleanly).
	PoweroffOverSSH bool
}

// LaunchRequest is what a build asks of Launch.
type LaunchRequest struct {
	Build string // build id; tag TagBuild on every resource
	Name  string // a name for the build's resources, unique per build and cloud
	Image string // base image, from the spec
	Size  string // flavor / instance type; "" means the cloud config's default
	User  string // SSH user, from the spec

	// AuthorizedKey is the build's ephemeral public key, in authorized_keys
	// format; the driver installs it for User (key pair or user data).
	AuthorizedKey string
	// HostKey is an SSH host key the build generated. A driver that can inject
	// it (cloud-init ssh_keys, a NoCloud seed) does so and reports its public
	// half in inst.SSH.HostKeys, so the pipeline pins it.
	HostKey HostKey
	// SSHTimeout is how long the pipeline will wait for SSH once Launch has
	// returned (0: DefaultSSHTimeout). A driver reading host keys from the
	// console under HostKeyConsole waits for them at least as long.
	SSHTimeout time.Duration

	Tags map[string]string // tags for the instance: TagBuild, TagGenerator, TagImageName...

	Log     *slog.Logger // the build's log for driver messages; never nil
	Console io.Writer    // where a driver may copy the VM's console; may be nil
}

// HostKey is a generated SSH host key pair.
type HostKey struct {
	PrivatePEM secret.String // OpenSSH PEM of the private key
	Public     string        // authorized_keys line of the public key
}

// Instance records what Launch made. Drivers fill it as they go.
type Instance struct {
	Build     string     // the build id
	ID        string     // the instance id, set the moment the cloud returns it
	Resources []Resource // everything created for the instance, in creation order
	SSH       *Endpoint  // set when the instance is reachable; nil: no SSH (simulated)
}

// Add records a resource the cloud has just created.
func (i *Instance) Add(r Resource) {
	if r.Build == "" {
		r.Build = i.Build
	}
	i.Resources = append(i.Resources, r)
}

// Endpoint is how the pipeline reaches an instance.
type Endpoint struct {
	Addr string // host:port

	// HostKeys are the authorized_keys lines of the keys the server may present;
	// the pipeline refuses any other. Empty means the driver could learn nothing:
	// the pipeline then refuses to connect, unless HostKeyPolicy is
	// HostKeyFirstUse, when it trusts the first key it sees and warns.
	HostKeys []string
	// HostKeySource says where HostKeys came from: SourceInjected,
	// SourceConsole, SourceConfig; SourceFirstUse when there are none.
	HostKeySource string
	// HostKeyPolicy is the cloud's host_key policy. Only HostKeyFirstUse lets
	// the pipeline connect without HostKeys; the zero value refuses, like
	// HostKeyRequire and HostKeyConsole.
	HostKeyPolicy HostKeyPolicy

	// User overrides the spec's ssh_user when set.
	User string
	// Signer authenticates instead of the build's ephemeral key when set
	// (type ssh uses the configured private key).
	Signer ssh.Signer
}

// Resource is one thing in a cloud that a build created.
type Resource struct {
	Kind  string `json:"kind"`  // e.g. KindServer, KindKeyPair
	ID    string `json:"id"`    // the cloud's id for it
	Name  string `json:"name"`  // its name, where it has one
	Build string `json:"build"` // the build that created it
}

// Resource kinds shared by drivers; drivers may add their own.
const (
	KindServer        = "server"
	KindKeyPair       = "key-pair"
	KindSecurityGroup = "security-group"
	KindFloatingIP    = "floating-ip"
	KindVolume        = "volume"
	KindImage         = "image"
	KindSnapshot      = "snapshot"
	KindProcess       = "process"
	KindFile          = "file"
)

// SnapshotRequest is what a build asks of Snapshot.
type SnapshotRequest struct {
	Name string            // the new image's name
	Tags map[string]string // provenance: TagRepo, TagCommit, TagGenerator, TagScriptSHA, TagBaseImage, TagBuild, TagManifestSHA
	Log  *slog.Logger      // never nil
}

// Image is an image a build made.
type Image struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Tags      map[string]string `json:"tags,omitempty"`
	Location  string            `json:"location,omitempty"`  // where a file-backed image lives (qemu)
	Resources []Resource        `json:"resources,omitempty"` // what backs it (EBS snapshots), for DeleteImage
}

// ImageLister is implemented by clouds that can list the images builds made.
// The sweep uses it to remove an image whose build attempt died after Snapshot
// created it and before the build recorded it (the retry made another, or
// failed): an image no build record names is a leak, not a product.
type ImageLister interface {
	// BuildImages lists the images tagged TagBuild=build (every imagegen
	// build's images when build is ""), usable or half-made.
	BuildImages(ctx context.Context, build string) ([]Image, error)
}

// ManifestSource is implemented by clouds that know what their instances
// hold without being asked over SSH: the simulated cloud without ssh:, whose
// "instances" run no script. The pipeline asks it for the manifest after the
// script, only when the instance has no SSH endpoint (inst.SSH nil); with an
// endpoint it collects the manifest from the instance itself, whatever the
// cloud implements.
type ManifestSource interface {
	// Manifest returns what inst holds as a CycloneDX JSON document (the
	// format builder/manifest reads: deb, rpm or apk package URLs, the OS as
	// the metadata component), or an error saying why there is none. The
	// document is untrusted input to the pipeline like any collected one:
	// it is decoded with the same bounds. It must not change inst.
	// A cloud that knows nothing of inst returns an error wrapping
	// ErrNoManifest: the pipeline then records no manifest, quietly.
	Manifest(ctx context.Context, inst *Instance) ([]byte, error)
}

// ErrNoManifest says a ManifestSource has no manifest to give (none configured).
var ErrNoManifest = errors.New("no manifest")
