package ec2

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/imagegen/imagegen/clouds"
	"github.com/imagegen/imagegen/clouds/cloudinit"
)

// Launch imports the build's key, makes a temporary security group when none
// is configured, runs the instance, waits for running and learns the host keys.
// Each step records what it created in inst the moment EC2 returns it.
func (c *Cloud) Launch(ctx context.Context, req clouds.LaunchRequest, inst *clouds.Instance) error {
	if inst.Build == "" {
		inst.Build = req.Build
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	if !*c.cfg.InjectHostKey {
		req.HostKey = clouds.HostKey{}
	}
	if err := c.cfg.HostKey.CheckInjected(req, *c.cfg.InjectHostKey); err != nil {
		return err
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
	tags := launchTags(req, name)

	if err := c.importKey(ctx, req, name, tags, inst); err != nil {
		return err
	}
	req.Log.Info("imported key pair", "key_pair", name)
	groups, err := c.securityGroups(ctx, req, name, tags, inst)
	if err != nil {
		return err
	}
	in, err := c.runInput(req, runSpec{base: base, size: size, name: name, tags: tags, groups: groups, token: clientToken(req.Build, name)})
	if err != nil {
		return err
	}
	if err := c.runInstance(ctx, req, in, name, inst); err != nil {
		return err
	}
	req.Log.Info("ran instance, waiting for running", "instance", inst.ID, "image", req.Image, "instance_type", size)

	var running types.Instance
	err = c.waitInstance(ctx, inst.ID, types.InstanceStateNameRunning, c.cfg.BootTimeout, func(i types.Instance) { running = i })
	if err != nil {
		c.copyConsole(ctx, inst.ID, req.Console)
		return err
	}
	ep, err := c.sshEndpoint(ctx, req, inst.ID, running)
	if errors.Is(err, clouds.ErrNoHostKey) {
		c.copyConsole(ctx, inst.ID, req.Console) // what the guest printed instead
	}
	if err != nil {
		return err
	}
	inst.SSH = ep
	req.Log.Info("instance running", "instance", inst.ID, "address", ep.Addr, "host_keys", ep.HostKeySource)
	return nil
}

// launchTags are the tags of everything Launch creates: the request's, the
// build's, and Name (what the EC2 console shows).
func launchTags(req clouds.LaunchRequest, name string) map[string]string {
	tags := map[string]string{}
	for k, v := range req.Tags {
		tags[k] = v
	}
	tags[clouds.TagBuild] = req.Build
	tags["Name"] = name
	return tags
}

// securityGroups are the configured security groups, or else a temporary one
// made for this build.
func (c *Cloud) securityGroups(ctx context.Context, req clouds.LaunchRequest, name string, tags map[string]string, inst *clouds.Instance) ([]string, error) {
	if groups := c.cfg.SecurityGroupIDs; len(groups) > 0 {
		return groups, nil
	}
	id, err := c.tempGroup(ctx, req, name, tags, inst)
	if err != nil {
		return nil, err
	}
	return []string{id}, nil
}

// runSpec is what runInput makes a RunInstances request of.
type runSpec struct {
	base   types.Image // the base image, for its root device name
	size   string      // the instance type
	name   string      // the key pair's name, and the instance's Name
	tags   map[string]string
	groups []string // security group ids
	token  string   // RunInstances' idempotency token: one per Launch
}

// runInput is the RunInstances request: one instance of the base image with
// the build's key pair, user data and tags, in the configured subnet, groups,
// instance profile and root volume.
func (c *Cloud) runInput(req clouds.LaunchRequest, s runSpec) (*ec2.RunInstancesInput, error) {
	userData, err := cloudinit.UserData(req)
	if err != nil {
		return nil, &clouds.Error{Kind: clouds.KindInvalid, Op: "launch", Err: err}
	}
	in := &ec2.RunInstancesInput{
		ImageId:           aws.String(req.Image),
		InstanceType:      types.InstanceType(s.size),
		MinCount:          aws.Int32(1),
		MaxCount:          aws.Int32(1),
		KeyName:           aws.String(s.name),
		UserData:          aws.String(base64.StdEncoding.EncodeToString(userData)),
		TagSpecifications: tagSpec(s.tags, types.ResourceTypeInstance, types.ResourceTypeVolume),
		// The token makes the SDK's retries and ours one launch, and finds
		// the instance again when a cancellation cut the answer off.
		ClientToken: aws.String(s.token),
	}
	if c.cfg.AssociatePublicIP != nil {
		in.NetworkInterfaces = []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:              aws.Int32(0),
			AssociatePublicIpAddress: c.cfg.AssociatePublicIP,
			DeleteOnTermination:      aws.Bool(true),
			Groups:                   s.groups,
			SubnetId:                 optString(c.cfg.SubnetID),
		}}
	} else {
		in.SubnetId = optString(c.cfg.SubnetID)
		in.SecurityGroupIds = s.groups
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
		in.BlockDeviceMappings = []types.BlockDeviceMapping{{DeviceName: s.base.RootDeviceName, Ebs: ebs}}
	}
	return in, nil
}

