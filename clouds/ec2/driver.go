package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudinit"
)

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
}

var _ API = (*ec2.Client)(nil)

// Cloud is an opened EC2 cloud: one client shared by the builds on it.
type Cloud struct {
	name string
	cfg  Config
	opts Options
	api  API

	mu       sync.Mutex
	sshCIDRs []string // learned once from CheckIPURL
}

var _ clouds.Cloud = (*Cloud)(nil)

func newCloud(name string, cfg Config, opts Options, api API) *Cloud {
	return &Cloud{name: name, cfg: cfg, opts: opts, api: api}
}

// Features: EC2 makes images and stops instances through its API.
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

// Launch imports the build's key, makes a temporary security group when none
// is configured, runs the instance, waits for running and learns the host keys.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	log := req.Log
	if inst.Build == "" {
		inst.Build = req.Build
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	size := req.Size
	if size == "" {
		size = c.cfg.InstanceType
	}
	base, err := c.baseImage(ctx, req.Image)
	if err != nil {
		return err
	}
	name := resourceName(req)
	tags := map[string]string{}
	for k, v := range req.Tags {
		tags[k] = v
	}
	tags[clouds.TagBuild] = req.Build
	tags["Name"] = name

	if err := c.importKey(ctx, req, name, tags, inst); err != nil {
		return err
	}
	log.Info("imported key pair", "key_pair", name)

	groups := c.cfg.SecurityGroupIDs
	if len(groups) == 0 {
		id, err := c.tempGroup(ctx, req, name, tags, inst)
		if err != nil {
			return err
		}
		groups = []string{id}
	}

	userData, err := cloudinit.UserData(req)
	if err != nil {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err}
	}
	in := &ec2.RunInstancesInput{
		ImageId:           aws.String(req.Image),
		InstanceType:      types.InstanceType(size),
		MinCount:          aws.Int32(1),
		MaxCount:          aws.Int32(1),
		KeyName:           aws.String(name),
		UserData:          aws.String(base64.StdEncoding.EncodeToString(userData)),
		TagSpecifications: tagSpec(tags, types.ResourceTypeInstance, types.ResourceTypeVolume),
		// The token makes the SDK's retries and ours one launch, and finds
		// the instance again when a cancellation cut the answer off.
		ClientToken: aws.String(clientToken(req.Build, name)),
	}
	if c.cfg.AssociatePublicIP != nil {
		in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:              aws.Int32(0),
			AssociatePublicIpAddress: c.cfg.AssociatePublicIP,
			DeleteOnTermination:      aws.Bool(true),
			Groups:                   groups,
			SubnetId:                 optString(c.cfg.SubnetID),
		}}
	} else {
		in.SubnetId = optString(c.cfg.SubnetID)
		in.SecurityGroupIds = groups
	}
	if p := c.cfg.IAMInstanceProfile; p != "" {
		if strings.HasPrefix(p, "arn:") {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String(p)}
		} else {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(p)}
		}
	}
	if c.cfg.VolumeSize > 0 || c.cfg.VolumeType != "" {
		ebs := &types.EbsBlockDevice{DeleteOnTermination: aws.Bool(true)}
		if c.cfg.VolumeSize > 0 {
			ebs.VolumeSize = aws.Int32(c.cfg.VolumeSize)
		}
		if c.cfg.VolumeType != "" {
			ebs.VolumeType = types.VolumeType(c.cfg.VolumeType)
		}
		in.BlockDeviceMappings = []types.BlockDeviceMapping{{DeviceName: base.RootDeviceName, Ebs: ebs}}
	}
	err = c.retry(ctx, "run instance of "+req.Image, func(ctx context.Context) error {
		out, err := c.api.RunInstances(ctx, in)
		if err == nil && len(out.Instances) > 0 {
			inst.ID = aws.ToString(out.Instances[0].InstanceId)
		}
		return err
	})
	if inst.ID == "" && ctx.Err() != nil {
		// Canceled mid-request: the instance may exist; find it by its token.
		inst.ID = c.findByToken(ctx, aws.ToString(in.ClientToken))
	}
	if inst.ID != "" {
		inst.Add(clouds.Resource{Kind: clouds.KindServer, ID: inst.ID, Name: name, Build: req.Build})
	}
	if err != nil {
		return err
	}
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindFailed, Op: "run instance", Err: errors.New("EC2 returned no instance")}
	}
	log.Info("ran instance, waiting for running", "instance", inst.ID, "image", req.Image, "instance_type", size)

	var running types.Instance
	err = c.waitInstance(ctx, inst.ID, types.InstanceStateNameRunning, c.cfg.BootTimeout, func(i types.Instance) { running = i })
	if err != nil {
		c.copyConsole(ctx, inst.ID, req.Console)
		return err
	}
	host := aws.ToString(running.PublicIpAddress)
	if c.cfg.UsePrivateIP || host == "" {
		host = aws.ToString(running.PrivateIpAddress)
	}
	if host == "" {
		return &clouds.Error{Kind: clouds.KindFailed, Op: "launch", Err: fmt.Errorf("instance %s is running but has no address", inst.ID),
			Hint: "set associate_public_ip: true, or a subnet_id whose instances get public addresses"}
	}
	ep := &clouds.Endpoint{Addr: net.JoinHostPort(host, strconv.Itoa(c.cfg.SSHPort))}
	if pub := strings.TrimSpace(req.HostKey.Public); pub != "" {
		ep.HostKeys, ep.HostKeySource = []string{pub}, "injected"
	} else {
		keys, err := c.consoleHostKeys(ctx, inst.ID)
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("launch: %w", ctx.Err())
		case err != nil:
			log.Warn("no host keys on the console; the first key seen will be trusted", "instance", inst.ID, "error", err)
		default:
			ep.HostKeys, ep.HostKeySource = keys, "console"
		}
	}
	inst.SSH = ep
	log.Info("instance running", "instance", inst.ID, "address", ep.Addr, "host_keys", ep.HostKeySource)
	return nil
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// clientToken is RunInstances' idempotency token for one build's instance (at most 64 ASCII characters).
func clientToken(build, name string) string {
	h := sha256.Sum256([]byte(build + "\x00" + name))
	return "imagegen-" + hex.EncodeToString(h[:20])
}

