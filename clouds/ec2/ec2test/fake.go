// Package ec2test is an httptest server speaking the EC2 Query API, real request and XML shapes, for the calls the ec2 driver makes.
// It is test support that knows no driver code (tests point the real SDK at it), and production code never imports it.
package ec2test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagegen/imagegen/clouds"
)

// Base images the fake knows. BaseImage boots with its root on /dev/sda1.
const (
	BaseImage = "ami-0123456789abcdef0"
	Subnet    = "subnet-0fake0000000000001"
	VPC       = "vpc-0fake0000000000001"
)

// Options shape the fake cloud. Delays are how long each state change takes.
type Options struct {
	BootDelay      time.Duration // pending → running
	StopDelay      time.Duration // stopping → stopped
	TerminateDelay time.Duration // shutting-down → terminated
	ImageDelay     time.Duration // image pending → available (or failed)
	// PublicIP and PrivateIP are the addresses instances get; default
	// 203.0.113.10 and 10.0.0.10. A public address is given only when the
	// launch asks for one or names no network interface.
	PublicIP, PrivateIP string
	// ConsoleHostKey, an authorized_keys line, is what cloud-init "prints" on
	// the console once the instance runs.
	ConsoleHostKey string
	// FailImages makes every new image end "failed" instead of "available".
	FailImages bool
	// ImagePage caps how many images one DescribeImages page holds when the
	// call pages (MaxResults given): EC2 may answer fewer than asked, with a
	// NextToken. Default: MaxResults.
	ImagePage int
	// DependencyLinger keeps a deleted instance's security groups "in use"
	// for this long after it is terminated, as EC2 does for a while.
	DependencyLinger time.Duration
	// NoFilters are filter names DescribeImages refuses with
	// InvalidParameterValue, as an EC2-compatible cloud that does not know
	// them does.
	NoFilters []string
	// Hidden keeps a new instance or image out of every Describe answer for
	// this long, as EC2's eventual consistency does: by id it is
	// InvalidInstanceID.NotFound (InvalidAMIID.NotFound), by filter absent.
	Hidden time.Duration
	// Throttle answers RequestLimitExceeded (HTTP 503) to the calls past a
	// rate, as EC2's per-account token buckets do; each entry is a bucket.
	Throttle []Throttle
	// InstallKey, when set, is called with the public key of an instance's
	// key pair when the instance is run: what cloud-init does on a real guest,
	// for tests whose "guest" is a real sshd (point PublicIP at it). It is
	// called with the fake's lock held: it must not call the fake.
	InstallKey func(publicKey string)
	// MaxRequests, when positive, keeps only the last calls (between
	// MaxRequests and twice as many) for Requests and Calls: a long run's
	// memory stays bounded.
	MaxRequests int
}

// Throttle is one of EC2's request token buckets: Burst calls at once, then
// Rate a second.
type Throttle struct {
	Actions []string // the calls drawing from the bucket; none: every call
	Rate    float64
	Burst   int

	tokens float64
	at     time.Time
}

// take draws a token for action, reporting false when the bucket is empty.
func (t *Throttle) take(action string, now time.Time) bool {
	if len(t.Actions) > 0 && !contains(t.Actions, action) {
		return true
	}
	if t.at.IsZero() {
		t.tokens, t.at = float64(t.Burst), now
	}
	t.tokens = min(float64(t.Burst), t.tokens+now.Sub(t.at).Seconds()*t.Rate)
	t.at = now
	if t.tokens < 1 {
		return false
	}
	t.tokens--
	return true
}

// maxFilterValues is the most filter values EC2 takes in one call.
const maxFilterValues = 200

// Fault is an error the fake answers instead of doing the call.
type Fault struct {
	Action string // "" matches every action
	Code   string // e.g. RequestLimitExceeded; "" with Delay: do the call, answer late
	Status int    // HTTP status; default 400
	Times  int    // how many calls it answers; 0: every call
	// Delay holds the answer back this long after the call took effect, so a
	// client canceled meanwhile never learns what it created.
	Delay time.Duration
}

// Request is one call the fake received, for assertions.
type Request struct {
	Action    string
	AccessKey string // from the SigV4 Authorization header
	Region    string // the SigV4 credential scope's region
	Form      url.Values
	At        time.Time
	// Throttled is set when the call was answered RequestLimitExceeded by
	// Options.Throttle.
	Throttled bool
}

// Fake is the fake EC2 endpoint. Its URL goes to the client's BaseEndpoint.
type Fake struct {
	URL string
	srv *httptest.Server

	mu         sync.Mutex
	opts       Options
	seq        int
	faults     []*Fault
	requests   []Request
	violations []string
	instances  map[string]*instance
	keys       map[string]*keyPair // by name
	groups     map[string]*group   // by id
	images     map[string]*image
	snapshots  map[string]*snapshot
	volumes    map[string]*volume
	tokens     map[string]string // client token → instance id
}

type tagged struct{ tags map[string]string }

type instance struct {
	tagged
	id, imageID, typ, keyName, userData, subnet, clientToken string
	publicIP                                                 bool
	created                                                  time.Time
	groups                                                   []string
	state                                                    string
	target                                                   string
	changeAt                                                 time.Time
	terminatedAt                                             time.Time
	volume                                                   string
	rootDevice                                               string
}

type keyPair struct {
	tagged
	id, name, fingerprint, material string
}

type group struct {
	tagged
	id, name, desc, vpc string
	rules               []string // "tcp:22:203.0.113.0/24"
}

type image struct {
	tagged
	id, name, state, source, reason string
	readyAt                         time.Time
	snapshots                       []string
	owner                           string    // "": the account's own (SelfAccount)
	created                         time.Time // CreationDate
	public                          bool
}

type snapshot struct {
	tagged
	id, image string
}

type volume struct {
	tagged
	id, instance string
	size         int
	typ          string
}

