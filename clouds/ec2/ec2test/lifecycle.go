package ec2test

import (
	"net/url"
	"strconv"
	"time"
)

// SelfAccount is the account id the fake's own images are owned by.
const SelfAccount = "123456789012"

func (im *image) ownerID() string {
	if im.owner == "" {
		return SelfAccount
	}
	return im.owner
}

// BaseImageSpec is a base image another account publishes (a distribution's).
type BaseImageSpec struct {
	Name    string
	Owner   string // account id; "" is SelfAccount
	Created time.Time
	Public  bool
	Tags    map[string]string
}

// AddBaseImage puts an available image of another account into the fake,
// for image filters (DescribeImages with Owners and filters); it boots like
// BaseImage. It returns the image's id.
func (f *Fake) AddBaseImage(b BaseImageSpec) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b.Created.IsZero() {
		b.Created = time.Now()
	}
	im := &image{tagged: tagged{tags: copyTags(b.Tags)}, id: f.newID("ami"), name: b.Name, state: "available",
		owner: b.Owner, created: b.Created, public: b.Public}
	s := &snapshot{tagged: tagged{tags: map[string]string{}}, id: f.newID("snap"), image: im.id}
	f.snapshots[s.id] = s
	im.snapshots = []string{s.id}
	f.images[im.id] = im
	return im.id
}

// createTags answers CreateTags for images (the only resources imagegen
// tags after creating them): ResourceId.N and Tag.N.Key/Value.
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
		tags[k[0]] = form.Get("Tag." + strconv.Itoa(j) + ".Value")
	}
	for _, id := range ids {
		if !validAMI(id) {
			return nil, errf("InvalidID", "The ID '%s' is not valid", id)
		}
		if _, ok := f.images[id]; !ok {
			return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
	}
	for _, id := range ids {
		im := f.images[id]
		if im.tags == nil {
			im.tags = map[string]string{}
		}
		for k, v := range tags {
			im.tags[k] = v
		}
	}
	return []node{tx("return", "true")}, nil
}