// baseImage checks the spec's image before anything is created, so a typo
// leaves nothing to clean up, and learns its root device for volume_size.
func (c *Cloud) baseImage(ctx context.Context, id string) (types.Image, error) {
	op := "find base image " + id
	var out *ec2.DescribeImagesOutput
	err := c.retry(ctx, op, func(ctx context.Context) (err error) {
		out, err = c.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		return err
	})
	if err != nil {
		return types.Image{}, err
	}
	if len(out.Images) == 0 {
		return types.Image{}, &clouds.Error{Kind: clouds.KindNotFound, Op: op, Code: "InvalidAMIID.NotFound",
			Err: errors.New("no such image"), Hint: permanent["InvalidAMIID.NotFound"].hint}
	}
	im := out.Images[0]
	if im.State != types.ImageStateAvailable {
		return types.Image{}, &clouds.Error{Kind: clouds.KindNotFound, Op: op, Err: fmt.Errorf("image is %s, not available", im.State)}
	}
	return im, nil
}

func (c *Cloud) importKey(ctx context.Context, req clouds.LaunchRequest, name string, tags map[string]string, inst *clouds.Instance) error {
	err := c.retry(ctx, "import key pair "+name, func(ctx context.Context) error {
		_, err := c.api.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
			KeyName:           aws.String(name),
			PublicKeyMaterial: []byte(strings.TrimSpace(req.AuthorizedKey)),
			TagSpecifications: tagSpec(tags, types.ResourceTypeKeyPair),
		})
		if codeOf(err) == "InvalidKeyPair.Duplicate" {
			// The name carries the build: a retried import after a lost answer.
			return nil
		}
		return err
	})
	if err == nil || ctx.Err() != nil {
		// Canceled mid-request the key may exist; deleting a missing key pair is success.
		inst.Add(clouds.Resource{Kind: clouds.KindKeyPair, ID: name, Name: name, Build: req.Build})
	}
	return err
}

