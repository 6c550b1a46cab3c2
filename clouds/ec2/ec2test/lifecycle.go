package ec2test

import "time"

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