// runInstance runs the instance and records it in inst the moment EC2 returns
// its id, or, when a cancellation cut the answer off, once its client token
// finds it.
func (c *Cloud) runInstance(ctx context.Context, req clouds.LaunchRequest, in *ec2.RunInstancesInput, name string, inst *clouds.Instance) error {
	err := c.retry(ctx, "run instance of "+req.Image, func(ctx context.Context) error {
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
	return nil
}

// sshEndpoint is instance id's address (public unless use_private_ip, or
// when it has none) on the SSH port, its host keys pinned by the host_key
// policy: the injected key, else (console, first-use) the keys cloud-init
// printed on the console; none there fails the launch, unless first-use.
func (c *Cloud) sshEndpoint(ctx context.Context, req clouds.LaunchRequest, id string, running types.Instance) (*clouds.Endpoint, error) {
	host := aws.ToString(running.PublicIpAddress)
	if c.cfg.UsePrivateIP || host == "" {
		host = aws.ToString(running.PrivateIpAddress)
	}
	if host == "" {
		return nil, &clouds.Error{Kind: clouds.KindFailed, Op: "launch", Err: fmt.Errorf("instance %s is running but has no address", id),
			Hint: "set associate_public_ip: true, or a subnet_id whose instances get public addresses"}
	}
	ep := &clouds.Endpoint{Addr: net.JoinHostPort(host, strconv.Itoa(c.cfg.SSHPort))}
	l := clouds.HostKeyLookup{
		Policy: c.cfg.HostKey, Instance: id, Injected: *c.cfg.InjectHostKey, ConsoleTimeout: c.cfg.ConsoleTimeout,
		Console: func(ctx context.Context) ([]string, error) { return c.consoleHostKeys(ctx, id) },
	}
	if err := l.Pin(ctx, req, ep); err != nil {
		return nil, err
	}
	return ep, nil
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// clientToken is RunInstances' idempotency token for one Launch of a
// build's instance (at most 64 ASCII characters). It is new on every Launch:
// EC2 answers a token it has seen (for a day and more after the instance is
// gone) with that instance, so a token derived from the build alone gave a
// retried build the terminated instance of the attempt before it (found by
// the chaos suite: "wait for instance … to be running: instance is terminated").
func clientToken(build, name string) string {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	h := sha256.Sum256(append([]byte(build+"\x00"+name+"\x00"), nonce...))
	return "imagegen-" + hex.EncodeToString(h[:20])
}

// lookupBaseImage checks the spec's image before anything is created, so a typo
// leaves nothing to clean up, and learns its root device for volume_size.
func (c *Cloud) lookupBaseImage(ctx context.Context, id string) (types.Image, error) {
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
	in := &ec2.ImportKeyPairInput{
		KeyName:           aws.String(name),
		PublicKeyMaterial: []byte(strings.TrimSpace(req.AuthorizedKey)),
		TagSpecifications: tagSpec(tags, types.ResourceTypeKeyPair),
	}
	err := c.retry(ctx, "import key pair "+name, func(ctx context.Context) error {
		_, err := c.api.ImportKeyPair(ctx, in)
		if codeOf(err) == "InvalidKeyPair.Duplicate" {
			// The name carries the build: this import's, its answer lost, or
			// an earlier attempt's, whose worker died before removing it and
			// whose key is not this attempt's. Replace it either way.
			if _, err := c.api.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil {
				return err
			}
			_, err = c.api.ImportKeyPair(ctx, in)
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