// tempGroup creates a security group that lets SSH in from the worker only.
func (c *Cloud) tempGroup(ctx context.Context, req clouds.LaunchRequest, name string, tags map[string]string, inst *clouds.Instance) (string, error) {
	cidrs, err := c.workerCIDRs(ctx)
	if err != nil {
		return "", err
	}
	var vpc *string
	if c.cfg.SubnetID != "" {
		var out *ec2.DescribeSubnetsOutput
		err := c.retry(ctx, "find subnet "+c.cfg.SubnetID, func(ctx context.Context) (err error) {
			out, err = c.api.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{c.cfg.SubnetID}})
			return err
		})
		if err != nil {
			return "", err
		}
		if len(out.Subnets) == 0 {
			return "", &clouds.Error{Kind: clouds.KindNotFound, Op: "find subnet", Err: fmt.Errorf("subnet %s not found", c.cfg.SubnetID)}
		}
		vpc = out.Subnets[0].VpcId
	}
	op := "create security group " + name
	var id string
	err = c.retry(ctx, op, func(ctx context.Context) error {
		out, err := c.api.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			GroupName:         aws.String(name),
			Description:       aws.String("imagegen build " + req.Build + ": SSH from the worker"),
			VpcId:             vpc,
			TagSpecifications: tagSpec(tags, types.ResourceTypeSecurityGroup),
		})
		if err == nil {
			id = aws.ToString(out.GroupId)
		}
		return err
	})
	if id == "" && (codeOf(err) == "InvalidGroup.Duplicate" || ctx.Err() != nil) {
		// A retried create after a lost answer, or a cancellation that cut
		// it off: the group's name carries the build, so find it by name.
		id = c.findGroup(ctx, name, vpc)
		if id != "" && ctx.Err() == nil {
			err = nil
		}
	}
	if id != "" {
		inst.Add(clouds.Resource{Kind: clouds.KindSecurityGroup, ID: id, Name: name, Build: req.Build})
	}
	if err != nil {
		return "", err
	}
	perms := make([]types.IpRange, 0, len(cidrs))
	for _, cidr := range cidrs {
		perms = append(perms, types.IpRange{CidrIp: aws.String(cidr), Description: aws.String("imagegen worker")})
	}
	err = c.retry(ctx, "allow SSH in "+id, func(ctx context.Context) error {
		_, err := c.api.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: aws.String(id),
			IpPermissions: []types.IpPermission{{
				IpProtocol: aws.String("tcp"),
				FromPort:   aws.Int32(int32(c.cfg.SSHPort)),
				ToPort:     aws.Int32(int32(c.cfg.SSHPort)),
				IpRanges:   perms,
			}},
		})
		if codeOf(err) == "InvalidPermission.Duplicate" {
			return nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	req.Log.Info("created temporary security group", "group", id, "ssh_from", strings.Join(cidrs, ","))
	return id, nil
}

func (c *Cloud) findGroup(ctx context.Context, name string, vpc *string) string {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	fs := []types.Filter{{Name: aws.String("group-name"), Values: []string{name}}}
	if vpc != nil {
		fs = append(fs, types.Filter{Name: aws.String("vpc-id"), Values: []string{*vpc}})
	}
	out, err := c.api.DescribeSecurityGroups(lctx, &ec2.DescribeSecurityGroupsInput{Filters: fs})
	if err != nil || len(out.SecurityGroups) == 0 {
		return ""
	}
	return aws.ToString(out.SecurityGroups[0].GroupId)
}

func (c *Cloud) findByToken(ctx context.Context, token string) string {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	out, err := c.api.DescribeInstances(lctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("client-token"), Values: []string{token}}},
	})
	if err != nil {
		return ""
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			return aws.ToString(i.InstanceId)
		}
	}
	return ""
}

