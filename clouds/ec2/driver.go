// Package ec2 builds images on Amazon EC2 and EC2-compatible clouds (by endpoint), with aws-sdk-go-v2 and its credential chain.
// It knows clouds and cloudinit only, not builds, GitHub, Redis or other drivers; what it creates carries the build's tag.
package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
)

// Opener is a validated ec2 cloud config.
type Opener struct {
	name  string
	cfg   Config
	ask   bool
	opts  Options
	accts accounts // what the builds of one set of credentials share
}

// Open builds the EC2 client: credentials from the default chain (or the
// build's secret key for a password: ask cloud). It reaches no EC2 API.
func (o *Opener) Open(ctx context.Context, cred clouds.Credentials) (clouds.Cloud, error) {
	op := "open " + o.name
	lo := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(o.cfg.Region),
	}
	if o.cfg.Profile != "" {
		lo = append(lo, awsconfig.WithSharedConfigProfile(o.cfg.Profile))
	}
	if o.opts.HTTPClient != nil {
		lo = append(lo, awsconfig.WithHTTPClient(o.opts.HTTPClient))
	} else {
		lo = append(lo, awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(o.cfg.RequestTimeout)))
	}
	if o.opts.Credentials != nil {
		lo = append(lo, awsconfig.WithCredentialsProvider(o.opts.Credentials))
	}
	key := accountKey("", "")
	if o.ask {
		if cred.Password.IsZero() {
			return nil, &clouds.Error{Kind: clouds.KindAuth, Op: op,
				Err: errors.New("this cloud is password: ask and the build brought no secret access key")}
		}
		akid := o.cfg.AccessKeyID
		if akid == "" {
			// The chain may know the key id (AWS_ACCESS_KEY_ID, a profile) while
			// the secret stays with the user.
			base, err := awsconfig.LoadDefaultConfig(ctx, lo...)
			if err != nil {
				return nil, &clouds.Error{Kind: clouds.KindAuth, Op: op, Err: err}
			}
			if base.Credentials != nil {
				if c, err := base.Credentials.Retrieve(ctx); err == nil {
					akid = c.AccessKeyID
				}
			}
			if akid == "" {
				return nil, &clouds.Error{Kind: clouds.KindAuth, Op: op, Err: errors.New("no access key id to pair with the build's secret key"),
					Hint: "set access_key_id in the cloud config or AWS_ACCESS_KEY_ID"}
			}
		}
		lo = append(lo, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(akid, cred.Password.Reveal(), "")))
		key = accountKey(akid, cred.Password.Reveal())
	}
	acct := o.accts.Get(key, o.newAccount)
	lo = append(lo, awsconfig.WithRetryer(func() aws.Retryer { return acct.retryer }))
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, &clouds.Error{Kind: clouds.KindAuth, Op: op, Err: fmt.Errorf("AWS config: %w", err),
			Hint: "check profile, the shared config files and the AWS_* environment"}
	}
	client := ec2.NewFromConfig(awsCfg, func(eo *ec2.Options) {
		if o.cfg.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.cfg.Endpoint)
		}
	})
	return &Cloud{name: o.name, cfg: o.cfg, opts: o.opts, api: client, acct: acct}, nil
}

// API lists the EC2 calls the driver makes, so the IAM policy in docs/ec2.md
// and the fake can be checked against one list.
type API interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSubnets(context.Context, *ec2.DescribeSubnetsInput, ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	ImportKeyPair(context.Context, *ec2.ImportKeyPairInput, ...func(*ec2.Options)) (*ec2.ImportKeyPairOutput, error)
	DescribeKeyPairs(context.Context, *ec2.DescribeKeyPairsInput, ...func(*ec2.Options)) (*ec2.DescribeKeyPairsOutput, error)
	DeleteKeyPair(context.Context, *ec2.DeleteKeyPairInput, ...func(*ec2.Options)) (*ec2.DeleteKeyPairOutput, error)
	CreateSecurityGroup(context.Context, *ec2.CreateSecurityGroupInput, ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error)
	AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	DeleteSecurityGroup(context.Context, *ec2.DeleteSecurityGroupInput, ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
	StopInstances(context.Context, *ec2.StopInstancesInput, ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

var _ API = (*ec2.Client)(nil)

// Cloud is an opened EC2 cloud: one client shared by the builds on it.
type Cloud struct {
	name string
	cfg  Config
	opts Options
	api  API
	acct *account // the retryer and pollers of the cloud's credentials

	mu       sync.Mutex
	sshCIDRs []string // learned once from CheckIPURL
}

var _ clouds.Cloud = (*Cloud)(nil)

// Features reports that EC2 makes images and stops instances through its API.
func (c *Cloud) Features() clouds.Features { return clouds.Features{Images: true} }

// retry runs fn, classified, with the driver's retry policy, on top of the
// SDK's own retries: a throttling storm outlasts the SDK's attempts.
func (c *Cloud) retry(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		return classify(op, fn(ctx))
	})
}

// lookupTimeout bounds the look-ups that find what a canceled call may have created.
const lookupTimeout = 30 * time.Second

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// resourceName names the build's key pair and security group: the request's
// name, which is unique per build and cloud.
func resourceName(req clouds.LaunchRequest) string {
	n := req.Name
	if n == "" {
		n = "imagegen-" + req.Build
	}
	n = unsafeName.ReplaceAllString(n, "_")
	if len(n) > 200 {
		h := sha256.Sum256([]byte(n))
		n = n[:180] + "-" + hex.EncodeToString(h[:6])
	}
	return n
}

// tagSpec makes TagSpecifications for the given resource types, tag values cut
// to EC2's limits (keys 128, values 256 characters).
func tagSpec(tags map[string]string, rts ...types.ResourceType) []types.TagSpecification {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ts []types.Tag
	for _, k := range keys {
		ts = append(ts, types.Tag{Key: aws.String(truncate(k, 128)), Value: aws.String(truncate(tags[k], 256))})
	}
	out := make([]types.TagSpecification, 0, len(rts))
	for _, rt := range rts {
		out = append(out, types.TagSpecification{ResourceType: rt, Tags: ts})
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func tagMap(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// buildFilter selects the resources of one build, or of every imagegen build.
func buildFilter(build string) types.Filter {
	if build == "" {
		return types.Filter{Name: aws.String("tag-key"), Values: []string{clouds.TagBuild}}
	}
	return types.Filter{Name: aws.String("tag:" + clouds.TagBuild), Values: []string{build}}
}
