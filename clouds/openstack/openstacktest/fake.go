// Package openstacktest is an in-process OpenStack (Keystone v3, Nova, Glance v2, Neutron, Cinder v3) for the real gophercloud client.
// It is test support with timed state changes and injectable faults; it knows no driver code, and production code never imports it.
package openstacktest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/imagegen/imagegen/clouds"
)

// Options shape the fake cloud. Zero values take the defaults noted.
type Options struct {
	Regions     []string // default ["RegionOne"]
	Username    string   // default "demo"
	Password    string   // default "secret"
	Project     string   // default "demo"
	UserDomain  string   // default "Default"
	ServerIP    string   // every server's fixed address; default 127.0.0.1
	FloatingNet string   // the external network's name; default "public"
	PrivateNet  string   // the tenant network's name; default "private"

	BootDelay     time.Duration // BUILD → ACTIVE; default 40ms
	StopDelay     time.Duration // ACTIVE → SHUTOFF; default 30ms
	SnapshotDelay time.Duration // queued/saving → active; default 60ms
	DeleteDelay   time.Duration // deleting → gone; default 30ms
	ConsoleDelay  time.Duration // after ACTIVE, until cloud-init prints the host keys; default 0

	ServerQuota     int // servers per region; default 10
	FloatingIPQuota int // floating IPs per region; default 10

	// BootFault makes new servers go to ERROR with this fault message.
	BootFault string
	// KillImages makes new snapshots end killed instead of active.
	KillImages bool
	// ImageListMax is Glance's api_limit_max: the most images one list answer
	// holds, whatever limit the client asks; default 1000. Glance's default
	// page (no limit asked) is 25.
	ImageListMax int
	// OnActive is called when a server becomes ACTIVE, with its key pair's
	// public key, as cloud-init would install it (a test authorizes it on a
	// real sshd). It runs with the fake locked: it must not call the fake.
	OnActive func(s Server, publicKey string)
	// ConsoleHostKey is the host key (authorized_keys line) servers print on the
	// console when the user data injects none; default a key generated at start.
	ConsoleHostKey string
	// Real, when set, puts the fake's Nova, Neutron and Cinder beside a real
	// Keystone and Glance (see Real).
	Real *Real
	// Throttle answers 429 (Retry-After: 1) to the requests past a rate,
	// as an API rate limit in front of the cloud does; each entry is a
	// token bucket.
	Throttle []Throttle
}

// Throttle is a token bucket: Burst requests at once, then Rate a second,
// for the requests whose "METHOD /path" matches Match (all when "").
type Throttle struct {
	Match string
	Rate  float64
	Burst int

	re     *regexp.Regexp
	tokens float64
	at     time.Time
}

// take draws a token for the request line, reporting false when the bucket
// is empty.
func (t *Throttle) take(line string, now time.Time) bool {
	if t.Match != "" {
		if t.re == nil {
			t.re = regexp.MustCompile(t.Match)
		}
		if !t.re.MatchString(line) {
			return true
		}
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

// Fault makes matching requests fail. Status 0 with Delay only delays.
type Fault struct {
	Method     string        // "" matches any
	Path       string        // regexp on the URL path; "" matches any
	Status     int           // the answer; 0: answer normally after Delay
	Body       string        // default a body in the service's error format
	RetryAfter string        // Retry-After header
	Delay      time.Duration // wait before answering
	Times      int           // how many requests it hits; 0: every one
	Skip       int           // let this many matching requests through first
	// After handles the request, then answers Status: the cloud did the work
	// but the answer was lost (a proxy's 504, a dropped connection).
	After   bool
	skipped int
	hits    int
	re      *regexp.Regexp
}

// Fake is a running fake cloud.
type Fake struct {
	// AuthURL is Keystone's v3 endpoint, for clouds.yaml's auth_url.
	AuthURL string

	srv  *httptest.Server
	mu   sync.Mutex
	opts Options
	reg  map[string]*region
	tok  map[string]bool
	flts []*Fault
	log  []string    // "METHOD path" of every request
	at   []time.Time // when each came
	thr  []bool      // whether Options.Throttle refused it
	bad  []string    // request bodies the real API would refuse
	viol []string    // things done in an order the real cloud punishes
	seq  int
	real *realLink // with Options.Real
}

type region struct {
	servers  map[string]*server
	keypairs map[string]*keypair
	images   map[string]*image
	fips     map[string]*fip
	networks []network
	flavors  []flavor
}

type server struct {
	ID, Name, Status, KeyName, ImageRef, FlavorRef, AZ string
	Metadata                                           map[string]string
	UserData                                           string
	SecGroups                                          []string
	ConfigDrive                                        bool
	VolumeSize                                         int
	Fault                                              string
	Created                                            time.Time
	due                                                time.Time // when the pending transition happens
	next                                               string    // status after due; "gone" deletes
	activeAt                                           time.Time
	PortID                                             string
}

type keypair struct{ Name, PublicKey, Fingerprint string }

type image struct {
	ID, Name, Status string
	Props            map[string]string
	Server           string
	Created          time.Time
	Updated          time.Time // the last change of status or properties: Glance's updated_at (zero: Created)
	due              time.Time
	next             string
	Visibility       string // "": private
	Owner            string // "": the project's ("p-" + Project)
}

type fip struct{ ID, Address, NetworkID, PortID, Description string }

type network struct {
	ID, Name string
	External bool
}

type flavor struct {
	ID, Name         string
	RAM, VCPUs, Disk int
}

// Server is a snapshot of a fake server, for tests.
type Server struct {
	ID, Name, Status, KeyName, ImageRef, FlavorRef, AvailabilityZone string
	Metadata                                                         map[string]string
	UserData                                                         string // decoded
	SecurityGroups                                                   []string
	ConfigDrive                                                      bool
	VolumeSize                                                       int
}

// Image is a snapshot of a fake Glance image.
type Image struct {
	ID, Name, Status string
	Properties       map[string]string
	// Visibility ("" is private), Owner ("" is the project's) and Created
	// ("" is now) of an image AddImage adds: another project's public
	// image, for image filters.
	Visibility, Owner string
	Created           time.Time
}

// FloatingIP is a snapshot of a fake floating IP.
type FloatingIP struct{ ID, Address, PortID, Description string }

// Base image and flavors every region has.
const (
	BaseImageID   = "6e5959e9-f349-420f-b77c-5485306fdc25"
	BaseImageName = "ubuntu-24.04"
)

// New starts a fake cloud on 127.0.0.1; Close stops it.
func New(o Options) *Fake {
	if len(o.Regions) == 0 {
		o.Regions = []string{"RegionOne"}
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Username, "demo")
	def(&o.Password, "secret")
	def(&o.Project, "demo")
	def(&o.UserDomain, "Default")
	def(&o.ServerIP, "127.0.0.1")
	def(&o.FloatingNet, "public")
	def(&o.PrivateNet, "private")
	defd := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defd(&o.BootDelay, 40*time.Millisecond)
	defd(&o.StopDelay, 30*time.Millisecond)
	defd(&o.SnapshotDelay, 60*time.Millisecond)
	defd(&o.DeleteDelay, 30*time.Millisecond)
	if o.ImageListMax == 0 {
		o.ImageListMax = 1000
	}
	if o.ServerQuota == 0 {
		o.ServerQuota = 10
	}
	if o.FloatingIPQuota == 0 {
		o.FloatingIPQuota = 10
	}
	if o.ConsoleHostKey == "" {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		spk, _ := ssh.NewPublicKey(pub)
		o.ConsoleHostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk)))
	}
	f := &Fake{opts: o, reg: map[string]*region{}, tok: map[string]bool{}}
	for i, name := range o.Regions {
		r := &region{
			servers: map[string]*server{}, keypairs: map[string]*keypair{}, images: map[string]*image{}, fips: map[string]*fip{},
			networks: []network{
				{ID: fmt.Sprintf("0d7b5e1c-0000-4000-8000-00000000000%d", 2*i+1), Name: o.PrivateNet},
				{ID: fmt.Sprintf("0d7b5e1c-0000-4000-8000-00000000000%d", 2*i+2), Name: o.FloatingNet, External: true},
			},
			flavors: []flavor{{"1", "m1.tiny", 512, 1, 1}, {"2", "m1.small", 2048, 1, 20}, {"3", "m1.medium", 4096, 2, 40}},
		}
		r.images[BaseImageID] = &image{ID: BaseImageID, Name: BaseImageName, Status: "active", Props: map[string]string{}, Created: time.Now()}
		f.reg[name] = r
	}
	if o.Real != nil {
		f.real = newRealLink(*o.Real)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.AuthURL = f.srv.URL + "/identity/v3"
	return f
}