// workerCIDRs are the ranges SSH is allowed from: ssh_cidrs, or the worker's
// public address as CheckIPURL sees it, learned once.
func (c *Cloud) workerCIDRs(ctx context.Context) ([]string, error) {
	if len(c.cfg.SSHCIDRs) > 0 {
		return c.cfg.SSHCIDRs, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sshCIDRs != nil {
		return c.sshCIDRs, nil
	}
	op := "find the worker's public address"
	hint := "set ssh_cidrs to the range imagegen's workers connect from, or checkip_url"
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(rctx, http.MethodGet, c.cfg.CheckIPURL, nil)
	if err != nil {
		return nil, &clouds.Error{Kind: clouds.KindInvalid, Op: op, Err: err, Hint: hint}
	}
	hc := http.DefaultClient
	if c.opts.HTTPClient != nil {
		hc = c.opts.HTTPClient
	}
	resp, err := hc.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return nil, &clouds.Error{Kind: clouds.KindTransient, Op: op, Err: err, Hint: hint}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	ip := net.ParseIP(strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK || ip == nil {
		return nil, &clouds.Error{Kind: clouds.KindInvalid, Op: op, Err: fmt.Errorf("%s answered %s %q", c.cfg.CheckIPURL, resp.Status, truncate(string(body), 64)), Hint: hint}
	}
	cidr := ip.String() + "/32"
	if ip.To4() == nil {
		cidr = ip.String() + "/128"
	}
	c.sshCIDRs = []string{cidr}
	return c.sshCIDRs, nil
}

// waitInstance polls until the instance is in state want. An instance that
// ends terminated on the way fails at once with EC2's reason.
func (c *Cloud) waitInstance(ctx context.Context, id string, want types.InstanceStateName, timeout time.Duration, seen func(types.Instance)) error {
	what := fmt.Sprintf("wait for instance %s to be %s", id, want)
	notFound := 0
	return clouds.Within(ctx, what, timeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			out, err := c.api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
			if codeOf(err) == "InvalidInstanceID.NotFound" {
				if want == types.InstanceStateNameTerminated {
					return true, nil
				}
				// EC2 is eventually consistent: a new instance may not be visible yet.
				if notFound++; notFound < 10 {
					return false, nil
				}
			}
			if err != nil {
				return false, classify(what, err)
			}
			var i *types.Instance
			for _, r := range out.Reservations {
				for k := range r.Instances {
					if aws.ToString(r.Instances[k].InstanceId) == id {
						i = &r.Instances[k]
					}
				}
			}
			if i == nil || i.State == nil {
				return want == types.InstanceStateNameTerminated, nil
			}
			if seen != nil {
				seen(*i)
			}
			st := i.State.Name
			switch {
			case st == want:
				return true, nil
			case want != types.InstanceStateNameTerminated && (st == types.InstanceStateNameTerminated || st == types.InstanceStateNameShuttingDown):
				reason := aws.ToString(i.StateTransitionReason)
				kind := clouds.KindFailed
				code := ""
				if i.StateReason != nil {
					reason = aws.ToString(i.StateReason.Message)
					code = aws.ToString(i.StateReason.Code)
					if strings.Contains(code, "InsufficientInstanceCapacity") || strings.Contains(reason, "InsufficientInstanceCapacity") {
						kind = clouds.KindCapacity
					}
				}
				return false, &clouds.Error{Kind: kind, Op: what, Code: code, Err: fmt.Errorf("instance is %s: %s", st, reason)}
			}
			return false, nil
		})
	})
}

func (c *Cloud) copyConsole(ctx context.Context, id string, w io.Writer) {
	if w == nil {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	out, err := c.api.GetConsoleOutput(lctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
	if err != nil || out.Output == nil {
		return
	}
	if b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output)); err == nil {
		_, _ = w.Write(b)
	}
}

// consoleHostKeys reads the console until cloud-init has printed the host
// keys or ConsoleTimeout passes (images without cloud-init print none).
func (c *Cloud) consoleHostKeys(ctx context.Context, id string) ([]string, error) {
	var keys []string
	what := "read host keys from the console of " + id
	err := clouds.Within(ctx, what, c.cfg.ConsoleTimeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			out, err := c.api.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id)})
			if err != nil {
				return false, classify(what, err)
			}
			b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
			if err != nil {
				return false, nil
			}
			keys = cloudinit.ConsoleHostKeys(string(b))
			return len(keys) > 0, nil
		})
	})
	return keys, err
}

