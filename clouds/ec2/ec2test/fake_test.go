package ec2test_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/imagegen/imagegen/clouds/ec2/ec2test"
)

func client(f *ec2test.Fake) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:           "test-1",
		BaseEndpoint:     aws.String(f.URL),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", ""),
		RetryMaxAttempts: 1,
	})
}

// TestProtocolEdges: what the fake refuses, in EC2's error XML.
func TestProtocolEdges(t *testing.T) {
	f := ec2test.New(ec2test.Options{})
	defer f.Close()
	tests := []struct {
		name     string
		method   string
		form     url.Values
		auth     string
		wantCode string
		status   int
	}{
		{"unsigned", http.MethodPost, url.Values{"Action": {"DescribeImages"}, "Version": {"2016-11-15"}}, "", "AuthFailure", 401},
		{"GET", http.MethodGet, nil, "", "InvalidAction", 400},
		{"unknown action", http.MethodPost, url.Values{"Action": {"LaunchRocket"}, "Version": {"2016-11-15"}},
			"AWS4-HMAC-SHA256 Credential=AKID/20260101/test-1/ec2/aws4_request, SignedHeaders=host, Signature=00", "InvalidAction", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, f.URL, strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), "<Code>"+tc.wantCode+"</Code>") {
				t.Fatalf("%d %s, want %d with code %s", resp.StatusCode, body, tc.status, tc.wantCode)
			}
		})
	}
}