// New starts a fake on 127.0.0.1; it stops when Close is called.
func New(opts Options) *Fake {
	if opts.PublicIP == "" {
		opts.PublicIP = "203.0.113.10"
	}
	if opts.PrivateIP == "" {
		opts.PrivateIP = "10.0.0.10"
	}
	f := &Fake{
		opts:      opts,
		instances: map[string]*instance{},
		keys:      map[string]*keyPair{},
		groups:    map[string]*group{},
		images:    map[string]*image{},
		snapshots: map[string]*snapshot{},
		volumes:   map[string]*volume{},
		tokens:    map[string]string{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.URL = f.srv.URL
	return f
}

// Close stops the server.
func (f *Fake) Close() { f.srv.Close() }

// Inject adds a fault; faults are matched in the order they were added.
func (f *Fake) Inject(flt Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if flt.Status == 0 {
		flt.Status = http.StatusBadRequest
	}
	f.faults = append(f.faults, &flt)
}

// Requests returns the calls received so far.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// Calls counts the calls of one action.
func (f *Fake) Calls(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if r.Action == action {
			n++
		}
	}
	return n
}

// CallsSince counts the calls of the actions made at or after t, and of
// those how many Options.Throttle refused.
func (f *Fake) CallsSince(t time.Time, actions ...string) (calls, throttled int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.requests) - 1; i >= 0 && !f.requests[i].At.Before(t); i-- {
		if r := f.requests[i]; len(actions) == 0 || contains(actions, r.Action) {
			calls++
			if r.Throttled {
				throttled++
			}
		}
	}
	return calls, throttled
}

// Violations lists things a careful driver never does (terminating an
// instance whose image is still pending, imaging a running instance unasked).
func (f *Fake) Violations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.violations...)
}

// Live lists what a driver could leak, images and their snapshots excepted:
// instances not yet terminated, key pairs and security groups, each with Build
// from its imagegen:build tag.
func (f *Fake) Live() []clouds.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	var out []clouds.Resource
	for _, in := range f.instances {
		f.advance(in, now)
		if in.state != "terminated" {
			out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: in.id, Name: in.tags["Name"], Build: in.tags[clouds.TagBuild]})
		}
	}
	for _, k := range f.keys {
		out = append(out, clouds.Resource{Kind: clouds.KindKeyPair, ID: k.name, Name: k.name, Build: k.tags[clouds.TagBuild]})
	}
	for _, g := range f.groups {
		out = append(out, clouds.Resource{Kind: clouds.KindSecurityGroup, ID: g.id, Name: g.name, Build: g.tags[clouds.TagBuild]})
	}
	sortResources(out)
	return out
}

// Volumes lists the EBS volumes that exist, with Build from their tag.
func (f *Fake) Volumes() []clouds.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for _, in := range f.instances {
		f.advance(in, now)
	}
	var out []clouds.Resource
	for _, v := range f.volumes {
		out = append(out, clouds.Resource{Kind: clouds.KindVolume, ID: v.id, Build: v.tags[clouds.TagBuild]})
	}
	sortResources(out)
	return out
}

// Snapshots lists the EBS snapshots that exist, with Build from their tag.
func (f *Fake) Snapshots() []clouds.Resource {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []clouds.Resource
	for _, s := range f.snapshots {
		out = append(out, clouds.Resource{Kind: clouds.KindSnapshot, ID: s.id, Build: s.tags[clouds.TagBuild]})
	}
	sortResources(out)
	return out
}

// Images lists the images the account owns, with their tags and snapshots.
func (f *Fake) Images() []clouds.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	var out []clouds.Image
	for _, im := range f.images {
		f.advanceImage(im, now)
		ci := clouds.Image{ID: im.id, Name: im.name, Tags: copyTags(im.tags)}
		for _, s := range im.snapshots {
			ci.Resources = append(ci.Resources, clouds.Resource{Kind: clouds.KindSnapshot, ID: s})
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Groups returns the ingress rules of a security group ("tcp:22:cidr").
func (f *Fake) Groups() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for _, g := range f.groups {
		out[g.id] = append([]string(nil), g.rules...)
	}
	return out
}

// UserData returns the decoded user data an instance was launched with.
func (f *Fake) UserData(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in, ok := f.instances[id]; ok {
		return in.userData
	}
	return ""
}

// InstanceTags returns an instance's tags.
func (f *Fake) InstanceTags(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in, ok := f.instances[id]; ok {
		return copyTags(in.tags)
	}
	return nil
}

func sortResources(rs []clouds.Resource) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Kind+rs[i].ID < rs[j].Kind+rs[j].ID })
}

func copyTags(t map[string]string) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

// apiError is an EC2 error answer.
type apiError struct {
	status  int
	code    string
	message string
}

func errf(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

var credentialRE = regexp.MustCompile(`Credential=([^/]+)/\d{8}/([^/]+)/ec2/aws4_request`)

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, "", errf("InvalidAction", "the EC2 Query API takes POST"))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, "", errf("MalformedQueryString", "%v", err))
		return
	}
	action := r.PostForm.Get("Action")
	m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		writeError(w, "", &apiError{status: http.StatusUnauthorized, code: "AuthFailure", message: "request not signed with SigV4"})
		return
	}
	if r.PostForm.Get("Version") == "" {
		writeError(w, "", errf("MissingParameter", "Version"))
		return
	}
	f.mu.Lock()
	now := time.Now()
	req := Request{Action: action, AccessKey: m[1], Region: m[2], Form: r.PostForm, At: now}
	for i := range f.opts.Throttle {
		if !f.opts.Throttle[i].take(action, now) {
			req.Throttled = true
			f.record(req)
			f.mu.Unlock()
			writeError(w, action, &apiError{status: http.StatusServiceUnavailable, code: "RequestLimitExceeded", message: "Request limit exceeded."})
			return
		}
	}
	f.record(req)
	e, delay := f.fault(action)
	if e != nil {
		f.mu.Unlock()
		writeError(w, action, e)
		return
	}
	body, e := f.do(action, r.PostForm)
	rid := f.reqID()
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if e != nil {
		writeError(w, action, e)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	el(action+"Response", append([]node{tx("requestId", rid)}, body...)...).write(&b)
	_, _ = w.Write([]byte(b.String()))
}