// Stop stops the instance and waits for stopped; with stop_instance: false it
// does nothing and CreateImage reboots the instance instead.
func (c *Cloud) Stop(ctx context.Context, inst *clouds.Instance) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "stop", Err: errors.New("no instance")}
	}
	if !*c.cfg.StopInstance {
		return ctx.Err()
	}
	op := "stop instance " + inst.ID
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{inst.ID}})
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	return c.waitInstance(ctx, inst.ID, types.InstanceStateNameStopped, c.cfg.StopTimeout, nil)
}

// Snapshot makes an AMI of the instance, tagging it and its snapshots with
// the provenance, and waits until it is available.
func (c *Cloud) Snapshot(ctx context.Context, inst *clouds.Instance, req clouds.SnapshotRequest, img *clouds.Image) error {
	if inst.ID == "" {
		return &clouds.Error{Kind: clouds.KindInvalid, Op: "create image", Err: errors.New("no instance")}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	tags := map[string]string{}
	for k, v := range req.Tags {
		tags[k] = v
	}
	tags["Name"] = req.Name
	img.Name, img.Tags = req.Name, req.Tags
	op := "create image " + req.Name
	err := c.retry(ctx, op, func(ctx context.Context) error {
		out, err := c.api.CreateImage(ctx, &ec2.CreateImageInput{
			InstanceId:  aws.String(inst.ID),
			Name:        aws.String(truncate(req.Name, 128)),
			Description: aws.String(truncate("imagegen build "+req.Tags[clouds.TagBuild]+" of "+req.Tags[clouds.TagGenerator], 255)),
			// A stopped instance needs no reboot; a running one (stop_instance:
			// false) is rebooted by EC2 so its disk is consistent.
			NoReboot:          aws.Bool(*c.cfg.StopInstance),
			TagSpecifications: tagSpec(tags, types.ResourceTypeImage, types.ResourceTypeSnapshot),
		})
		if err == nil {
			img.ID = aws.ToString(out.ImageId)
		}
		return err
	})
	if img.ID == "" && (codeOf(err) == "InvalidAMIName.Duplicate" || ctx.Err() != nil) {
		// A retry after a lost answer, or a cancellation that cut it off:
		// adopt the image of that name only if this build made it.
		if id := c.findImage(ctx, req.Name, req.Tags[clouds.TagBuild]); id != "" {
			img.ID = id
			if ctx.Err() == nil {
				err = nil
			}
		}
	}
	if err != nil {
		return err
	}
	req.Log.Info("creating image, waiting for available", "image", img.ID, "name", req.Name)
	what := "wait for image " + img.ID + " to be available"
	return clouds.Within(ctx, what, c.cfg.ImageTimeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Poll, func(ctx context.Context) (bool, error) {
			out, err := c.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.ID}})
			if err != nil {
				if codeOf(err) == "InvalidAMIID.NotFound" {
					// Not visible yet (eventual consistency).
					return false, nil
				}
				return false, classify(what, err)
			}
			if len(out.Images) == 0 {
				return false, nil
			}
			im := out.Images[0]
			recordSnapshots(img, im)
			switch im.State {
			case types.ImageStateAvailable:
				return true, nil
			case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
				msg := "no reason given"
				code := ""
				if im.StateReason != nil {
					msg, code = aws.ToString(im.StateReason.Message), aws.ToString(im.StateReason.Code)
				}
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Code: code,
					Err: fmt.Errorf("image %s is %s: %s", img.ID, im.State, msg)}
			}
			return false, nil
		})
	})
}

