package ec2

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/imagegen/imagegen/clouds"
)

// class is what imagegen makes of an EC2 error code.
type class struct {
	kind clouds.Kind
	hint string
}

const iamHint = "the credentials lack this permission: docs/ec2.md lists the IAM policy imagegen needs"

// permanent are the codes that fail a build at once, whatever their HTTP
// status; the retryer must not retry them.
var permanent = map[string]class{
	"UnauthorizedOperation":        {clouds.KindAuth, iamHint},
	"AuthFailure":                  {clouds.KindAuth, "EC2 refused the credentials: check the access key and secret (or the password given with the build)"},
	"InvalidClientTokenId":         {clouds.KindAuth, "the access key id is not known to this cloud"},
	"SignatureDoesNotMatch":        {clouds.KindAuth, "the secret access key does not match the access key id"},
	"ExpiredToken":                 {clouds.KindAuth, "the session token has expired: renew the credentials (aws sso login)"},
	"RequestExpired":               {clouds.KindAuth, "the request's time is off: check the worker's clock"},
	"OptInRequired":                {clouds.KindAuth, "the account is not subscribed to EC2 in this region"},
	"Blocked":                      {clouds.KindAuth, "the account is blocked"},
	"InvalidAMIID.NotFound":        {clouds.KindNotFound, "the spec's image must be an AMI id in this region that the account can launch"},
	"InvalidAMIID.Unavailable":     {clouds.KindNotFound, "the AMI is deregistered or not available"},
	"InvalidAMIID.Malformed":       {clouds.KindInvalid, "an AMI id looks like ami-0123456789abcdef0"},
	"InstanceLimitExceeded":        {clouds.KindQuota, "the account's instance limit is reached: end other instances or request a higher limit (Service Quotas)"},
	"VcpuLimitExceeded":            {clouds.KindQuota, "the account's vCPU limit is reached: end other instances or request a higher limit (Service Quotas)"},
	"ResourceLimitExceeded":        {clouds.KindQuota, "a resource limit is reached"},
	"SecurityGroupLimitExceeded":   {clouds.KindQuota, "the VPC's security group limit is reached: name security_group_ids or remove unused groups"},
	"KeyPairLimitExceeded":         {clouds.KindQuota, "the key pair limit is reached: sweep old imagegen key pairs"},
	"InsufficientInstanceCapacity": {clouds.KindCapacity, "AWS has no capacity for this instance type in this zone now: try another instance_type or subnet_id, or later"},
	"InsufficientCapacity":         {clouds.KindCapacity, "no capacity now: try another instance_type or subnet_id, or later"},
	"InsufficientHostCapacity":     {clouds.KindCapacity, "no capacity now: try later"},
	"InvalidParameterValue":        {clouds.KindInvalid, ""},
	"InvalidParameterCombination":  {clouds.KindInvalid, ""},
	"MissingParameter":             {clouds.KindInvalid, ""},
	"InvalidSubnetID.NotFound":     {clouds.KindNotFound, "subnet_id names no subnet in this region"},
	"InvalidGroup.NotFound":        {clouds.KindNotFound, ""},
	"InvalidInstanceID.NotFound":   {clouds.KindNotFound, ""},
	"InvalidKeyPair.NotFound":      {clouds.KindNotFound, ""},
	"InvalidSnapshot.NotFound":     {clouds.KindNotFound, ""},
	"InvalidBlockDeviceMapping":    {clouds.KindInvalid, ""},
	"InvalidKey.Format":            {clouds.KindInvalid, "the build's public key is not in OpenSSH format"},
}

// transientCodes clear by themselves: throttling, EC2's own trouble, and
// dependencies that vanish once an instance is gone.
var transientCodes = map[string]bool{
	"RequestLimitExceeded": true, "Throttling": true, "ThrottlingException": true, "EC2ThrottledException": true,
	"InternalError": true, "InternalFailure": true, "ServiceUnavailable": true, "Unavailable": true,
	"DependencyViolation": true, "InvalidSnapshot.InUse": true, "IncorrectInstanceState": true,
	"InvalidInstanceID.NotFound.Eventual": true,
}

// classify turns an SDK error into a clouds.Error whose kind says whether to
// retry; its message carries the AWS code and a hint.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ce *clouds.Error
	if errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	e := &clouds.Error{Op: op, Err: err}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ae.ErrorCode()
		// The SDK's own message repeats the operation and request id; keep the cloud's words.
		e.Err = &apiError{msg: ae.ErrorMessage(), err: err}
		if c, ok := permanent[e.Code]; ok {
			e.Kind, e.Hint = c.kind, c.hint
			return e
		}
		switch {
		case transientCodes[e.Code]:
			e.Kind = clouds.KindTransient
			return e
		case strings.HasSuffix(e.Code, ".NotFound"):
			e.Kind = clouds.KindNotFound
			return e
		case strings.HasSuffix(e.Code, "LimitExceeded"):
			e.Kind = clouds.KindQuota
			return e
		case strings.HasPrefix(e.Code, "Invalid"):
			e.Kind = clouds.KindInvalid
			return e
		}
	}
	var qe ratelimit.QuotaExceededError
	if errors.As(err, &qe) {
		// The SDK's client-side retry budget ran out in a throttling storm.
		e.Kind = clouds.KindTransient
		return e
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		if s := re.HTTPStatusCode(); s == http.StatusTooManyRequests || s >= 500 {
			e.Kind = clouds.KindTransient
			return e
		}
		if s := re.HTTPStatusCode(); s == http.StatusUnauthorized || s == http.StatusForbidden {
			e.Kind = clouds.KindAuth
			return e
		}
	}
	if k := clouds.KindOf(err); k != clouds.KindUnknown {
		e.Kind = k
	}
	return e
}

// apiError shows the cloud's message and unwraps to the SDK error.
type apiError struct {
	msg string
	err error
}

func (e *apiError) Error() string {
	if e.msg == "" {
		return e.err.Error()
	}
	return e.msg
}
func (e *apiError) Unwrap() error { return e.err }

// codeOf returns the AWS error code in err, or "".
func codeOf(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// gone reports whether err says the resource is already gone.
func gone(err error) bool {
	switch codeOf(err) {
	case "InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound",
		"InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidSnapshot.NotFound":
		return true
	}
	return false
}