// Close stops the server.
func (f *Fake) Close() { f.srv.Close() }

// URL is the server's base URL.
func (f *Fake) URL() string { return f.srv.URL }

// Update changes the options (faults like BootFault) while the fake runs.
func (f *Fake) Update(fn func(*Options)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.opts)
}

// Inject adds a fault.
func (f *Fake) Inject(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ft.Path != "" {
		ft.re = regexp.MustCompile(ft.Path)
	}
	f.flts = append(f.flts, &ft)
}

// ClearFaults removes every fault.
func (f *Fake) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flts = nil
}

// RevokeTokens invalidates every token, as a token expiry would.
func (f *Fake) RevokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tok = map[string]bool{}
}

// Requests lists "METHOD /path" of every request so far.
func (f *Fake) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// Count counts requests whose "METHOD /path" matches the regexp.
func (f *Fake) Count(pattern string) int {
	re := regexp.MustCompile(pattern)
	n := 0
	for _, r := range f.Requests() {
		if re.MatchString(r) {
			n++
		}
	}
	return n
}

// CountSince counts the requests at or after t whose "METHOD /path"
// matches the regexp, and of those how many Options.Throttle refused.
func (f *Fake) CountSince(t time.Time, pattern string) (n, throttled int) {
	re := regexp.MustCompile(pattern)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.log) - 1; i >= 0 && !f.at[i].Before(t); i-- {
		if re.MatchString(f.log[i]) {
			n++
			if f.thr[i] {
				throttled++
			}
		}
	}
	return n, throttled
}

// Rejected lists request bodies the real API would have refused (unknown
// fields, wrong types, values too long), with the reason.
func (f *Fake) Rejected() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bad...)
}

// Violations lists orderings the real cloud punishes, like deleting a server
// whose snapshot is still uploading.
func (f *Fake) Violations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.viol...)
}