func recordSnapshots(img *clouds.Image, im types.Image) {
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs == nil || b.Ebs.SnapshotId == nil {
			continue
		}
		id := aws.ToString(b.Ebs.SnapshotId)
		known := false
		for _, r := range img.Resources {
			known = known || r.ID == id
		}
		if !known {
			img.Resources = append(img.Resources, clouds.Resource{Kind: clouds.KindSnapshot, ID: id, Name: aws.ToString(b.DeviceName), Build: img.Tags[clouds.TagBuild]})
		}
	}
}

func (c *Cloud) findImage(ctx context.Context, name, build string) string {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	fs := []types.Filter{{Name: aws.String("name"), Values: []string{name}}}
	if build != "" {
		fs = append(fs, buildFilter(build))
	}
	out, err := c.api.DescribeImages(lctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: fs})
	if err != nil || len(out.Images) == 0 {
		return ""
	}
	return aws.ToString(out.Images[0].ImageId)
}

// Terminate removes what Launch recorded, newest first: the instance (waiting
// until it is terminated), the temporary security group (retrying
// DependencyViolation until the instance has let go of it), the key pair.
func (c *Cloud) Terminate(ctx context.Context, inst *clouds.Instance) error {
	var errs []error
	for i := len(inst.Resources) - 1; i >= 0; i-- {
		if err := c.Remove(ctx, inst.Resources[i]); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Remove deletes one resource and waits until it is gone. Idempotent.
func (c *Cloud) Remove(ctx context.Context, r clouds.Resource) error {
	switch r.Kind {
	case clouds.KindServer:
		return c.terminateInstance(ctx, r.ID)
	case clouds.KindSecurityGroup:
		return c.deleteGroup(ctx, r.ID)
	case clouds.KindKeyPair:
		op := "delete key pair " + r.ID
		return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
			_, err := c.api.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(r.ID)})
			if gone(err) {
				return nil
			}
			return classify(op, err)
		})
	case clouds.KindSnapshot:
		return c.deleteSnapshot(ctx, r.ID)
	case clouds.KindImage:
		return c.DeleteImage(ctx, &clouds.Image{ID: r.ID})
	}
	return &clouds.Error{Kind: clouds.KindInvalid, Op: "remove", Err: fmt.Errorf("unknown resource kind %q", r.Kind)}
}

func (c *Cloud) terminateInstance(ctx context.Context, id string) error {
	op := "terminate instance " + id
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		if gone(err) {
			return nil
		}
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	return c.waitInstance(ctx, id, types.InstanceStateNameTerminated, c.cfg.DeleteTimeout, nil)
}

// deleteGroup retries DependencyViolation: EC2 keeps a group "in use" for a
// while after its instance is terminated, and giving up there is Packer's most
// common leak.
func (c *Cloud) deleteGroup(ctx context.Context, id string) error {
	op := "delete security group " + id
	return clouds.Within(ctx, op, c.cfg.DeleteTimeout, func(ctx context.Context) error {
		return clouds.Poll(ctx, c.opts.Retry, func(ctx context.Context) (bool, error) {
			_, err := c.api.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			if err == nil || gone(err) {
				return true, nil
			}
			if codeOf(err) == "DependencyViolation" {
				return false, nil
			}
			return false, classify(op, err)
		})
	})
}

func (c *Cloud) deleteSnapshot(ctx context.Context, id string) error {
	op := "delete snapshot " + id
	// InvalidSnapshot.InUse clears once the deregistration has gone through.
	return clouds.Within(ctx, op, c.cfg.DeleteTimeout, func(ctx context.Context) error {
		return clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
			_, err := c.api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
			if gone(err) {
				return nil
			}
			return classify(op, err)
		})
	})
}

