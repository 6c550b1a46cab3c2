package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/imagegen/imagegen/provenance"
)

// runVerify checks an image's signed provenance: the envelope's signature
// with the given public key, and that the image's tags, as its cloud holds
// them now, are the ones the statement signed. Exit 1 on any mismatch.
func runVerify(ctx context.Context, e *env, args []string) error {
	fl := flag.NewFlagSet("verify", flag.ContinueOnError)
	fl.SetOutput(e.stderr)
	keyFile := fl.String("key", "", "the public key `FILE` (PEM), as GET /api/v1/provenance/key serves it (required)")
	server := fl.String("server", "", "the imagegen server's `URL`: where the image's provenance envelope is read")
	envelopeFile := fl.String("envelope", "", "read the envelope from `FILE` instead of --server")
	configFile := fl.String("config", "", "a config `FILE` naming the image's cloud: the image's current tags are read from the cloud (required)")
	cloud := fl.String("cloud", "", "the cloud `NAME` the image is on (required)")
	tokenEnv := fl.String("token-env", "IMAGEGEN_API_TOKEN", "the environment variable holding the API token (unset: no token)")
	fl.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: imagegen verify --key PUB (--server URL | --envelope FILE) --config FILE --cloud NAME IMAGE_ID")
		fmt.Fprintln(e.stderr, "Checks the image's provenance signature with PUB, and that the tags the cloud holds for the image now")
		fmt.Fprintln(e.stderr, "are the ones the statement signed; names each changed tag. Exit 1 on any mismatch.")
		fl.PrintDefaults()
	}
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 || *keyFile == "" || (*server == "") == (*envelopeFile == "") {
		fl.Usage()
		return exitCode(2)
	}
	if *configFile == "" || *cloud == "" {
		fmt.Fprintln(e.stderr, "imagegen verify: --config FILE and --cloud NAME are required: the image's tags are read from the cloud itself, not from imagegen's records")
		return exitCode(2)
	}
	id := fl.Arg(0)
	v, err := provenance.LoadVerifier(*keyFile)
	if err != nil {
		return err
	}
	var envelope []byte
	if *envelopeFile != "" {
		if envelope, err = os.ReadFile(*envelopeFile); err != nil {
			return err
		}
	} else {
		c, err := newAPIClient(e, *server, *tokenEnv)
		if err != nil {
			return err
		}
		if envelope, err = c.fetch(ctx, imagePath(*cloud, id)+"/provenance"); err != nil {
			return fmt.Errorf("the image's provenance: %w", err)
		}
	}
	img, err := describeImage(ctx, e, *configFile, *cloud, id)
	if err != nil {
		return err
	}
	res, err := provenance.VerifyImage(ctx, v, envelope, provenance.Image{Cloud: *cloud, ID: img.ID, Tags: img.Tags})
	if err != nil {
		fmt.Fprintf(e.stdout, "FAIL  provenance: %s\n", visible(err.Error()))
		if errors.Is(err, provenance.ErrWrongKey) || errors.Is(err, provenance.ErrBadSignature) || errors.Is(err, provenance.ErrUnsigned) {
			fmt.Fprintln(e.stdout, "      the statement cannot be trusted: it is not signed by this key as it stands")
		}
		return exitCode(1)
	}
	f := res.Statement.Facts()
	fmt.Fprintf(e.stdout, "ok    signature: %s key %s\n", v.Algorithm(), visible(res.KeyID))
	fmt.Fprintf(e.stdout, "      statement: image %s on cloud %s, %s@%s, generator %s, build %s, built by %s\n",
		visible(f.ImageID), visible(f.Cloud), visible(f.Repo), visible(shortSHA(f.Commit)), visible(f.Generator), visible(f.BuildID), visible(f.BuilderID))
	if !res.OK() {
		for _, c := range res.Changes {
			fmt.Fprintf(e.stdout, "FAIL  tag %s\n", visible(c.String()))
		}
		fmt.Fprintf(e.stdout, "FAIL  the image's current tags on %s differ from its signed provenance\n", visible(*cloud))
		return exitCode(1)
	}
	fmt.Fprintf(e.stdout, "ok    tags: the image's current tags on %s match the signed statement (%s included)\n", visible(*cloud), provenance.TagProvenance)
	return nil
}