// Servers lists a region's servers ("" is the first region).
func (f *Fake) Servers(reg string) []Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.region(reg)
	f.advance(r)
	var out []Server
	for _, s := range r.servers {
		ud, _ := base64.StdEncoding.DecodeString(s.UserData)
		out = append(out, Server{ID: s.ID, Name: s.Name, Status: s.Status, KeyName: s.KeyName, ImageRef: s.ImageRef,
			FlavorRef: s.FlavorRef, AvailabilityZone: s.AZ, Metadata: copyMap(s.Metadata), UserData: string(ud),
			SecurityGroups: s.SecGroups, ConfigDrive: s.ConfigDrive, VolumeSize: s.VolumeSize})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// KeyPairs lists a region's key pair names.
func (f *Fake) KeyPairs(reg string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.region(reg).keypairs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// FloatingIPs lists a region's floating IPs.
func (f *Fake) FloatingIPs(reg string) []FloatingIP {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FloatingIP
	for _, x := range f.region(reg).fips {
		out = append(out, FloatingIP{ID: x.ID, Address: x.Address, PortID: x.PortID, Description: x.Description})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Images lists a region's images, the base image included.
func (f *Fake) Images(reg string) []Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.region(reg)
	f.advance(r)
	var out []Image
	for _, im := range r.images {
		out = append(out, Image{ID: im.ID, Name: im.Name, Status: im.Status, Properties: copyMap(im.Props)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Live lists, read from the fake itself, what imagegen builds may have left in
// a region: servers (build from their imagegen:build metadata), key pairs (build
// from their imagegen-<build>-<hash> name) and floating IPs (build from their
// imagegen:build=<build> description). Images are excluded.
func (f *Fake) Live(reg string) []clouds.Resource {
	var out []clouds.Resource
	for _, s := range f.Servers(reg) {
		out = append(out, clouds.Resource{Kind: clouds.KindServer, ID: s.ID, Name: s.Name, Build: s.Metadata[clouds.TagBuild]})
	}
	for _, k := range f.KeyPairs(reg) {
		b := ""
		if rest, ok := strings.CutPrefix(k, "imagegen-"); ok {
			if i := strings.LastIndexByte(rest, '-'); i > 0 {
				b = rest[:i]
			}
		}
		out = append(out, clouds.Resource{Kind: clouds.KindKeyPair, ID: k, Name: k, Build: b})
	}
	for _, x := range f.FloatingIPs(reg) {
		b, _ := strings.CutPrefix(x.Description, clouds.TagBuild+"=")
		out = append(out, clouds.Resource{Kind: clouds.KindFloatingIP, ID: x.ID, Name: x.Address, Build: b})
	}
	return out
}

// CloudImages lists a region's images with their properties as tags.
func (f *Fake) CloudImages(reg string) []clouds.Image {
	var out []clouds.Image
	for _, im := range f.Images(reg) {
		out = append(out, clouds.Image{ID: im.ID, Name: im.Name, Tags: im.Properties})
	}
	return out
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (f *Fake) region(name string) *region {
	if name == "" {
		name = f.opts.Regions[0]
	}
	r, ok := f.reg[name]
	if !ok {
		panic("openstacktest: no region " + name)
	}
	return r
}

func (f *Fake) uuid() string {
	f.seq++
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// advance applies the state changes whose time has come.
func (f *Fake) advance(r *region) {
	now := time.Now()
	for id, s := range r.servers {
		if s.next == "" || now.Before(s.due) {
			continue
		}
		if s.next == "gone" {
			delete(r.servers, id)
			continue
		}
		s.Status, s.next = s.next, ""
		if s.Status == "ACTIVE" && s.activeAt.IsZero() {
			s.activeAt = now
			if f.opts.OnActive != nil {
				pub := ""
				if k, ok := r.keypairs[s.KeyName]; ok {
					pub = k.PublicKey
				}
				f.opts.OnActive(Server{ID: s.ID, Name: s.Name, Metadata: copyMap(s.Metadata), KeyName: s.KeyName}, pub)
			}
		}
	}
	for _, im := range r.images {
		if im.next == "" || now.Before(im.due) {
			continue
		}
		// Each change happens when it was due, not when a request came
		// to see it: saving lasts SnapshotDelay/2 from the end of queued,
		// whenever the next request after that came (with one look a
		// second, a snapshot took up to a second longer than asked).
		if im.Status == "queued" {
			im.Status, im.due, im.Updated = "saving", im.due.Add(f.opts.SnapshotDelay/2), im.due
			if now.Before(im.due) {
				continue
			}
		}
		im.Status, im.next, im.Updated = im.next, "", im.due
	}
}

// ---- HTTP ----

func (f *Fake) serve(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	line, now := req.Method+" "+req.URL.Path, time.Now()
	f.log, f.at = append(f.log, line), append(f.at, now)
	for i := range f.opts.Throttle {
		if !f.opts.Throttle[i].take(line, now) {
			f.thr = append(f.thr, true)
			f.mu.Unlock()
			w.Header().Set("Retry-After", "1")
			writeErr(w, req.URL.Path, http.StatusTooManyRequests, "Rate limit exceeded")
			return
		}
	}
	f.thr = append(f.thr, false)
	var hit *Fault
	for _, ft := range f.flts {
		if (ft.Method == "" || ft.Method == req.Method) && (ft.re == nil || ft.re.MatchString(req.URL.Path)) && (ft.Times == 0 || ft.hits < ft.Times) {
			if ft.skipped < ft.Skip {
				ft.skipped++
				continue
			}
			ft.hits++
			c := *ft
			hit = &c
			break
		}
	}
	f.mu.Unlock()
	if hit != nil {
		if hit.Delay > 0 {
			select {
			case <-time.After(hit.Delay):
			case <-req.Context().Done():
				return
			}
		}
		if hit.Status != 0 && hit.After {
			f.route(httptest.NewRecorder(), req)
		}
		if hit.Status != 0 {
			if hit.RetryAfter != "" {
				w.Header().Set("Retry-After", hit.RetryAfter)
			}
			body := hit.Body
			if body == "" {
				body = errorBody(req.URL.Path, hit.Status, http.StatusText(hit.Status))
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(hit.Status)
			_, _ = w.Write([]byte(body))
			return
		}
	}
	f.route(w, req)
}

func (f *Fake) route(w http.ResponseWriter, req *http.Request) {
	p := req.URL.Path
	if strings.HasPrefix(p, "/identity") {
		f.identity(w, req, strings.TrimPrefix(p, "/identity"))
		return
	}
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 3)
	if len(parts) < 2 {
		writeErr(w, p, 404, "no such path")
		return
	}
	f.mu.Lock()
	r, ok := f.reg[parts[0]]
	f.mu.Unlock()
	if !ok {
		writeErr(w, p, 404, "no such region")
		return
	}
	rest := "/"
	if len(parts) == 3 {
		rest += parts[2]
	}
	// Version documents are public, as on real clouds.
	if rest == "/" {
		f.versions(w, req, parts[1])
		return
	}
	if !f.authorized(req) {
		writeJSON(w, 401, map[string]any{"error": map[string]any{"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(r)
	switch parts[1] {
	case "compute":
		f.compute(w, req, r, strings.TrimPrefix(rest, "/v2.1"), parts[0])
	case "image":
		f.image(w, req, r, strings.TrimPrefix(rest, "/v2"))
	case "network":
		f.network(w, req, r, strings.TrimPrefix(rest, "/v2.0"))
	case "volume":
		f.volume(w, req, r, strings.TrimPrefix(rest, "/v3"))
	default:
		writeErr(w, p, 404, "no such service")
	}
}

func (f *Fake) authorized(req *http.Request) bool {
	if f.real != nil {
		_, ok := f.real.check(req.Header.Get("X-Auth-Token"))
		return ok
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tok[req.Header.Get("X-Auth-Token")]
}

func (f *Fake) versions(w http.ResponseWriter, req *http.Request, service string) {
	base := "http://" + req.Host + req.URL.Path
	switch service {
	case "compute":
		writeJSON(w, 200, map[string]any{"versions": []any{map[string]any{"id": "v2.1", "status": "CURRENT", "version": "2.95", "min_version": "2.1",
			"links": []any{map[string]any{"rel": "self", "href": base + "v2.1/"}}}}})
	case "image":
		writeJSON(w, 300, map[string]any{"versions": []any{map[string]any{"id": "v2.16", "status": "CURRENT",
			"links": []any{map[string]any{"rel": "self", "href": base + "v2/"}}}}})
	case "network":
		writeJSON(w, 200, map[string]any{"versions": []any{map[string]any{"id": "v2.0", "status": "CURRENT",
			"links": []any{map[string]any{"rel": "self", "href": base + "v2.0/"}}}}})
	default:
		writeErr(w, req.URL.Path, 404, "no such service")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errorBody shapes an error as the service behind path does.
func errorBody(path string, status int, msg string) string {
	var v any
	switch {
	case strings.Contains(path, "/network/"):
		typ := map[int]string{400: "BadRequest", 404: "NotFound", 409: "Conflict"}[status]
		v = map[string]any{"NeutronError": map[string]any{"type": typ, "message": msg, "detail": ""}}
	case strings.Contains(path, "/image/"):
		return fmt.Sprintf("<html><head><title>%d %s</title></head><body><h1>%d %s</h1>%s</body></html>", status, http.StatusText(status), status, http.StatusText(status), msg)
	case strings.HasPrefix(path, "/identity"):
		v = map[string]any{"error": map[string]any{"code": status, "title": http.StatusText(status), "message": msg}}
	default:
		key := map[int]string{400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest", 413: "overLimit", 429: "overLimit"}[status]
		if key == "" {
			key = "computeFault"
		}
		v = map[string]any{key: map[string]any{"message": msg, "code": status}}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func writeErr(w http.ResponseWriter, path string, status int, msg string) {
	if strings.Contains(path, "/image/") {
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(errorBody(path, status, msg)))
}

// decode reads a JSON body strictly, as the real APIs' schemas do
// (additionalProperties: false); a refusal is recorded for the tests.
func (f *Fake) decode(w http.ResponseWriter, req *http.Request, v any) bool {
	b, err := io.ReadAll(req.Body)
	if err == nil {
		err = strictUnmarshal(b, v)
	}
	if err != nil {
		f.reject(w, req, "Invalid input for field/attribute: "+err.Error())
		return false
	}
	return true
}

func (f *Fake) reject(w http.ResponseWriter, req *http.Request, msg string) {
	f.bad = append(f.bad, req.Method+" "+req.URL.Path+": "+msg)
	writeErr(w, req.URL.Path, 400, msg)
}

// ---- Keystone ----

func (f *Fake) identity(w http.ResponseWriter, req *http.Request, p string) {
	switch {
	case (p == "" || p == "/") && req.Method == "GET":
		writeJSON(w, 300, map[string]any{"versions": map[string]any{"values": []any{map[string]any{"id": "v3.14", "status": "stable",
			"links": []any{map[string]any{"rel": "self", "href": f.srv.URL + "/identity/v3/"}}}}}})
	case p == "/v3/auth/tokens" && req.Method == "POST":
		f.issueToken(w, req)
	case strings.HasPrefix(p, "/v2.0/"):
		f.identityV2(w, req, p)
	default:
		writeErr(w, "/identity"+p, 404, "The resource could not be found.")
	}
}

type named struct {
	ID     string `json:"id,omitempty"`
	Name   string `json:"name,omitempty"`
	Domain *struct {
		ID   string `json:"id,omitempty"`
		Name string `json:"name,omitempty"`
	} `json:"domain,omitempty"`
}

func (f *Fake) issueToken(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password *struct {
					User struct {
						named
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password,omitempty"`
			} `json:"identity"`
			Scope *struct {
				Project *named `json:"project,omitempty"`
				Domain  *named `json:"domain,omitempty"`
			} `json:"scope,omitempty"`
		} `json:"auth"`
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.decode(w, req, &body) {
		return
	}
	id := body.Auth.Identity
	if len(id.Methods) != 1 || id.Methods[0] != "password" || id.Password == nil {
		f.reject(w, req, "only password authentication is supported here")
		return
	}
	u := id.Password.User
	if u.Name != "" && u.Domain == nil {
		f.reject(w, req, "a user given by name needs a domain")
		return
	}
	if u.Name != f.opts.Username || u.Password != f.opts.Password || u.Domain.Name != f.opts.UserDomain && u.Domain.ID != strings.ToLower(f.opts.UserDomain) {
		writeErr(w, "/identity", 401, "The request you have made requires authentication.")
		return
	}
	if s := body.Auth.Scope; s == nil || s.Project == nil || s.Project.Name != f.opts.Project {
		writeErr(w, "/identity", 401, "The request you have made requires authentication (unknown project scope).")
		return
	}
	tok := f.uuid()
	f.tok[tok] = true
	var catalog []any
	for _, svc := range []struct{ typ, name, path string }{
		{"compute", "nova", "/compute/v2.1"}, {"image", "glance", "/image"}, {"network", "neutron", "/network"},
		{"block-storage", "cinderv3", "/volume/v3"},
	} {
		var eps []any
		for _, rg := range f.opts.Regions {
			for _, iface := range []string{"public", "internal"} {
				eps = append(eps, map[string]any{"id": f.uuid(), "interface": iface, "region": rg, "region_id": rg,
					"url": f.srv.URL + "/" + rg + svc.path})
			}
		}
		catalog = append(catalog, map[string]any{"id": f.uuid(), "type": svc.typ, "name": svc.name, "endpoints": eps})
	}
	catalog = append(catalog, map[string]any{"id": f.uuid(), "type": "identity", "name": "keystone", "endpoints": []any{
		map[string]any{"id": f.uuid(), "interface": "public", "region": f.opts.Regions[0], "region_id": f.opts.Regions[0], "url": f.AuthURL}}})
	w.Header().Set("X-Subject-Token", tok)
	writeJSON(w, 201, map[string]any{"token": map[string]any{
		"methods":    []string{"password"},
		"expires_at": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		"user":       map[string]any{"id": "u-" + f.opts.Username, "name": f.opts.Username, "domain": map[string]any{"id": "default", "name": f.opts.UserDomain}},
		"project":    map[string]any{"id": "p-" + f.opts.Project, "name": f.opts.Project, "domain": map[string]any{"id": "default", "name": "Default"}},
		"roles":      []any{map[string]any{"id": "r1", "name": "member"}},
		"catalog":    catalog,
	}})
}

// ---- Nova ----

var serverPath = regexp.MustCompile(`^/servers/([^/]+)(/action)?$`)

func (f *Fake) compute(w http.ResponseWriter, req *http.Request, r *region, p, rg string) {
	w.Header().Set("X-OpenStack-Nova-API-Version", "2.1")
	w.Header().Set("OpenStack-API-Version", "compute 2.1")
	switch {
	case p == "/servers" && req.Method == "POST":
		f.createServer(w, req, r)
	case (p == "/servers/detail" || p == "/servers") && req.Method == "GET":
		var re *regexp.Regexp
		if n := req.URL.Query().Get("name"); n != "" {
			var err error
			if re, err = regexp.Compile(n); err != nil {
				f.reject(w, req, "bad name filter")
				return
			}
		}
		q := req.URL.Query()
		limit := maxServerList
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeErr(w, req.URL.Path, 400, "limit must be a positive integer")
				return
			}
			limit = min(n, maxServerList)
		}
		marker := q.Get("marker")
		if marker != "" {
			if _, ok := r.servers[marker]; !ok {
				writeErr(w, req.URL.Path, 400, "marker ["+marker+"] not found")
				return
			}
		}
		list := []any{}
		last := ""
		for _, s := range sortedServers(r) {
			if marker != "" {
				if s.ID == marker {
					marker = ""
				}
				continue
			}
			if len(list) == limit {
				break
			}
			if re == nil || re.MatchString(s.Name) {
				list = append(list, f.serverJSON(req, r, s))
				last = s.ID
			}
		}
		body := map[string]any{"servers": list}
		if len(list) == limit && limit > 0 {
			next := url.Values{}
			for k, vs := range q {
				next[k] = vs
			}
			next.Set("marker", last)
			body["servers_links"] = []any{map[string]any{"rel": "next",
				"href": "http://" + req.Host + "/" + rg + "/compute/v2.1" + p + "?" + next.Encode()}}
		}
		writeJSON(w, 200, body)
	case serverPath.MatchString(p):
		m := serverPath.FindStringSubmatch(p)
		s, ok := r.servers[m[1]]
		if !ok {
			writeErr(w, req.URL.Path, 404, "Instance "+m[1]+" could not be found.")
			return
		}
		switch {
		case m[2] == "/action" && req.Method == "POST":
			f.serverAction(w, req, r, s)
		case m[2] == "" && req.Method == "GET":
			writeJSON(w, 200, map[string]any{"server": f.serverJSON(req, r, s)})
		case m[2] == "" && req.Method == "DELETE":
			f.deleteServer(r, s)
			w.WriteHeader(204)
		default:
			writeErr(w, req.URL.Path, 405, "method not allowed")
		}
	case p == "/flavors/detail" && req.Method == "GET":
		list := []any{}
		for _, fl := range r.flavors {
			list = append(list, map[string]any{"id": fl.ID, "name": fl.Name, "ram": fl.RAM, "vcpus": fl.VCPUs, "disk": fl.Disk,
				"OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0, "os-flavor-access:is_public": true,
				"links": []any{map[string]any{"rel": "self", "href": "http://" + req.Host + "/" + rg + "/compute/v2.1/flavors/" + fl.ID}}})
		}
		writeJSON(w, 200, map[string]any{"flavors": list})
	case p == "/os-keypairs" && req.Method == "GET":
		list := []any{}
		names := make([]string, 0, len(r.keypairs))
		for n := range r.keypairs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			k := r.keypairs[n]
			list = append(list, map[string]any{"keypair": map[string]any{"name": k.Name, "public_key": k.PublicKey, "fingerprint": k.Fingerprint}})
		}
		writeJSON(w, 200, map[string]any{"keypairs": list})
	case p == "/os-keypairs" && req.Method == "POST":
		f.createKeyPair(w, req, r)
	case strings.HasPrefix(p, "/os-keypairs/") && req.Method == "DELETE":
		name := strings.TrimPrefix(p, "/os-keypairs/")
		if _, ok := r.keypairs[name]; !ok {
			writeErr(w, req.URL.Path, 404, "Keypair "+name+" not found for user u-"+f.opts.Username)
			return
		}
		delete(r.keypairs, name)
		w.WriteHeader(202)
	default:
		writeErr(w, req.URL.Path, 404, "The resource could not be found.")
	}
}

// maxServerList is Nova's max_limit: the most servers one list answers.
const maxServerList = 1000

func sortedServers(r *region) []*server {
	out := make([]*server, 0, len(r.servers))
	for _, s := range r.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

var keyNameRe = regexp.MustCompile(`^[A-Za-z0-9 _.@-]{1,255}$`)

func (f *Fake) createKeyPair(w http.ResponseWriter, req *http.Request, r *region) {
	var body struct {
		Keypair struct {
			Name      string `json:"name"`
			PublicKey string `json:"public_key"`
			Type      string `json:"type,omitempty"`
		} `json:"keypair"`
	}
	if !f.decode(w, req, &body) {
		return
	}
	k := body.Keypair
	if !keyNameRe.MatchString(k.Name) {
		f.reject(w, req, "Keypair data is invalid: Keypair name contains unsafe characters")
		return
	}
	if k.Type != "" {
		f.reject(w, req, "Invalid input: 'type' needs microversion 2.2")
		return
	}
	if k.PublicKey == "" {
		f.reject(w, req, "imagegen never asks Nova to generate a private key")
		return
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.PublicKey))
	if err != nil {
		f.reject(w, req, "Keypair data is invalid: failed to generate fingerprint")
		return
	}
	if _, ok := r.keypairs[k.Name]; ok {
		writeErr(w, req.URL.Path, 409, "Key pair '"+k.Name+"' already exists.")
		return
	}
	kp := &keypair{Name: k.Name, PublicKey: k.PublicKey, Fingerprint: ssh.FingerprintLegacyMD5(pk)}
	r.keypairs[k.Name] = kp
	writeJSON(w, 200, map[string]any{"keypair": map[string]any{"name": kp.Name, "public_key": kp.PublicKey, "fingerprint": kp.Fingerprint, "user_id": "u-" + f.opts.Username}})
}

type bdm struct {
	SourceType          string `json:"source_type"`
	UUID                string `json:"uuid,omitempty"`
	BootIndex           int    `json:"boot_index"`
	DeleteOnTermination bool   `json:"delete_on_termination"`
	DestinationType     string `json:"destination_type,omitempty"`
	VolumeSize          int    `json:"volume_size,omitempty"`
}

// serverCreate is the body of Nova's server create, the fields imagegen sends;
// security_groups is decoded apart (decodeServerCreate).
type serverCreate struct {
	Name             string            `json:"name"`
	ImageRef         *string           `json:"imageRef"`
	FlavorRef        string            `json:"flavorRef"`
	Networks         json.RawMessage   `json:"networks,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	UserData         *string           `json:"user_data,omitempty"`
	KeyName          string            `json:"key_name,omitempty"`
	AvailabilityZone string            `json:"availability_zone,omitempty"`
	ConfigDrive      *bool             `json:"config_drive,omitempty"`
	BDM              []bdm             `json:"block_device_mapping_v2,omitempty"`
}

// createServer checks a server create as Nova does (the request's schema, then
// flavor, image, key pair, network, security groups and quota) and makes the
// server, which boots for BootDelay.
func (f *Fake) createServer(w http.ResponseWriter, req *http.Request, r *region) {
	s, sgs, ok := f.decodeServerCreate(w, req)
	if !ok {
		return
	}
	ud, ok := f.checkServerSchema(w, req, s)
	if !ok {
		return
	}
	fl := ""
	for _, x := range r.flavors {
		if x.ID == s.FlavorRef {
			fl = x.ID
		}
	}
	if fl == "" {
		writeErr(w, req.URL.Path, 400, "Flavor "+s.FlavorRef+" could not be found.")
		return
	}
	imageRef, volSize, ok := f.serverImage(w, req, r, s)
	if !ok {
		return
	}
	if s.KeyName != "" {
		if _, ok := r.keypairs[s.KeyName]; !ok {
			writeErr(w, req.URL.Path, 400, "Invalid key_name provided.")
			return
		}
	}
	if _, ok := f.serverNetwork(w, req, r, s.Networks); !ok {
		return
	}
	var groups []string
	for _, g := range sgs {
		if g.Name != "default" && g.Name != "ssh" {
			writeErr(w, req.URL.Path, 400, "Security group "+g.Name+" not found for project p-"+f.opts.Project+".")
			return
		}
		groups = append(groups, g.Name)
	}
	if len(r.servers) >= f.opts.ServerQuota {
		writeErr(w, req.URL.Path, 403, fmt.Sprintf("Quota exceeded for instances: Requested 1, but already used %d of %d instances", len(r.servers), f.opts.ServerQuota))
		return
	}
	sv := &server{ID: f.uuid(), Name: s.Name, Status: "BUILD", KeyName: s.KeyName, ImageRef: imageRef, FlavorRef: fl,
		AZ: s.AvailabilityZone, Metadata: s.Metadata, UserData: ud, SecGroups: groups, VolumeSize: volSize,
		ConfigDrive: s.ConfigDrive != nil && *s.ConfigDrive, Created: time.Now(), due: time.Now().Add(f.opts.BootDelay), next: "ACTIVE"}
	if f.opts.BootFault != "" {
		sv.next, sv.Fault = "ERROR", f.opts.BootFault
	}
	sv.PortID = f.uuid()
	r.servers[sv.ID] = sv
	writeJSON(w, 202, map[string]any{"server": map[string]any{"id": sv.ID, "adminPass": "fakePass",
		"OS-DCF:diskConfig": "MANUAL", "security_groups": []any{map[string]any{"name": "default"}},
		"links": []any{map[string]any{"rel": "self", "href": "http://" + req.Host + req.URL.Path + "/" + sv.ID}}}})
}

// secGroupRef is one of a server create's security_groups.
type secGroupRef struct {
	Name string `json:"name"`
}

// decodeServerCreate reads a server create strictly; it answers a refusal
// itself and returns false.
func (f *Fake) decodeServerCreate(w http.ResponseWriter, req *http.Request) (serverCreate, []secGroupRef, bool) {
	var body struct {
		Server serverCreate `json:"server"`
	}
	// security_groups is decoded by hand: the struct tag above would refuse it.
	raw := map[string]map[string]json.RawMessage{}
	dec := json.NewDecoder(req.Body)
	if err := dec.Decode(&raw); err != nil {
		f.reject(w, req, "Malformed request body")
		return serverCreate{}, nil, false
	}
	var sgs []secGroupRef
	if v, ok := raw["server"]["security_groups"]; ok {
		if err := strictUnmarshal(v, &sgs); err != nil {
			f.reject(w, req, "Invalid input for field/attribute security_groups: "+err.Error())
			return serverCreate{}, nil, false
		}
		delete(raw["server"], "security_groups")
	}
	b, _ := json.Marshal(raw)
	if err := strictUnmarshal(b, &body); err != nil {
		f.reject(w, req, "Invalid input for field/attribute: "+err.Error())
		return serverCreate{}, nil, false
	}
	if len(raw) != 1 {
		f.reject(w, req, "Invalid input for field/attribute name.")
		return serverCreate{}, nil, false
	}
	return body.Server, sgs, true
}

// checkServerSchema checks the name, metadata and user data as Nova's schema
// does, and returns the user data.
func (f *Fake) checkServerSchema(w http.ResponseWriter, req *http.Request, s serverCreate) (string, bool) {
	if s.Name == "" || len(s.Name) > 255 {
		f.reject(w, req, "Invalid input for field/attribute name.")
		return "", false
	}
	for k, v := range s.Metadata {
		if k == "" || len(k) > 255 || len(v) > 255 {
			f.reject(w, req, fmt.Sprintf("Invalid input for field/attribute metadata: %q is too long", k))
			return "", false
		}
	}
	if s.UserData == nil {
		return "", true
	}
	dec, err := base64.StdEncoding.DecodeString(*s.UserData)
	if err != nil || len(*s.UserData) > 65535 {
		f.reject(w, req, "User data needs to be valid base 64.")
		return "", false
	}
	if strings.HasPrefix(string(dec), "#cloud-config") {
		var cc map[string]any
		if err := yaml.Unmarshal(dec, &cc); err != nil {
			f.reject(w, req, "user data: cloud-config is not YAML: "+err.Error())
			return "", false
		}
	}
	return *s.UserData, true
}

// serverImage is the image the server boots, from imageRef or from the one
// block device mapping imagegen sends with volume_size (then with its size).
func (f *Fake) serverImage(w http.ResponseWriter, req *http.Request, r *region, s serverCreate) (string, int, bool) {
	imageRef := ""
	if s.ImageRef != nil {
		imageRef = *s.ImageRef
	}
	volSize := 0
	if len(s.BDM) > 0 {
		b := s.BDM[0]
		if b.SourceType != "image" || b.DestinationType != "volume" || b.VolumeSize <= 0 || b.UUID == "" {
			f.reject(w, req, "Block Device Mapping is Invalid: imagegen boots from a new volume made from an image")
			return "", 0, false
		}
		if imageRef != "" {
			f.reject(w, req, "imageRef must be empty when booting from a volume")
			return "", 0, false
		}
		imageRef, volSize = b.UUID, b.VolumeSize
	}
	if !f.imageUsable(req, r, imageRef) {
		writeErr(w, req.URL.Path, 400, "Image "+imageRef+" could not be found.")
		return "", 0, false
	}
	return imageRef, volSize, true
}

// serverNetwork is the network the server attaches to: the one asked for,
// which must exist and not be external, else the region's first.
func (f *Fake) serverNetwork(w http.ResponseWriter, req *http.Request, r *region, networks json.RawMessage) (string, bool) {
	if len(networks) == 0 {
		return r.networks[0].ID, true
	}
	var nets []struct {
		UUID string `json:"uuid"`
	}
	if err := strictUnmarshal(networks, &nets); err != nil || len(nets) != 1 {
		f.reject(w, req, "Invalid input for field/attribute networks.")
		return "", false
	}
	for _, n := range r.networks {
		if n.ID == nets[0].UUID && !n.External {
			return n.ID, true
		}
	}
	writeErr(w, req.URL.Path, 400, "Network "+nets[0].UUID+" could not be found.")
	return "", false
}

func strictUnmarshal(b []byte, v any) error {
	if err := exactKeys(b, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// exactKeys refuses keys that match a field only case-insensitively:
// encoding/json accepts "imageref" for "imageRef", the OpenStack APIs do not.
func exactKeys(b []byte, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		var list []json.RawMessage
		if json.Unmarshal(b, &list) != nil {
			return nil //nolint:nilerr // a type mismatch is the schema check's to report, not the key check's
		}
		for _, e := range list {
			if err := exactKeys(e, t.Elem()); err != nil {
				return err
			}
		}
	case reflect.Struct:
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return nil //nolint:nilerr // as above
		}
		fields := map[string]reflect.Type{}
		collectFields(t, fields)
		for k, raw := range m {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("Additional properties are not allowed (%q was unexpected)", k) //nolint:staticcheck // Nova's own message, word for word
			}
			if err := exactKeys(raw, ft); err != nil {
				return err
			}
		}
	}
	return nil
}

func collectFields(t reflect.Type, out map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			collectFields(f.Type, out)
			continue
		}
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
}

func (f *Fake) serverJSON(req *http.Request, r *region, s *server) map[string]any {
	netName := r.networks[0].Name
	addrs := []any{map[string]any{"addr": f.opts.ServerIP, "version": 4, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}}
	for _, x := range r.fips {
		if x.PortID == s.PortID {
			addrs = append(addrs, map[string]any{"addr": x.Address, "version": 4, "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"})
		}
	}
	m := map[string]any{
		"id": s.ID, "name": s.Name, "status": s.Status, "tenant_id": "p-" + f.opts.Project, "user_id": "u-" + f.opts.Username,
		"metadata": s.Metadata, "key_name": s.KeyName, "hostId": "h1",
		"created": s.Created.UTC().Format(time.RFC3339), "updated": time.Now().UTC().Format(time.RFC3339),
		"image":                                map[string]any{"id": s.ImageRef},
		"flavor":                               map[string]any{"id": s.FlavorRef},
		"addresses":                            map[string]any{},
		"OS-EXT-AZ:availability_zone":          s.AZ,
		"os-extended-volumes:volumes_attached": []any{},
		"links":                                []any{},
	}
	if s.VolumeSize > 0 {
		m["image"] = ""
		m["os-extended-volumes:volumes_attached"] = []any{map[string]any{"id": "vol-" + s.ID}}
	}
	if s.Status != "BUILD" && s.Status != "ERROR" {
		m["addresses"] = map[string]any{netName: addrs}
	}
	if s.Status == "ERROR" {
		m["fault"] = map[string]any{"code": 500, "message": s.Fault, "created": time.Now().UTC().Format(time.RFC3339)}
	}
	return m
}

func (f *Fake) deleteServer(r *region, s *server) {
	if s.next == "gone" {
		// A repeated delete hurries a slow one, as the fake's delay may have shrunk.
		if d := time.Now().Add(f.opts.DeleteDelay); d.Before(s.due) {
			s.due = d
		}
		return
	}
	for _, im := range r.images {
		if im.Server == s.ID && (im.Status == "queued" || im.Status == "saving") {
			f.viol = append(f.viol, fmt.Sprintf("server %s deleted while its image %s was %s", s.ID, im.ID, im.Status))
			im.Status, im.next, im.Updated = "killed", "", time.Now()
		}
	}
	if f.real != nil {
		for _, id := range f.real.serverDeleted(s.ID) {
			f.viol = append(f.viol, fmt.Sprintf("server %s deleted while its image %s was uploading", s.ID, id))
		}
	}
	for id, x := range r.fips {
		if x.PortID == s.PortID {
			// Neutron disassociates a floating IP when its port goes.
			r.fips[id].PortID = ""
		}
	}
	s.next, s.due = "gone", time.Now().Add(f.opts.DeleteDelay)
}

func (f *Fake) serverAction(w http.ResponseWriter, req *http.Request, r *region, s *server) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil || len(body) != 1 {
		f.reject(w, req, "an action body has exactly one key")
		return
	}
	conflict := func(action string) {
		writeErr(w, req.URL.Path, 409, fmt.Sprintf("Cannot '%s' instance %s while it is in vm_state %s", action, s.ID, strings.ToLower(s.Status)))
	}
	switch {
	case body["os-stop"] != nil:
		if string(body["os-stop"]) != "null" {
			f.reject(w, req, "os-stop takes null")
			return
		}
		if s.Status != "ACTIVE" || s.next != "" {
			conflict("stop")
			return
		}
		s.next, s.due = "SHUTOFF", time.Now().Add(f.opts.StopDelay)
		w.WriteHeader(202)
	case body["createImage"] != nil:
		var ci struct {
			Name     string            `json:"name"`
			Metadata map[string]string `json:"metadata,omitempty"`
		}
		if err := strictUnmarshal(body["createImage"], &ci); err != nil || ci.Name == "" || len(ci.Name) > 255 {
			f.reject(w, req, "Invalid input for field/attribute createImage")
			return
		}
		for k, v := range ci.Metadata {
			if k == "" || len(k) > 255 || len(v) > 255 {
				f.reject(w, req, "Invalid input for field/attribute metadata")
				return
			}
		}
		if (s.Status != "ACTIVE" && s.Status != "SHUTOFF") || s.next != "" {
			conflict("createImage")
			return
		}
		if f.real != nil {
			f.realSnapshot(w, req, s, ci.Name, ci.Metadata)
			return
		}
		props := copyMap(ci.Metadata)
		props["image_type"] = "snapshot"
		props["instance_uuid"] = s.ID
		props["base_image_ref"] = s.ImageRef
		im := &image{ID: f.uuid(), Name: ci.Name, Status: "queued", Props: props, Server: s.ID, Created: time.Now(),
			due: time.Now().Add(f.opts.SnapshotDelay / 2), next: "active"}
		if f.opts.KillImages {
			im.next = "killed"
		}
		r.images[im.ID] = im
		rg := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/"), "/", 2)[0]
		w.Header().Set("Location", "http://"+req.Host+"/"+rg+"/image/v2/images/"+im.ID)
		w.WriteHeader(202)
	case body["os-getConsoleOutput"] != nil:
		var co struct {
			Length *json.RawMessage `json:"length"`
		}
		if err := strictUnmarshal(body["os-getConsoleOutput"], &co); err != nil {
			f.reject(w, req, "Invalid input for field/attribute os-getConsoleOutput")
			return
		}
		if s.Status == "BUILD" {
			writeErr(w, req.URL.Path, 409, "Guest does not have a console available.")
			return
		}
		writeJSON(w, 200, map[string]any{"output": f.console(s)})
	default:
		for k := range body {
			f.reject(w, req, "unsupported action "+k)
		}
	}
}

// console is what the guest printed: cloud-init's host keys once it has run,
// the injected one when user data carried ssh_keys.
func (f *Fake) console(s *server) string {
	var b strings.Builder
	b.WriteString("[    0.000000] Linux version 6.8.0-generic\n[    1.234567] EXT4-fs (vda1): mounted filesystem\n")
	if s.Status == "ERROR" || s.activeAt.IsZero() || time.Since(s.activeAt) < f.opts.ConsoleDelay {
		return b.String()
	}
	key := f.opts.ConsoleHostKey
	if dec, err := base64.StdEncoding.DecodeString(s.UserData); err == nil {
		var cc struct {
			SSHKeys map[string]string `yaml:"ssh_keys"`
		}
		if yaml.Unmarshal(dec, &cc) == nil {
			for k, v := range cc.SSHKeys {
				if strings.HasSuffix(k, "_public") {
					key = strings.TrimSpace(v)
				}
			}
		}
	}
	b.WriteString("ci-info: no authorized SSH keys fingerprints found for user ubuntu.\n")
	b.WriteString("<14>Nov 23 21:00:00 cloud-init: #############################################################\n")
	b.WriteString("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 SHA256:xxxx root@" + s.Name + " (ED25519)\n-----END SSH HOST KEY FINGERPRINTS-----\n")
	b.WriteString("-----BEGIN SSH HOST KEY KEYS-----\n" + key + " root@" + s.Name + "\n-----END SSH HOST KEY KEYS-----\n")
	b.WriteString("Cloud-init v. 24.1 finished. Up " + strconv.Itoa(5) + " seconds\n")
	return b.String()
}

// ---- Glance ----

func (f *Fake) imageJSON(req *http.Request, im *image) map[string]any {
	m := map[string]any{
		"id": im.ID, "name": im.Name, "status": im.Status, "visibility": f.visibility(im), "protected": false, "os_hidden": false,
		"container_format": "bare", "disk_format": "qcow2", "min_disk": 0, "min_ram": 0, "tags": []string{},
		"owner": f.owner(im), "checksum": nil, "size": nil, "virtual_size": nil,
		"created_at": im.Created.UTC().Format(time.RFC3339), "updated_at": im.updated().UTC().Format(time.RFC3339),
		"self": "/v2/images/" + im.ID, "file": "/v2/images/" + im.ID + "/file", "schema": "/v2/schemas/image",
	}
	if im.Status == "active" {
		m["size"], m["checksum"] = 1073741824, "d41d8cd98f00b204e9800998ecf8427e"
	}
	for k, v := range im.Props {
		m[k] = v
	}
	return m
}

func (f *Fake) image(w http.ResponseWriter, req *http.Request, r *region, p string) {
	switch {
	case p == "/images" && req.Method == "GET":
		f.listImages(w, req, r)
	case strings.HasPrefix(p, "/images/"):
		id := strings.TrimPrefix(p, "/images/")
		im, ok := r.images[id]
		if !ok {
			writeErr(w, req.URL.Path, 404, "No image found with ID "+id)
			return
		}
		switch req.Method {
		case "GET":
			writeJSON(w, 200, f.imageJSON(req, im))
		case "PATCH":
			f.patchImage(w, req, im)
		case "DELETE":
			delete(r.images, id)
			w.WriteHeader(204)
		default:
			writeErr(w, req.URL.Path, 405, "method not allowed")
		}
	default:
		writeErr(w, req.URL.Path, 404, "not found")
	}
}

// imageListParams are the query keys Glance's image list knows; any other key
// filters on an image property of that name. The fake implements the first
// group and refuses the rest, so a driver relying on one is noticed.
var (
	imageListParams = map[string]bool{"limit": true, "marker": true, "name": true, "status": true, "id": true, "updated_at": true, "visibility": true, "owner": true}
	imageListTodo   = map[string]bool{"os_hidden": true, "member_status": true,
		"size_min": true, "size_max": true, "sort": true, "sort_key": true, "sort_dir": true, "tag": true,
		"created_at": true, "container_format": true, "disk_format": true, "protected": true}
)

// defaultImagePage is Glance's limit_param_default.
const defaultImagePage = 25

// listImages answers GET /v2/images as Glance does: newest first (created_at,
// then id, descending), filtered by name, status and any other key as an image
// property, one page of limit images (at most ImageListMax) after marker, and
// a next link whenever the page is full.
func (f *Fake) listImages(w http.ResponseWriter, req *http.Request, r *region) {
	q := req.URL.Query()
	limit := defaultImagePage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeErr(w, req.URL.Path, 400, "limit param must be an integer")
			return
		}
		limit = n
	}
	limit = min(limit, f.opts.ImageListMax)
	props := map[string]string{}
	for k, vs := range q {
		if imageListTodo[k] {
			f.reject(w, req, "the fake does not implement the image list parameter "+k)
			return
		}
		if !imageListParams[k] {
			props[k] = vs[0]
		}
	}
	if _, err := dateFilter(q.Get("updated_at"), time.Time{}); err != nil {
		writeErr(w, req.URL.Path, 400, "updated_at: "+err.Error())
		return
	}
	all := make([]*image, 0, len(r.images))
	for _, im := range r.images {
		all = append(all, im)
	}
	after := func(a, b *image) bool { // a comes after b: older, or as old with a smaller id
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.ID < b.ID
	}
	sort.Slice(all, func(i, j int) bool { return after(all[j], all[i]) })
	var mark *image
	if m := q.Get("marker"); m != "" {
		if mark = r.images[m]; mark == nil {
			writeErr(w, req.URL.Path, 400, "marker not found")
			return
		}
	}
	list := []any{}
	last := ""
	for _, im := range all {
		if len(list) == limit {
			break
		}
		if mark != nil && !after(im, mark) {
			continue
		}
		if !inFilter(q.Get("name"), im.Name) || !inFilter(q.Get("status"), im.Status) || !inFilter(q.Get("id"), im.ID) {
			continue
		}
		if ok, _ := dateFilter(q.Get("updated_at"), im.updated()); !ok {
			continue
		}
		if v := q.Get("visibility"); v != "" && f.visibility(im) != v {
			continue
		}
		if o := q.Get("owner"); o != "" && f.owner(im) != o {
			continue
		}
		hit := true
		for k, v := range props {
			if got, ok := im.Props[k]; !ok || got != v {
				hit = false
			}
		}
		if hit {
			list = append(list, f.imageJSON(req, im))
			last = im.ID
		}
	}
	body := map[string]any{"images": list, "schema": "/v2/schemas/images", "first": "/v2/images"}
	if len(list) > 0 && len(list) == limit {
		next := url.Values{}
		for k, vs := range q {
			next[k] = vs
		}
		next.Set("marker", last)
		body["next"] = "/v2/images?" + next.Encode()
	}
	writeJSON(w, 200, body)
}

// inFilter applies one of Glance's list filters: a value, or "in:a,b,c"
// (any of them); "" lets everything through.
func inFilter(filter, v string) bool {
	if filter == "" {
		return true
	}
	if vs, ok := strings.CutPrefix(filter, "in:"); ok {
		for _, x := range strings.Split(vs, ",") {
			if x == v {
				return true
			}
		}
		return false
	}
	return filter == v
}

// SetImageStatus changes an image's status now, as Glance does when an
// upload ends (its updated_at moves too).
func (f *Fake) SetImageStatus(reg, id, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if im := f.region(reg).images[id]; im != nil {
		im.Status, im.next, im.Updated = status, "", time.Now()
	}
}

// AddImage adds an image made outside imagegen (an upload, another project's
// public image) to a region and returns its id; Status "" means active.
func (f *Fake) AddImage(reg string, im Image) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.region(reg)
	if im.ID == "" {
		im.ID = f.uuid()
	}
	if im.Status == "" {
		im.Status = "active"
	}
	created := im.Created
	if created.IsZero() {
		created = time.Now()
	}
	r.images[im.ID] = &image{ID: im.ID, Name: im.Name, Status: im.Status, Props: copyMap(im.Properties), Created: created,
		Visibility: im.Visibility, Owner: im.Owner}
	return im.ID
}

// patchImage applies a JSON patch (Glance's media type, properties only).
func (f *Fake) patchImage(w http.ResponseWriter, req *http.Request, im *image) {
	if ct := req.Header.Get("Content-Type"); ct != "application/openstack-images-v2.1-json-patch" {
		writeErr(w, req.URL.Path, 415, "Unsupported Content-Type "+ct)
		f.bad = append(f.bad, "PATCH "+req.URL.Path+": content type "+ct)
		return
	}
	var ops []struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value *any   `json:"value,omitempty"`
	}
	if !f.decode(w, req, &ops) {
		return
	}
	if im.Server != "" && (im.Status == "queued" || im.Status == "saving") {
		// Glance saves whole image records: the upload's last save drops
		// what this sets, or this writes the image back to queued and the
		// upload fails (seen on a real Glance 25).
		f.viol = append(f.viol, fmt.Sprintf("image %s patched while %s: Glance loses the patch or the upload", im.ID, im.Status))
	}
	for _, o := range ops {
		name := strings.TrimPrefix(o.Path, "/")
		if !strings.HasPrefix(o.Path, "/") || name == "" || strings.Contains(name, "/") {
			f.reject(w, req, "Invalid JSON pointer for this resource: "+o.Path)
			return
		}
		switch o.Op {
		case "add", "replace":
			var v any
			if o.Value != nil {
				v = *o.Value
			}
			str, ok := v.(string)
			if !ok || len(str) > 255 {
				f.reject(w, req, "property "+name+": value must be a string of at most 255 characters")
				return
			}
			// With the v2.1 patch, "add" replaces a property that exists
			// (RFC 6902, and a real Glance); only the v2.0 patch, which
			// this fake refuses above, answers 409 "already present".
			if _, exists := im.Props[name]; o.Op == "replace" && !exists {
				writeErr(w, req.URL.Path, 409, "Property "+name+" does not exist.")
				return
			}
			im.Props[name] = str
		case "remove":
			delete(im.Props, name)
		default:
			f.reject(w, req, "Unrecognized operation "+o.Op)
			return
		}
	}
	im.Updated = time.Now()
	writeJSON(w, 200, f.imageJSON(req, im))
}

// updated is the image's updated_at.
func (im *image) updated() time.Time {
	if im.Updated.IsZero() {
		return im.Created
	}
	return im.Updated
}

// dateFilter applies Glance's created_at / updated_at list filter,
// "op:2026-12-07T18:22:14Z" with op one of gt, gte, eq, neq, lt, lte (Glance
// keeps seconds); "" lets everything through.
func dateFilter(filter string, t time.Time) (ok bool, err error) {
	if filter == "" {
		return true, nil
	}
	op, v, found := strings.Cut(filter, ":")
	if !found {
		op, v = "eq", filter
	}
	at, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return false, fmt.Errorf("invalid date %q: %w", v, err)
	}
	t = t.Truncate(time.Second)
	switch op {
	case "gt":
		return t.After(at), nil
	case "gte":
		return !t.Before(at), nil
	case "eq":
		return t.Equal(at), nil
	case "neq":
		return !t.Equal(at), nil
	case "lt":
		return t.Before(at), nil
	case "lte":
		return !t.After(at), nil
	}
	return false, fmt.Errorf("invalid operator %q", op)
}

// ---- Cinder ----

var volumeAction = regexp.MustCompile(`^/volumes/([^/]+)/action$`)

func (f *Fake) volume(w http.ResponseWriter, req *http.Request, r *region, p string) {
	m := volumeAction.FindStringSubmatch(p)
	if m == nil || req.Method != "POST" {
		writeErr(w, req.URL.Path, 404, "The resource could not be found.")
		return
	}
	var s *server
	for _, x := range r.servers {
		if "vol-"+x.ID == m[1] && x.VolumeSize > 0 {
			s = x
		}
	}
	if s == nil {
		writeErr(w, req.URL.Path, 404, "Volume "+m[1]+" could not be found.")
		return
	}
	var body struct {
		Upload *struct {
			ImageName       string `json:"image_name"`
			Force           bool   `json:"force,omitempty"`
			DiskFormat      string `json:"disk_format,omitempty"`
			ContainerFormat string `json:"container_format,omitempty"`
		} `json:"os-volume_upload_image"`
	}
	if !f.decode(w, req, &body) || body.Upload == nil {
		if body.Upload == nil {
			f.reject(w, req, "only os-volume_upload_image is supported")
		}
		return
	}
	u := body.Upload
	if u.ImageName == "" {
		f.reject(w, req, "image_name is required")
		return
	}
	if s.Status == "ACTIVE" && !u.Force {
		writeErr(w, req.URL.Path, 400, "Invalid volume: Volume status must be available/in-use to upload, and force is needed for in-use.")
		return
	}
	im := &image{ID: f.uuid(), Name: u.ImageName, Status: "queued", Props: map[string]string{}, Server: s.ID, Created: time.Now(),
		due: time.Now().Add(f.opts.SnapshotDelay / 2), next: "active"}
	if f.opts.KillImages {
		im.next = "killed"
	}
	if f.real != nil {
		id, st, msg := f.realVolumeImage(req, s, u.ImageName, u.DiskFormat, u.ContainerFormat)
		if id == "" {
			writeErr(w, req.URL.Path, st, "Glance refused the image: "+msg)
			return
		}
		im.ID = id
	} else {
		r.images[im.ID] = im
	}
	writeJSON(w, 202, map[string]any{"os-volume_upload_image": map[string]any{
		"id": m[1], "image_id": im.ID, "image_name": im.Name, "status": "uploading", "size": s.VolumeSize,
		"container_format": u.ContainerFormat, "disk_format": u.DiskFormat, "display_description": nil,
		"updated_at": time.Now().UTC().Format("2006-01-02T15:04:05.000000"), "volume_type": nil}})
}

// ---- Neutron ----

func (f *Fake) network(w http.ResponseWriter, req *http.Request, r *region, p string) {
	q := req.URL.Query()
	switch {
	case p == "/networks" && req.Method == "GET":
		list := []any{}
		for _, n := range r.networks {
			if (q.Get("id") == "" || q.Get("id") == n.ID) && (q.Get("name") == "" || q.Get("name") == n.Name) {
				list = append(list, map[string]any{"id": n.ID, "name": n.Name, "status": "ACTIVE", "admin_state_up": true,
					"router:external": n.External, "shared": false, "subnets": []string{}, "tenant_id": "p-" + f.opts.Project})
			}
		}
		writeJSON(w, 200, map[string]any{"networks": list})
	case p == "/security-groups" && req.Method == "GET":
		// The groups servers may name (the openstack client lists them).
		list := []any{}
		for i, name := range []string{"default", "ssh"} {
			list = append(list, map[string]any{"id": fmt.Sprintf("5ec0e1d2-0000-4000-8000-00000000000%d", i+1), "name": name,
				"description": name + " security group", "project_id": "p-" + f.opts.Project, "tenant_id": "p-" + f.opts.Project,
				"stateful": true, "tags": []string{}, "security_group_rules": []any{}})
		}
		writeJSON(w, 200, map[string]any{"security_groups": list})
	case p == "/ports" && req.Method == "GET":
		list := []any{}
		for _, s := range sortedServers(r) {
			if s.Status == "BUILD" || q.Get("device_id") != "" && q.Get("device_id") != s.ID {
				continue
			}
			list = append(list, map[string]any{"id": s.PortID, "device_id": s.ID, "device_owner": "compute:nova", "network_id": r.networks[0].ID,
				"status": "ACTIVE", "admin_state_up": true, "mac_address": "fa:16:3e:00:00:01",
				"fixed_ips": []any{map[string]any{"subnet_id": "sub-1", "ip_address": f.opts.ServerIP}}})
		}
		writeJSON(w, 200, map[string]any{"ports": list})
	case p == "/floatingips" && req.Method == "GET":
		list := []any{}
		ids := make([]string, 0, len(r.fips))
		for id := range r.fips {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			x := r.fips[id]
			if q.Get("description") != "" && q.Get("description") != x.Description {
				continue
			}
			list = append(list, fipJSON(x))
		}
		writeJSON(w, 200, map[string]any{"floatingips": list})
	case p == "/floatingips" && req.Method == "POST":
		f.createFloatingIP(w, req, r)
	case strings.HasPrefix(p, "/floatingips/") && req.Method == "DELETE":
		id := strings.TrimPrefix(p, "/floatingips/")
		if _, ok := r.fips[id]; !ok {
			writeErr(w, req.URL.Path, 404, "Floating IP "+id+" could not be found")
			return
		}
		delete(r.fips, id)
		w.WriteHeader(204)
	default:
		writeErr(w, req.URL.Path, 404, "The resource could not be found.")
	}
}

// createFloatingIP allocates a floating IP on an external network, attached
// to a server's port when one is given.
func (f *Fake) createFloatingIP(w http.ResponseWriter, req *http.Request, r *region) {
	var body struct {
		FloatingIP struct {
			FloatingNetworkID string `json:"floating_network_id"`
			PortID            string `json:"port_id,omitempty"`
			Description       string `json:"description,omitempty"`
		} `json:"floatingip"`
	}
	if !f.decode(w, req, &body) {
		return
	}
	b := body.FloatingIP
	var ext *network
	for i := range r.networks {
		if r.networks[i].ID == b.FloatingNetworkID {
			ext = &r.networks[i]
		}
	}
	if ext == nil {
		writeErr(w, req.URL.Path, 404, "Network "+b.FloatingNetworkID+" could not be found.")
		return
	}
	if !ext.External {
		writeErr(w, req.URL.Path, 400, "Bad floatingip request: Network "+ext.ID+" is not a valid external network.")
		return
	}
	if len(b.Description) > 255 {
		f.reject(w, req, "description too long")
		return
	}
	if b.PortID != "" {
		found := false
		for _, s := range r.servers {
			if s.PortID == b.PortID {
				found = true
			}
		}
		if !found {
			writeErr(w, req.URL.Path, 404, "Port "+b.PortID+" could not be found.")
			return
		}
	}
	if len(r.fips) >= f.opts.FloatingIPQuota {
		writeErr(w, req.URL.Path, 409, "Quota exceeded for resources: ['floatingip'].")
		return
	}
	f.seq++
	x := &fip{ID: f.uuid(), Address: fmt.Sprintf("203.0.113.%d", f.seq%250+1), NetworkID: ext.ID, PortID: b.PortID, Description: b.Description}
	r.fips[x.ID] = x
	writeJSON(w, 201, map[string]any{"floatingip": fipJSON(x)})
}

func fipJSON(x *fip) map[string]any {
	var port, fixed any
	status := "DOWN"
	if x.PortID != "" {
		port, fixed, status = x.PortID, "127.0.0.1", "ACTIVE"
	}
	return map[string]any{"id": x.ID, "floating_ip_address": x.Address, "floating_network_id": x.NetworkID,
		"port_id": port, "fixed_ip_address": fixed, "description": x.Description, "status": status,
		"router_id": nil, "tenant_id": "p-demo", "project_id": "p-demo", "tags": []string{}}
}

func (f *Fake) visibility(im *image) string {
	if im.Visibility == "" {
		return "private"
	}
	return im.Visibility
}

func (f *Fake) owner(im *image) string {
	if im.Owner == "" {
		return "p-" + f.opts.Project
	}
	return im.Owner
}