// DeleteImage deregisters a half-made image and deletes its EBS snapshots,
// which deregistration leaves behind.
func (c *Cloud) DeleteImage(ctx context.Context, img *clouds.Image) error {
	if img.ID == "" {
		return nil
	}
	op := "delete image " + img.ID
	err := clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		out, err := c.api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.ID}})
		if gone(err) {
			return nil
		}
		if err != nil {
			return classify(op, err)
		}
		for _, im := range out.Images {
			recordSnapshots(img, im)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if build := img.Tags[clouds.TagBuild]; build != "" && img.Name != "" {
		// A failed image may name no snapshots; its tags still find them.
		out, err := c.api.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
			Filters: []types.Filter{buildFilter(build), {Name: aws.String("tag:Name"), Values: []string{img.Name}}}})
		if err == nil {
			for _, s := range out.Snapshots {
				recordSnapshots(img, types.Image{BlockDeviceMappings: []types.BlockDeviceMapping{{Ebs: &types.EbsBlockDevice{SnapshotId: s.SnapshotId}}}})
			}
		}
	}
	err = clouds.Retry(ctx, c.opts.Retry, func(ctx context.Context) error {
		_, err := c.api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(img.ID)})
		if gone(err) {
			return nil
		}
		return classify(op, err)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range img.Resources {
		if r.Kind == clouds.KindSnapshot {
			errs = append(errs, c.deleteSnapshot(ctx, r.ID))
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists the instances (not yet terminated), security groups and key
// pairs tagged with the build.
func (c *Cloud) Leftovers(ctx context.Context, build string) ([]clouds.Resource, error) {
	var out []clouds.Resource
	f := buildFilter(build)
	var token *string
	for {
		res, err := c.api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{NextToken: token, Filters: []types.Filter{f,
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}}}})
		if err != nil {
			return nil, classify("list instances", err)
		}
		for _, r := range res.Reservations {
			for _, i := range r.Instances {
				t := tagMap(i.Tags)
				out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: aws.ToString(i.InstanceId), Name: t["Name"], Build: t[clouds.TagBuild]})
			}
		}
		if token = res.NextToken; aws.ToString(token) == "" {
			break
		}
	}
	sgs, err := c.api.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{f}})
	if err != nil {
		return nil, classify("list security groups", err)
	}
	for _, g := range sgs.SecurityGroups {
		out = append(out, clouds.Resource{Kind: clouds.KindSecurityGroup, ID: aws.ToString(g.GroupId), Name: aws.ToString(g.GroupName), Build: tagMap(g.Tags)[clouds.TagBuild]})
	}
	keys, err := c.api.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{Filters: []types.Filter{f}})
	if err != nil {
		return nil, classify("list key pairs", err)
	}
	for _, k := range keys.KeyPairs {
		n := aws.ToString(k.KeyName)
		out = append(out, clouds.Resource{Kind: clouds.KindKeyPair, ID: n, Name: n, Build: tagMap(k.Tags)[clouds.TagBuild]})
	}
	return out, nil
}

var _ clouds.ImageLister = (*Cloud)(nil)

// imagePage is the most images one DescribeImages page asks for (EC2's maximum).
const imagePage = 1000

// BuildImages lists the AMIs this account owns tagged imagegen:build=build
// (any build when build is ""), pending and failed ones too: an attempt killed
// mid-snapshot leaves those. Each carries its EBS snapshots in Resources, so
// DeleteImage removes them with it.
func (c *Cloud) BuildImages(ctx context.Context, build string) ([]clouds.Image, error) {
	var out []clouds.Image
	err := c.retry(ctx, "list images", func(ctx context.Context) error {
		out = out[:0]
		in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{buildFilter(build)}, MaxResults: aws.Int32(imagePage)}
		for {
			res, err := c.api.DescribeImages(ctx, in)
			if err != nil {
				return err
			}
			for _, im := range res.Images {
				tags := tagMap(im.Tags)
				b := tags[clouds.TagBuild]
				if b == "" || (build != "" && b != build) || im.State == types.ImageStateDeregistered {
					continue
				}
				// The Name tag holds the name Snapshot was given (the AMI's own
				// name is cut at 128), and DeleteImage finds snapshots by it.
				name := tags["Name"]
				if name == "" {
					name = aws.ToString(im.Name)
				}
				delete(tags, "Name")
				img := clouds.Image{ID: aws.ToString(im.ImageId), Name: name, Tags: tags}
				recordSnapshots(&img, im)
				out = append(out, img)
			}
			if aws.ToString(res.NextToken) == "" {
				return nil
			}
			in.NextToken = res.NextToken
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