// TestWithTheSDK: the SDK parses the fake's answers, its faults count down,
// states change over time, and RunInstances is idempotent by ClientToken.
func TestWithTheSDK(t *testing.T) {
	const boot = 500 * time.Millisecond
	f := ec2test.New(ec2test.Options{BootDelay: boot})
	defer f.Close()
	c := client(f)
	ctx := context.Background()

	f.Inject(ec2test.Fault{Action: "DescribeImages", Code: "RequestLimitExceeded", Status: 503, Times: 2})
	for i, want := range []string{"RequestLimitExceeded", "RequestLimitExceeded", ""} {
		_, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ec2test.BaseImage}})
		var ae smithy.APIError
		got := ""
		if errors.As(err, &ae) {
			got = ae.ErrorCode()
		} else if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got != want {
			t.Fatalf("call %d: code %q, want %q", i, got, want)
		}
	}

	in := &ec2.RunInstancesInput{ImageId: aws.String(ec2test.BaseImage), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		ClientToken: aws.String("token-1"), InstanceType: types.InstanceTypeT3Micro,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("imagegen:build"), Value: aws.String("b1")}}}}}
	launched := time.Now()
	first, err := c.RunInstances(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.RunInstances(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(first.Instances[0].InstanceId)
	if aws.ToString(again.Instances[0].InstanceId) != id || len(f.Live()) != 1 {
		t.Fatalf("the same ClientToken made two instances: %s, %s", id, aws.ToString(again.Instances[0].InstanceId))
	}
	state := func() types.InstanceStateName {
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		return out.Reservations[0].Instances[0].State.Name
	}
	// Running exactly when the boot delay has passed, not before.
	deadline := launched.Add(10 * time.Second)
	for s := state(); s != types.InstanceStateNameRunning; s = state() {
		if s != types.InstanceStateNamePending || time.Now().After(deadline) {
			t.Fatalf("state %s, want pending then running", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if took := time.Since(launched); took < boot {
		t.Fatalf("running after %v, before the boot delay %v", took, boot)
	}
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:imagegen:build"), Values: []string{"b2"}}}})
	if err != nil || len(out.Reservations) != 0 {
		t.Fatalf("a filter on another build found %v, %v", out, err)
	}
	if live := f.Live(); len(live) != 1 || live[0].Build != "b1" {
		t.Fatalf("Live %v, want the instance of b1", live)
	}
}

// TestDescribeAtScale: what EC2 does that a batched poller must live with:
// at most 200 filter values a call, pages of MaxResults, ids invisible for a
// while after RunInstances, and token buckets answering RequestLimitExceeded.
func TestDescribeAtScale(t *testing.T) {
	// Hidden for long enough that twelve launches on a loaded machine are
	// all still hidden when the first describe calls come.
	const hidden = time.Second
	f := ec2test.New(ec2test.Options{Hidden: hidden,
		Throttle: []ec2test.Throttle{{Actions: []string{"DescribeImages"}, Rate: 0.01, Burst: 2}}}) // refills in 100 s: none during the test
	defer f.Close()
	// A connection per call: a call after an error answer (FilterLimitExceeded)
	// read "use of closed network connection" on a reused connection once,
	// on a loaded machine, and this client makes one attempt only (the
	// throttling below must see each call once).
	c := ec2.New(ec2.Options{
		Region: "test-1", BaseEndpoint: aws.String(f.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDFAKE", "secret", ""),
		HTTPClient:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	ctx := context.Background()
	var ids []string
	for range 12 {
		out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ec2test.BaseImage), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(out.Instances[0].InstanceId))
	}
	byFilter := func(ids []string, max int32, token *string) (*ec2.DescribeInstancesOutput, error) {
		in := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}}, NextToken: token}
		if max > 0 {
			in.MaxResults = aws.Int32(max)
		}
		return c.DescribeInstances(ctx, in)
	}
	count := func(out *ec2.DescribeInstancesOutput) int {
		if out == nil {
			return -1
		}
		n := 0
		for _, r := range out.Reservations {
			n += len(r.Instances)
		}
		return n
	}
	// Hidden: by id the call fails, by filter the instance is absent.
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids[:1]}); code(err) != "InvalidInstanceID.NotFound" {
		t.Errorf("a hidden id by InstanceIds: %v", err)
	}
	if out, err := byFilter(ids, 0, nil); err != nil || count(out) != 0 {
		t.Errorf("hidden ids by filter: %v, %d listed", err, count(out))
	}
	time.Sleep(hidden + 50*time.Millisecond)
	// Pages of 5: 5, 5, 2.
	var pages []int
	var token *string
	for {
		out, err := byFilter(ids, 5, token)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, count(out))
		if token = out.NextToken; aws.ToString(token) == "" {
			break
		}
	}
	if len(pages) != 3 || pages[0] != 5 || pages[2] != 2 {
		t.Errorf("pages %v; want 5, 5, 2", pages)
	}
	if _, err := byFilter(ids, 4, nil); code(err) != "InvalidParameterValue" {
		t.Errorf("MaxResults 4: %v", err)
	}
	many := make([]string, 201)
	for i := range many {
		many[i] = ids[i%len(ids)]
	}
	if _, err := byFilter(many, 0, nil); code(err) != "FilterLimitExceeded" {
		t.Errorf("201 filter values: %v", err)
	}
	if out, err := byFilter(many[:200], 0, nil); err != nil || count(out) != 12 {
		t.Errorf("200 filter values: %v, %d listed", err, count(out))
	}
	// The bucket holds 2 DescribeImages; the third is throttled, other calls are not.
	var errs []error
	for range 3 {
		_, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ec2test.BaseImage}})
		errs = append(errs, err)
	}
	if errs[0] != nil || errs[1] != nil || code(errs[2]) != "RequestLimitExceeded" {
		t.Errorf("DescribeImages past the bucket: %v", errs)
	}
	if _, err := byFilter(ids[:1], 0, nil); err != nil {
		t.Errorf("DescribeInstances is not in the bucket: %v", err)
	}
	if n, throttled := f.CallsSince(time.Time{}, "DescribeImages"); n != 3 || throttled != 1 {
		t.Errorf("CallsSince: %d calls, %d throttled; want 3, 1", n, throttled)
	}
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestInstallKeyAndMaxRequests: a run instance's key pair reaches InstallKey
// (the "guest" learns it, as from cloud-init), DescribeInstances by id
// answers those instances only, and MaxRequests bounds what is kept.
func TestInstallKeyAndMaxRequests(t *testing.T) {
	var installed []string
	f := ec2test.New(ec2test.Options{InstallKey: func(k string) { installed = append(installed, k) }, MaxRequests: 5})
	defer f.Close()
	c := client(f)
	ctx := context.Background()
	const pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0dzCPhBLmvwSIZaYpLTmYs2lLVYlSQ8FmVQzBb2Sp test"
	if _, err := c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("k"), PublicKeyMaterial: []byte(pub)}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(ec2test.BaseImage), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), KeyName: aws.String("k")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(out.Instances[0].InstanceId))
	}
	if len(installed) != 3 || installed[0] != pub {
		t.Errorf("InstallKey got %q, want the key pair's public key three times", installed)
	}
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids[1:2]})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Reservations) != 1 || aws.ToString(out.Reservations[0].Instances[0].InstanceId) != ids[1] {
		t.Errorf("DescribeInstances of %s answered %+v", ids[1], out.Reservations)
	}
	for range 20 {
		if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ec2test.BaseImage}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.Requests()); n < 5 || n > 10 {
		t.Errorf("%d requests kept, want between 5 and 10", n)
	}
}