func (f *Fake) fault(action string) (*apiError, time.Duration) {
	for i, flt := range f.faults {
		if flt.Action != "" && flt.Action != action {
			continue
		}
		if flt.Times > 0 {
			flt.Times--
			if flt.Times == 0 {
				f.faults = append(f.faults[:i:i], f.faults[i+1:]...)
			}
		}
		if flt.Code == "" {
			return nil, flt.Delay
		}
		return &apiError{status: flt.Status, code: flt.Code, message: "injected fault"}, 0
	}
	return nil, 0
}

func (f *Fake) reqID() string {
	f.seq++
	return fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
}

func writeError(w http.ResponseWriter, _ string, e *apiError) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.status)
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	el("Response",
		el("Errors", el("Error", tx("Code", e.code), tx("Message", e.message))),
		tx("RequestID", "ffffffff-0000-4000-8000-000000000000"),
	).write(&b)
	_, _ = w.Write([]byte(b.String()))
}

func (f *Fake) newID(prefix string) string {
	f.seq++
	h := sha256.Sum256([]byte(fmt.Sprint(prefix, f.seq, time.Now().UnixNano())))
	return prefix + "-0" + hex.EncodeToString(h[:8])
}

func (f *Fake) do(action string, form url.Values) ([]node, *apiError) {
	now := time.Now()
	switch action {
	case "DescribeImages":
		return f.describeImages(form, now)
	case "DescribeSubnets":
		for _, id := range list(form, "SubnetId") {
			if id != Subnet {
				return nil, errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
			}
		}
		return []node{el("subnetSet", el("item", tx("subnetId", Subnet), tx("vpcId", VPC), tx("state", "available")))}, nil
	case "ImportKeyPair":
		return f.importKeyPair(form)
	case "DescribeKeyPairs":
		return f.describeKeyPairs(form)
	case "DeleteKeyPair":
		name := form.Get("KeyName")
		// EC2 answers success for a key pair that does not exist.
		delete(f.keys, name)
		return []node{tx("return", "true")}, nil
	case "CreateSecurityGroup":
		return f.createGroup(form)
	case "AuthorizeSecurityGroupIngress":
		return f.authorize(form)
	case "DescribeSecurityGroups":
		return f.describeGroups(form)
	case "DeleteSecurityGroup":
		return f.deleteGroup(form, now)
	case "RunInstances":
		return f.runInstances(form, now)
	case "DescribeInstances":
		return f.describeInstances(form, now)
	case "StopInstances":
		return f.changeInstances(form, now, "stop")
	case "TerminateInstances":
		return f.changeInstances(form, now, "terminate")
	case "GetConsoleOutput":
		return f.consoleOutput(form, now)
	case "CreateImage":
		return f.createImage(form, now)
	case "DeregisterImage":
		id := form.Get("ImageId")
		im, ok := f.images[id]
		if !ok {
			return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
		delete(f.images, im.id)
		return []node{tx("return", "true")}, nil
	case "DescribeSnapshots":
		return f.describeSnapshots(form)
	case "CreateTags":
		return f.createTags(form)
	case "DeleteSnapshot":
		id := form.Get("SnapshotId")
		s, ok := f.snapshots[id]
		if !ok {
			return nil, errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
		if _, used := f.images[s.image]; used {
			return nil, errf("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", id, s.image)
		}
		delete(f.snapshots, id)
		return []node{tx("return", "true")}, nil
	}
	return nil, errf("InvalidAction", "The action %s is not valid for this web service.", action)
}

// createTags sets tags on existing resources (ResourceId.N, Tag.N.Key,
// Tag.N.Value), replacing a key's value when it is there; like EC2, an
// unknown id fails the whole call with its type's NotFound code.
func (f *Fake) createTags(form url.Values) ([]node, *apiError) {
	ids := list(form, "ResourceId")
	if len(ids) == 0 {
		return nil, errf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	tags := map[string]string{}
	for j := 1; ; j++ {
		k, ok := form["Tag."+strconv.Itoa(j)+".Key"]
		if !ok {
			break
		}
		if len(k[0]) > 128 || len(form.Get("Tag."+strconv.Itoa(j)+".Value")) > 256 {
			return nil, errf("InvalidParameterValue", "Tag key or value exceeds the maximum length")
		}
		tags[k[0]] = form.Get("Tag." + strconv.Itoa(j) + ".Value")
	}
	var targets []*tagged
	for _, id := range ids {
		switch {
		case f.images[id] != nil:
			targets = append(targets, &f.images[id].tagged)
		case f.snapshots[id] != nil:
			targets = append(targets, &f.snapshots[id].tagged)
		case f.instances[id] != nil:
			targets = append(targets, &f.instances[id].tagged)
		case f.groups[id] != nil:
			targets = append(targets, &f.groups[id].tagged)
		case f.volumes[id] != nil:
			targets = append(targets, &f.volumes[id].tagged)
		case strings.HasPrefix(id, "ami-"):
			return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		default:
			return nil, errf("InvalidID", "The ID '%s' is not valid", id)
		}
	}
	for _, t := range targets {
		if t.tags == nil {
			t.tags = map[string]string{}
		}
		for k, v := range tags {
			t.tags[k] = v
		}
	}
	return []node{tx("return", "true")}, nil
}

// ---- form decoding (the EC2 query protocol's flattened lists)

// list reads Key.1, Key.2, ...
func list(form url.Values, key string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[key+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// count says how many Key.N.* entries there are.
func count(form url.Values, key string) int {
	n := 0
	for i := 1; ; i++ {
		prefix := key + "." + strconv.Itoa(i) + "."
		found := false
		for k := range form {
			if strings.HasPrefix(k, prefix) {
				found = true
				break
			}
		}
		if !found {
			return n
		}
		n++
	}
}

// tagSpecs reads TagSpecification.N.{ResourceType,Tag.M.Key,Tag.M.Value}.
func tagSpecs(form url.Values) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i := 1; i <= count(form, "TagSpecification"); i++ {
		p := "TagSpecification." + strconv.Itoa(i) + "."
		rt := form.Get(p + "ResourceType")
		tags := map[string]string{}
		for j := 1; ; j++ {
			k, ok := form[p+"Tag."+strconv.Itoa(j)+".Key"]
			if !ok {
				break
			}
			tags[k[0]] = form.Get(p + "Tag." + strconv.Itoa(j) + ".Value")
		}
		out[rt] = tags
	}
	return out
}

type filter struct {
	name   string
	values []string
	exact  map[string]bool // the values without wildcards
	globs  []string        // the values with
}

func filters(form url.Values) []filter {
	var out []filter
	for i := 1; i <= count(form, "Filter"); i++ {
		p := "Filter." + strconv.Itoa(i) + "."
		f := filter{name: form.Get(p + "Name"), values: list(form, p+"Value"), exact: map[string]bool{}}
		for _, v := range f.values {
			if strings.ContainsAny(v, "*?") {
				f.globs = append(f.globs, v)
			} else {
				f.exact[v] = true
			}
		}
		out = append(out, f)
	}
	return out
}

// filterLimit is EC2's answer to a call with more filter values than it takes.
func filterLimit(fs []filter) *apiError {
	n := 0
	for _, f := range fs {
		n += len(f.values)
	}
	if n > maxFilterValues {
		return errf("FilterLimitExceeded", "The maximum number of filter values specified on a single call is %d", maxFilterValues)
	}
	return nil
}

// match applies EC2's tag filters and the named attribute filters.
func match(fs []filter, tags map[string]string, attrs map[string]string) bool {
	for _, f := range fs {
		var have string
		var ok bool
		switch {
		case strings.HasPrefix(f.name, "tag:"):
			have, ok = tags[strings.TrimPrefix(f.name, "tag:")]
		case f.name == "tag-key":
			for _, v := range f.values {
				if _, has := tags[v]; has {
					ok = true
				}
			}
			if !ok {
				return false
			}
			continue
		default:
			have, ok = attrs[f.name]
		}
		if !ok {
			return false
		}
		hit := f.exact[have]
		for _, v := range f.globs {
			if m, _ := path.Match(v, have); m {
				hit = true
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

// ---- XML

type node struct {
	name, text string
	kids       []node
	leaf       bool
}

func el(name string, kids ...node) node { return node{name: name, kids: kids} }
func tx(name, text string) node         { return node{name: name, text: text, leaf: true} }

func (n node) write(b *strings.Builder) {
	b.WriteString("<" + n.name + ">")
	if n.leaf {
		xmlEscape(b, n.text)
	}
	for _, k := range n.kids {
		k.write(b)
	}
	b.WriteString("</" + n.name + ">")
}

func xmlEscape(b *strings.Builder, s string) {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;")
	b.WriteString(r.Replace(s))
}

func tagSet(tags map[string]string) node {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	items := make([]node, 0, len(keys))
	for _, k := range keys {
		items = append(items, el("item", tx("key", k), tx("value", tags[k])))
	}
	return el("tagSet", items...)
}

// ---- images

func (f *Fake) advanceImage(im *image, now time.Time) {
	if im.state == "pending" && !now.Before(im.readyAt) {
		if f.opts.FailImages {
			im.state, im.reason = "failed", "Client.InternalError: the snapshot of the root volume failed"
		} else {
			im.state = "available"
		}
	}
}

func baseImageNode() node {
	return el("item", tx("imageId", BaseImage), tx("imageState", "available"), tx("name", "ubuntu-base"),
		tx("imageOwnerId", "099720109477"), tx("rootDeviceName", "/dev/sda1"), tx("rootDeviceType", "ebs"),
		el("blockDeviceMapping", el("item", tx("deviceName", "/dev/sda1"),
			el("ebs", tx("snapshotId", "snap-0base"), tx("volumeSize", "8"), tx("deleteOnTermination", "true"), tx("volumeType", "gp2")))))
}

func (f *Fake) imageNode(im *image) node {
	bdm := []node{}
	for i, s := range im.snapshots {
		dev := "/dev/sda1"
		if i > 0 {
			dev = fmt.Sprintf("/dev/sd%c", 'b'+i-1)
		}
		bdm = append(bdm, el("item", tx("deviceName", dev), el("ebs", tx("snapshotId", s), tx("deleteOnTermination", "true"))))
	}
	kids := []node{tx("imageId", im.id), tx("imageState", im.state), tx("name", im.name), tx("imageOwnerId", im.ownerID()),
		tx("creationDate", im.created.UTC().Format(creationDate)), tx("isPublic", strconv.FormatBool(im.public)),
		tx("sourceInstanceId", im.source), tx("rootDeviceName", "/dev/sda1"), tx("rootDeviceType", "ebs"),
		el("blockDeviceMapping", bdm...), tagSet(im.tags)}
	if im.reason != "" {
		kids = append(kids, el("stateReason", tx("code", "Client.InternalError"), tx("message", im.reason)))
	}
	return el("item", kids...)
}

var (
	amiID        = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	instanceType = regexp.MustCompile(`^[a-z0-9-]+\.[a-z0-9]+$`)
)

// creationDate is how EC2 writes an image's creation time (and matches the
// creation-date filter against it: "2021-09-29T*" is a day).
const creationDate = "2006-01-02T15:04:05.000Z"

func validAMI(id string) bool { return amiID.MatchString(id) }

// describeImages answers as EC2 does: by id, owner and filters, sorted (by
// id here), in pages of MaxResults with a NextToken while more remain.
// MaxResults cannot go with ImageIds.
func (f *Fake) describeImages(form url.Values, now time.Time) ([]node, *apiError) {
	ids := list(form, "ImageId")
	owners := list(form, "Owner")
	fs := filters(form)
	if e := filterLimit(fs); e != nil {
		return nil, e
	}
	for _, fl := range fs {
		if contains(f.opts.NoFilters, fl.name) {
			return nil, errf("InvalidParameterValue", "The filter '%s' is invalid", fl.name)
		}
	}
	page, paged := 0, form.Get("MaxResults") != "" || form.Get("NextToken") != ""
	if v := form.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, errf("InvalidParameterValue", "Value ( %s ) for parameter maxResults is invalid. Expecting a value between 1 and 1000.", v)
		}
		if len(ids) > 0 {
			return nil, errf("InvalidParameterCombination", "The parameter imageIdsSet cannot be used with the parameter maxResults")
		}
		page = n
	}
	if page == 0 || f.opts.ImagePage > 0 && f.opts.ImagePage < page {
		page = f.opts.ImagePage
	}
	after := ""
	if tok := form.Get("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		rest, ok := strings.CutPrefix(string(b), "images-after:")
		if err != nil || !ok {
			return nil, errf("InvalidPaginationToken", "Invalid pagination token %s", tok)
		}
		after = rest
	}
	var items []node
	for _, id := range ids {
		if !validAMI(id) {
			return nil, errf("InvalidAMIID.Malformed", "Invalid id: \"%s\"", id)
		}
		if id == BaseImage {
			continue
		}
		if im, ok := f.images[id]; !ok || f.hidden(im.created, now) {
			return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
	}
	if (len(ids) == 0 && len(owners) == 0) || contains(ids, BaseImage) {
		if form.Get("NextToken") == "" && match(fs, nil, map[string]string{"image-id": BaseImage, "state": "available", "name": "ubuntu-base"}) {
			items = append(items, baseImageNode())
		}
	}
	ownedBy := func(im *image) bool {
		return len(owners) == 0 || contains(owners, im.ownerID()) || (im.owner == "" && contains(owners, "self"))
	}
	var keys []string
	if len(ids) > 0 {
		// Asked by id (the driver's polls): those only, not every image sorted.
		for _, id := range ids {
			if _, ok := f.images[id]; ok && !contains(keys, id) {
				keys = append(keys, id)
			}
		}
	} else {
		keys = make([]string, 0, len(f.images))
		for id := range f.images {
			keys = append(keys, id)
		}
	}
	sort.Strings(keys)
	var next string
	for _, id := range keys {
		im := f.images[id]
		f.advanceImage(im, now)
		if !ownedBy(im) || f.hidden(im.created, now) {
			continue
		}
		// The base image comes first, on the first page only; a token after
		// it starts at the account's first image.
		if after != "" && after != BaseImage && id <= after {
			continue
		}
		if !match(fs, im.tags, map[string]string{"image-id": im.id, "name": im.name, "state": im.state, "owner-id": im.ownerID(), "is-public": strconv.FormatBool(im.public),
			"creation-date": im.created.UTC().Format(creationDate)}) {
			continue
		}
		if paged && page > 0 && len(items) == page {
			next = base64.RawURLEncoding.EncodeToString([]byte("images-after:" + keyOf(items[len(items)-1])))
			break
		}
		items = append(items, f.imageNode(im))
	}
	out := []node{el("imagesSet", items...)}
	if next != "" {
		out = append(out, tx("nextToken", next))
	}
	return out, nil
}

// keyOf is an image item's imageId.
func keyOf(item node) string {
	for _, k := range item.kids {
		if k.name == "imageId" {
			return k.text
		}
	}
	return ""
}

// AddImage puts an image the account owns straight into the fake, as a test's
// history: state "" is available (pending stays pending). Like CreateImage's,
// it is backed by one EBS snapshot carrying the same tags.
func (f *Fake) AddImage(name, state string, tags map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == "" {
		state = "available"
	}
	im := &image{tagged: tagged{tags: copyTags(tags)}, id: f.newID("ami"), name: name, state: state, created: time.Now()}
	if state == "pending" {
		im.readyAt = time.Now().Add(24 * time.Hour)
	}
	s := &snapshot{tagged: tagged{tags: copyTags(tags)}, id: f.newID("snap"), image: im.id}
	f.snapshots[s.id] = s
	im.snapshots = []string{s.id}
	f.images[im.id] = im
	return im.id
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (f *Fake) createImage(form url.Values, now time.Time) ([]node, *apiError) {
	id := form.Get("InstanceId")
	in, ok := f.instances[id]
	if !ok {
		return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	f.advance(in, now)
	switch in.state {
	case "running":
		if form.Get("NoReboot") == "true" {
			f.violations = append(f.violations, "CreateImage of running instance "+id+" with NoReboot: the disk may be inconsistent")
		}
	case "stopped":
	default:
		return nil, errf("IncorrectInstanceState", "The instance '%s' is not in a state from which it can be imaged.", id)
	}
	name := form.Get("Name")
	if name == "" {
		return nil, errf("MissingParameter", "The request must contain the parameter name")
	}
	for _, im := range f.images {
		if im.name == name {
			return nil, errf("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, im.id)
		}
	}
	specs := tagSpecs(form)
	im := &image{tagged: tagged{tags: specs["image"]}, id: f.newID("ami"), name: name, state: "pending", source: id,
		readyAt: now.Add(f.opts.ImageDelay), created: now}
	if im.tags == nil {
		im.tags = map[string]string{}
	}
	s := &snapshot{tagged: tagged{tags: specs["snapshot"]}, id: f.newID("snap"), image: im.id}
	if s.tags == nil {
		s.tags = map[string]string{}
	}
	f.snapshots[s.id] = s
	im.snapshots = []string{s.id}
	f.images[im.id] = im
	return []node{tx("imageId", im.id)}, nil
}

func (f *Fake) describeSnapshots(form url.Values) ([]node, *apiError) {
	ids := list(form, "SnapshotId")
	for _, id := range ids {
		if _, ok := f.snapshots[id]; !ok {
			return nil, errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
	}
	fs := filters(form)
	var items []node
	keys := make([]string, 0, len(f.snapshots))
	for id := range f.snapshots {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	for _, id := range keys {
		s := f.snapshots[id]
		if len(ids) > 0 && !contains(ids, id) {
			continue
		}
		desc := "Created by CreateImage for " + s.image
		if match(fs, s.tags, map[string]string{"snapshot-id": s.id, "description": desc, "status": "completed"}) {
			items = append(items, el("item", tx("snapshotId", s.id), tx("status", "completed"), tx("description", desc),
				tx("ownerId", "123456789012"), tagSet(s.tags)))
		}
	}
	return []node{el("snapshotSet", items...)}, nil
}

// ---- key pairs and security groups

func (f *Fake) importKeyPair(form url.Values) ([]node, *apiError) {
	name := form.Get("KeyName")
	if name == "" || len(name) > 255 {
		return nil, errf("InvalidParameterValue", "invalid key name %q", name)
	}
	if _, ok := f.keys[name]; ok {
		return nil, errf("InvalidKeyPair.Duplicate", "The keypair '%s' already exists.", name)
	}
	// PublicKeyMaterial is a blob: the SDK sends it base64-encoded.
	mat, err := base64.StdEncoding.DecodeString(form.Get("PublicKeyMaterial"))
	if err != nil || !strings.HasPrefix(string(mat), "ssh-") && !strings.HasPrefix(string(mat), "ecdsa-") {
		return nil, errf("InvalidKey.Format", "Key is not in valid OpenSSH public key format")
	}
	h := sha256.Sum256(mat)
	k := &keyPair{tagged: tagged{tags: tagSpecs(form)["key-pair"]}, id: f.newID("key"), name: name,
		fingerprint: base64.RawStdEncoding.EncodeToString(h[:]), material: string(mat)}
	if k.tags == nil {
		k.tags = map[string]string{}
	}
	f.keys[name] = k
	return []node{tx("keyFingerprint", k.fingerprint), tx("keyName", k.name), tx("keyPairId", k.id), tagSet(k.tags)}, nil
}

func (f *Fake) describeKeyPairs(form url.Values) ([]node, *apiError) {
	names := list(form, "KeyName")
	for _, n := range names {
		if _, ok := f.keys[n]; !ok {
			return nil, errf("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", n)
		}
	}
	fs := filters(form)
	var items []node
	for _, k := range sortedKeys(f.keys) {
		kp := f.keys[k]
		if len(names) > 0 && !contains(names, kp.name) {
			continue
		}
		if match(fs, kp.tags, map[string]string{"key-name": kp.name, "key-pair-id": kp.id}) {
			items = append(items, el("item", tx("keyPairId", kp.id), tx("keyName", kp.name), tx("keyFingerprint", kp.fingerprint), tagSet(kp.tags)))
		}
	}
	return []node{el("keySet", items...)}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (f *Fake) createGroup(form url.Values) ([]node, *apiError) {
	name, desc := form.Get("GroupName"), form.Get("GroupDescription")
	if name == "" || desc == "" {
		return nil, errf("MissingParameter", "GroupName and GroupDescription are required")
	}
	vpc := form.Get("VpcId")
	if vpc == "" {
		vpc = VPC
	}
	for _, g := range f.groups {
		if g.name == name && g.vpc == vpc {
			return nil, errf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpc)
		}
	}
	g := &group{tagged: tagged{tags: tagSpecs(form)["security-group"]}, id: f.newID("sg"), name: name, desc: desc, vpc: vpc}
	if g.tags == nil {
		g.tags = map[string]string{}
	}
	f.groups[g.id] = g
	return []node{tx("return", "true"), tx("groupId", g.id), tagSet(g.tags)}, nil
}

func (f *Fake) authorize(form url.Values) ([]node, *apiError) {
	g, ok := f.groups[form.Get("GroupId")]
	if !ok {
		return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", form.Get("GroupId"))
	}
	for i := 1; i <= count(form, "IpPermissions"); i++ {
		p := "IpPermissions." + strconv.Itoa(i) + "."
		for _, cidr := range listField(form, p+"IpRanges", "CidrIp") {
			g.rules = append(g.rules, fmt.Sprintf("%s:%s-%s:%s", form.Get(p+"IpProtocol"), form.Get(p+"FromPort"), form.Get(p+"ToPort"), cidr))
		}
	}
	if len(g.rules) == 0 {
		return nil, errf("MissingParameter", "no IpPermissions")
	}
	return []node{tx("return", "true")}, nil
}

// listField reads Key.N.Field for N = 1, 2, ...
func listField(form url.Values, key, field string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[key+"."+strconv.Itoa(i)+"."+field]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

func (f *Fake) describeGroups(form url.Values) ([]node, *apiError) {
	ids := list(form, "GroupId")
	for _, id := range ids {
		if _, ok := f.groups[id]; !ok {
			return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		}
	}
	fs := filters(form)
	var items []node
	for _, id := range sortedKeys(f.groups) {
		g := f.groups[id]
		if len(ids) > 0 && !contains(ids, id) {
			continue
		}
		if match(fs, g.tags, map[string]string{"group-id": g.id, "group-name": g.name, "vpc-id": g.vpc}) {
			items = append(items, el("item", tx("groupId", g.id), tx("groupName", g.name), tx("groupDescription", g.desc),
				tx("vpcId", g.vpc), tx("ownerId", "123456789012"), tagSet(g.tags)))
		}
	}
	return []node{el("securityGroupInfo", items...)}, nil
}

func (f *Fake) deleteGroup(form url.Values, now time.Time) ([]node, *apiError) {
	id := form.Get("GroupId")
	g, ok := f.groups[id]
	if !ok {
		return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	}
	for _, in := range f.instances {
		f.advance(in, now)
		if !contains(in.groups, id) {
			continue
		}
		if in.state != "terminated" || now.Before(in.terminatedAt.Add(f.opts.DependencyLinger)) {
			return nil, errf("DependencyViolation", "resource %s has a dependent object", id)
		}
	}
	delete(f.groups, g.id)
	return []node{tx("return", "true"), tx("groupId", id)}, nil
}

// ---- instances

// advance moves an instance along its state machine as time passes.
func (f *Fake) advance(in *instance, now time.Time) {
	if in.target == "" || now.Before(in.changeAt) {
		return
	}
	in.state, in.target = in.target, ""
	if in.state == "terminated" {
		in.terminatedAt = in.changeAt
		for id, v := range f.volumes {
			if v.instance == in.id {
				delete(f.volumes, id)
			}
		}
	}
}

func (f *Fake) setState(in *instance, now time.Time, transit, final string, d time.Duration) {
	in.state, in.target, in.changeAt = transit, final, now.Add(d)
	if d == 0 {
		f.advance(in, now)
	}
}

var stateCodes = map[string]string{"pending": "0", "running": "16", "shutting-down": "32", "terminated": "48", "stopping": "64", "stopped": "80"}

func stateNode(name, state string) node {
	return el(name, tx("code", stateCodes[state]), tx("name", state))
}

func (f *Fake) instanceNode(in *instance) node {
	kids := []node{tx("instanceId", in.id), tx("imageId", in.imageID), stateNode("instanceState", in.state),
		tx("instanceType", in.typ), tx("keyName", in.keyName), tx("subnetId", in.subnet), tx("vpcId", VPC),
		tx("clientToken", in.clientToken), tx("rootDeviceName", in.rootDevice), tx("rootDeviceType", "ebs")}
	if in.state == "running" || in.state == "stopping" || in.state == "pending" {
		kids = append(kids, tx("privateIpAddress", f.opts.PrivateIP))
		if in.publicIP && in.state == "running" {
			kids = append(kids, tx("ipAddress", f.opts.PublicIP))
		}
	}
	var groups []node
	for _, g := range in.groups {
		groups = append(groups, el("item", tx("groupId", g)))
	}
	kids = append(kids, el("groupSet", groups...))
	if in.volume != "" {
		kids = append(kids, el("blockDeviceMapping", el("item", tx("deviceName", in.rootDevice),
			el("ebs", tx("volumeId", in.volume), tx("status", "attached"), tx("deleteOnTermination", "true")))))
	}
	kids = append(kids, tagSet(in.tags))
	return el("item", kids...)
}

// runInstances is RunInstances: one instance, pending for BootDelay, with its
// root volume; a ClientToken seen before answers that reservation again.
func (f *Fake) runInstances(form url.Values, now time.Time) ([]node, *apiError) {
	if token := form.Get("ClientToken"); token != "" {
		if id, ok := f.tokens[token]; ok {
			// Idempotent: the same token answers the same reservation.
			return []node{tx("reservationId", "r-"+id), tx("ownerId", "123456789012"), el("instancesSet", f.instanceNode(f.instances[id]))}, nil
		}
	}
	img, typ, keyName, aerr := f.runTarget(form)
	if aerr != nil {
		return nil, aerr
	}
	subnet, groups, publicIP, aerr := f.runNetwork(form)
	if aerr != nil {
		return nil, aerr
	}
	var userData string
	if ud := form.Get("UserData"); ud != "" {
		b, err := base64.StdEncoding.DecodeString(ud)
		if err != nil {
			return nil, errf("InvalidParameterValue", "Invalid BASE64 encoding of user data.")
		}
		userData = string(b)
	}
	specs := tagSpecs(form)
	in := &instance{tagged: tagged{tags: specs["instance"]}, id: f.newID("i"), imageID: img, typ: typ, keyName: keyName,
		userData: userData, subnet: subnet, clientToken: form.Get("ClientToken"), publicIP: publicIP, groups: groups, rootDevice: "/dev/sda1",
		created: now}
	if in.tags == nil {
		in.tags = map[string]string{}
	}
	v := &volume{tagged: tagged{tags: specs["volume"]}, id: f.newID("vol"), instance: in.id, size: 8, typ: "gp2"}
	if v.tags == nil {
		v.tags = map[string]string{}
	}
	if dev := form.Get("BlockDeviceMapping.1.DeviceName"); dev != "" {
		if dev != "/dev/sda1" {
			return nil, errf("InvalidBlockDeviceMapping", "the root device of %s is /dev/sda1, not %s", img, dev)
		}
		if s := form.Get("BlockDeviceMapping.1.Ebs.VolumeSize"); s != "" {
			v.size, _ = strconv.Atoi(s)
		}
		if t := form.Get("BlockDeviceMapping.1.Ebs.VolumeType"); t != "" {
			v.typ = t
		}
	}
	f.volumes[v.id] = v
	in.volume = v.id
	f.instances[in.id] = in
	if in.clientToken != "" {
		f.tokens[in.clientToken] = in.id
	}
	f.setState(in, now, "pending", "running", f.opts.BootDelay)
	if k, ok := f.keys[keyName]; ok && f.opts.InstallKey != nil {
		f.opts.InstallKey(k.material)
	}
	var gs []node
	for _, g := range groups {
		gs = append(gs, el("item", tx("groupId", g)))
	}
	return []node{tx("reservationId", "r-"+in.id), tx("ownerId", "123456789012"), el("groupSet", gs...), el("instancesSet", f.instanceNode(in))}, nil
}

// runTarget checks what a RunInstances launches: a known, available image,
// exactly one instance, a well-formed type (default m1.small), a known key pair.
func (f *Fake) runTarget(form url.Values) (img, typ, keyName string, aerr *apiError) {
	img = form.Get("ImageId")
	if !validAMI(img) {
		return "", "", "", errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", img)
	}
	if img != BaseImage {
		if im, ok := f.images[img]; !ok || im.state != "available" {
			return "", "", "", errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", img)
		}
	}
	if form.Get("MinCount") != "1" || form.Get("MaxCount") != "1" {
		return "", "", "", errf("InvalidParameterValue", "imagegen launches exactly one instance")
	}
	typ = form.Get("InstanceType")
	if typ == "" {
		typ = "m1.small"
	}
	if !instanceType.MatchString(typ) {
		return "", "", "", errf("InvalidParameterValue", "Invalid value '%s' for InstanceType.", typ)
	}
	keyName = form.Get("KeyName")
	if keyName != "" {
		if _, ok := f.keys[keyName]; !ok {
			return "", "", "", errf("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", keyName)
		}
	}
	return img, typ, keyName, nil
}

// runNetwork reads where a RunInstances puts the instance: the subnet and
// security groups, given on the instance or on its one network interface
// (which also says whether it gets a public address), never both.
func (f *Fake) runNetwork(form url.Values) (subnet string, groups []string, publicIP bool, aerr *apiError) {
	subnet, groups = form.Get("SubnetId"), list(form, "SecurityGroupId")
	publicIP = true
	if count(form, "NetworkInterface") > 0 {
		if subnet != "" || len(groups) > 0 {
			return "", nil, false, errf("InvalidParameterCombination", "Network interfaces and an instance-level subnet ID or security groups may not be specified on the same request")
		}
		p := "NetworkInterface.1."
		if form.Get(p+"DeviceIndex") != "0" {
			return "", nil, false, errf("InvalidParameterValue", "the first network interface needs DeviceIndex 0")
		}
		subnet, groups = form.Get(p+"SubnetId"), list(form, p+"SecurityGroupId")
		publicIP = form.Get(p+"AssociatePublicIpAddress") == "true"
	}
	if subnet != "" && subnet != Subnet {
		return "", nil, false, errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", subnet)
	}
	for _, g := range groups {
		if _, ok := f.groups[g]; !ok {
			return "", nil, false, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", g)
		}
	}
	return subnet, groups, publicIP, nil
}

// describeInstances answers as EC2 does: by id (an unknown one fails the
// call) or filters (at most 200 values), sorted by id here, in pages of
// MaxResults (5 to 1000, not with InstanceId) with a NextToken while more
// remain.
func (f *Fake) describeInstances(form url.Values, now time.Time) ([]node, *apiError) {
	ids := list(form, "InstanceId")
	for _, id := range ids {
		if in, ok := f.instances[id]; !ok || f.hidden(in.created, now) {
			return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	fs := filters(form)
	if e := filterLimit(fs); e != nil {
		return nil, e
	}
	page := 0
	if v := form.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 1000 {
			return nil, errf("InvalidParameterValue", "Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", v)
		}
		if len(ids) > 0 {
			return nil, errf("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
		}
		page = n
	}
	after := ""
	if tok := form.Get("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		rest, ok := strings.CutPrefix(string(b), "instances-after:")
		if err != nil || !ok {
			return nil, errf("InvalidPaginationToken", "Invalid pagination token %s", tok)
		}
		after = rest
	}
	var res []node
	next := ""
	look := ids // asked by id: those only, in the order asked (MaxResults is refused with ids)
	if len(look) == 0 {
		look = sortedKeys(f.instances)
	}
	for _, id := range look {
		in := f.instances[id]
		f.advance(in, now)
		if id <= after || f.hidden(in.created, now) {
			continue
		}
		if match(fs, in.tags, map[string]string{"instance-id": in.id, "instance-state-name": in.state, "client-token": in.clientToken, "image-id": in.imageID}) {
			if page > 0 && len(res) == page {
				next = base64.RawURLEncoding.EncodeToString([]byte("instances-after:" + res[len(res)-1].kids[0].text[len("r-"):]))
				break
			}
			res = append(res, el("item", tx("reservationId", "r-"+in.id), tx("ownerId", "123456789012"), el("instancesSet", f.instanceNode(in))))
		}
	}
	out := []node{el("reservationSet", res...)}
	if next != "" {
		out = append(out, tx("nextToken", next))
	}
	return out, nil
}

// record keeps a call for Requests and Calls (the last MaxRequests to
// twice as many, with Options.MaxRequests).
func (f *Fake) record(req Request) {
	f.requests = append(f.requests, req)
	if n := f.opts.MaxRequests; n > 0 && len(f.requests) > 2*n {
		f.requests = append(f.requests[:0:0], f.requests[len(f.requests)-n:]...)
	}
}

// hidden says whether something created at created is still out of
// Describe answers (Options.Hidden).
func (f *Fake) hidden(created, now time.Time) bool {
	return f.opts.Hidden > 0 && now.Sub(created) < f.opts.Hidden
}

func (f *Fake) changeInstances(form url.Values, now time.Time, op string) ([]node, *apiError) {
	ids := list(form, "InstanceId")
	if len(ids) == 0 {
		return nil, errf("MissingParameter", "InstanceId")
	}
	var items []node
	for _, id := range ids {
		in, ok := f.instances[id]
		if !ok {
			return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
		f.advance(in, now)
		prev := in.state
		switch op {
		case "stop":
			switch in.state {
			case "running":
				f.setState(in, now, "stopping", "stopped", f.opts.StopDelay)
			case "stopping", "stopped":
			case "pending":
				return nil, errf("IncorrectInstanceState", "The instance '%s' is not in a state from which it can be stopped.", id)
			default:
				return nil, errf("IncorrectInstanceState", "This instance '%s' is not in a state from which it can be stopped.", id)
			}
		case "terminate":
			for _, im := range f.images {
				f.advanceImage(im, now)
				if im.source == id && im.state == "pending" {
					f.violations = append(f.violations, "TerminateInstances of "+id+" while its image "+im.id+" is pending")
				}
			}
			switch in.state {
			case "shutting-down", "terminated":
			default:
				f.setState(in, now, "shutting-down", "terminated", f.opts.TerminateDelay)
			}
		}
		items = append(items, el("item", tx("instanceId", id), stateNode("currentState", in.state), stateNode("previousState", prev)))
	}
	return []node{el("instancesSet", items...)}, nil
}

func (f *Fake) consoleOutput(form url.Values, now time.Time) ([]node, *apiError) {
	id := form.Get("InstanceId")
	in, ok := f.instances[id]
	if !ok {
		return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	f.advance(in, now)
	out := "[    0.000000] Linux version 6.1.0 (fake)\n"
	if in.state == "running" && f.opts.ConsoleHostKey != "" {
		out += "[   12.345678] cloud-init[612]: -----BEGIN SSH HOST KEY KEYS-----\n" +
			"[   12.345679] cloud-init[612]: " + f.opts.ConsoleHostKey + " root@fake\n" +
			"[   12.345680] cloud-init[612]: -----END SSH HOST KEY KEYS-----\n"
	}
	return []node{tx("instanceId", id), tx("timestamp", now.UTC().Format(time.RFC3339)),
		tx("output", base64.StdEncoding.EncodeToString([]byte(out)))}, nil
}
