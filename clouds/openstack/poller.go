package openstack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/imagegen/imagegen/clouds"
)

// account is what the builds of one cloud entry (one region) and one set of
// credentials share: the batched pollers of servers and images. With 1 000
// builds waiting, Nova sees one list of the project's servers a look and
// Glance one list of images by id, not 1 000 GETs (docs/openstack.md).
type account struct {
	servers *clouds.Poller[*gophercloud.ServiceClient, servers.Server]
	images  *clouds.Poller[*gophercloud.ServiceClient, images.Image]
	bases   clouds.SharedLookups[string] // base images' ids, by the spec's id or name
}

// accounts are an Opener's accounts, by credentials (accountKey).
type accounts = clouds.Accounts[*account]

// accountKey names the credentials of a build: clouds.yaml's (one account
// for every build), or a digest of the password a build brought.
func accountKey(password string) string {
	if password == "" {
		return "clouds.yaml"
	}
	h := sha256.Sum256([]byte("imagegen openstack account\x00" + password))
	return "password:" + hex.EncodeToString(h[:16])
}

// Nova's and Glance's limits on one list: Nova's max_limit and Glance's
// api_limit_max default to 1 000; ids in Glance's id=in: filter are kept to
// 100 a call, so the URL stays under the 8 KiB proxies take.
const (
	listLimit  = 1000
	idsPerList = 100
)

// pollBurst is how many calls more than one a poller's look may make
// without holding the next one back (clouds.PollerConfig.Burst): pages of
// servers past 1 000, images that finished and are looked at by id.
const pollBurst = 5

// inProgress are the image statuses of an image still being made.
var inProgress = []string{string(images.ImageStatusQueued), string(images.ImageStatusSaving), "uploading", "importing"}

func (o *Opener) newAccount() *account {
	every, first := o.opts.Poll.Max, o.opts.Poll.Initial
	timeout := 4 * o.cfg.RequestTimeout
	return &account{
		servers: clouds.NewPoller(clouds.PollerConfig[*gophercloud.ServiceClient, servers.Server]{
			Fetch: listServers, Every: every, First: first, Timeout: timeout, Burst: pollBurst}),
		images: clouds.NewPoller(clouds.PollerConfig[*gophercloud.ServiceClient, images.Image]{
			Fetch: (&imageLooks{}).fetch, Every: every, First: first, Timeout: timeout, Burst: pollBurst}),
	}
}

// listServers looks at servers ids: one waiting, a GET of it (404: absent);
// more, the project's servers in pages of 1 000 (Nova filters servers by
// id only for administrators).
func listServers(ctx context.Context, compute *gophercloud.ServiceClient, ids []string) (map[string]servers.Server, int, error) {
	found := map[string]servers.Server{}
	if len(ids) == 1 {
		s, err := servers.Get(ctx, compute, ids[0]).Extract()
		switch {
		case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		case err != nil:
			return nil, 1, classify("show server "+ids[0], err)
		default:
			found[s.ID] = *s
		}
		return found, 1, nil
	}
	calls, last := 0, 0
	w := newWaited(ids)
	err := servers.List(compute, servers.ListOpts{Limit: listLimit}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		calls++
		all, err := servers.ExtractServers(page)
		if err != nil {
			return false, err
		}
		last = len(all)
		for _, s := range all {
			found[s.ID] = s
			w.saw(s.ID)
		}
		return !w.all(), nil
	})
	if !w.all() {
		calls = requests(calls, last)
	}
	if err != nil {
		return nil, calls, classify("list servers", err)
	}
	return found, calls, nil
}

// imageLooks is the images poller's Fetch, with what it keeps from one
// look to the next: the newest updated_at Glance showed it.
type imageLooks struct {
	mu    sync.Mutex
	since time.Time
}

// fetch looks at images ids with Glance's id=in: filter, 100 a call. More
// than 100 waiting, it lists every image of the project still being made
// (status=in:); when some of them are not in that list any more, every image
// changed since the newest change the last look saw (updated_at=gte:, on
// Glance's own clock: those that became active, or failed, since); then by
// id only those neither list showed (just made, or gone). A look costs one
// call while nothing finishes and two when 1 000 images finish at once, not
// eleven, so the poller's pacing does not hold the next look back 11 s.
func (l *imageLooks) fetch(ctx context.Context, image *gophercloud.ServiceClient, ids []string) (map[string]images.Image, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	found := map[string]images.Image{}
	calls := 0
	newest := l.since
	w := newWaited(ids)
	list := func(opts images.ListOpts) error {
		pages := 0
		last := 0
		defer func() {
			if w.all() {
				calls += pages
			} else {
				calls += requests(pages, last)
			}
		}()
		return images.List(image, opts).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			pages++
			all, err := images.ExtractImages(page)
			if err != nil {
				return false, err
			}
			last = len(all)
			for _, im := range all {
				found[im.ID] = im
				w.saw(im.ID)
				if im.UpdatedAt.After(newest) {
					newest = im.UpdatedAt
				}
			}
			return !w.all(), nil
		})
	}
	rest := ids
	if len(ids) > idsPerList {
		if err := list(images.ListOpts{Status: images.ImageStatus("in:" + strings.Join(inProgress, ",")), Limit: listLimit}); err != nil {
			return nil, max(calls, 1), classify("list images being made", err)
		}
		rest = absent(ids, found)
		if len(rest) > 0 && !l.since.IsZero() {
			// Some are no longer being made: the images changed since the
			// last look show which became what, in one call.
			if err := list(images.ListOpts{UpdatedAtQuery: &images.ImageDateQuery{Date: l.since, Filter: images.FilterGTE}, Limit: listLimit}); err != nil {
				return nil, max(calls, 1), classify("list images changed", err)
			}
			rest = absent(ids, found)
		}
	}
	for _, chunk := range clouds.Chunks(rest, idsPerList) {
		if err := list(images.ListOpts{ID: "in:" + strings.Join(chunk, ","), Limit: listLimit}); err != nil {
			return nil, max(calls, 1), classify("list images", err)
		}
	}
	l.since = newest
	return found, calls, nil
}

// waited counts down the ids a look waits for, so a list stops paging once
// it has seen them all (1 000 servers waited for are one full page: asking
// for the next, empty, one doubled the calls of every look).
type waited struct {
	left map[string]bool
}

func newWaited(ids []string) *waited {
	w := &waited{left: make(map[string]bool, len(ids))}
	for _, id := range ids {
		w.left[id] = true
	}
	return w
}

func (w *waited) saw(id string) { delete(w.left, id) }

func (w *waited) all() bool { return len(w.left) == 0 }

// requests is how many requests a list of pages non-empty pages made, the
// last one of n results: EachPage does not show an empty page, which is
// still a request (the only one, or the one a full last page's next link
// led to).
func requests(pages, n int) int {
	if pages == 0 || n >= listLimit {
		return pages + 1
	}
	return pages
}

// absent are the ids not in found.
func absent[T any](ids []string, found map[string]T) []string {
	var out []string
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// notListedLooks is how many looks in a row may miss a server before a
// wait for it fails (Nova lists a server from its create on; a few looks
// cover a list that raced the create).
const notListedLooks = 3

// waitServer waits until the server's status is want, looking with the
// account's poller. ERROR fails at once with Nova's fault message. It
// returns the last server seen, even on error.
func (c *Cloud) waitServer(ctx context.Context, id, want string, timeout time.Duration) (*servers.Server, error) {
	var last *servers.Server
	what := fmt.Sprintf("wait for server %s to be %s", id, want)
	missed := 0
	err := clouds.Within(ctx, what, timeout, func(ctx context.Context) error {
		return c.acct.servers.Wait(ctx, c.compute, what, id, func(seen clouds.Seen[servers.Server]) (bool, error) {
			if !seen.Found {
				if missed++; missed < notListedLooks {
					return false, nil
				}
				return false, &clouds.Error{Kind: clouds.KindNotFound, Op: what, Code: "404",
					Err: fmt.Errorf("server %s could not be found", id)}
			}
			missed = 0
			s := seen.Value
			last = &s
			switch s.Status {
			case want:
				return true, nil
			case "ERROR":
				kind := clouds.KindFailed
				if strings.Contains(s.Fault.Message, "No valid host") {
					kind = clouds.KindCapacity
				}
				msg := s.Fault.Message
				if msg == "" {
					msg = "no fault message"
				}
				return false, &clouds.Error{Kind: kind, Op: what, Code: "ERROR",
					Err: fmt.Errorf("server %s went to ERROR: %s", id, msg)}
			case "DELETED", "SOFT_DELETED":
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Err: fmt.Errorf("server %s was deleted", id)}
			}
			return false, nil
		})
	})
	return last, err
}

// waitGone waits until a deleted server is gone (not listed, or DELETED),
// asking Nova to delete it again when its delete failed.
func (c *Cloud) waitGone(ctx context.Context, id string) error {
	what := "wait for server " + id + " to be gone"
	return clouds.Within(ctx, what, c.cfg.DeleteTimeout, func(ctx context.Context) error {
		return c.acct.servers.Wait(ctx, c.compute, what, id, func(seen clouds.Seen[servers.Server]) (bool, error) {
			s := seen.Value
			if !seen.Found || s.Status == "DELETED" || s.Status == "SOFT_DELETED" {
				return true, nil
			}
			if s.Status == "ERROR" && s.Fault.Message != "" && strings.Contains(strings.ToLower(s.Fault.Message), "delet") {
				// The delete failed in Nova: ask again; it often succeeds.
				_ = servers.Delete(ctx, c.compute, id).ExtractErr()
			}
			return false, nil
		})
	})
}

// waitImage waits until Glance says the image is active, looking with the
// account's poller, tolerating a few looks that miss it (Nova registers the
// image before Glance lists it on some clouds).
func (c *Cloud) waitImage(ctx context.Context, id string) (*images.Image, error) {
	what := "wait for image " + id + " to be active"
	missed := 0
	var active *images.Image
	err := clouds.Within(ctx, what, c.cfg.ImageTimeout, func(ctx context.Context) error {
		return c.acct.images.Wait(ctx, c.image, what, id, func(seen clouds.Seen[images.Image]) (bool, error) {
			if !seen.Found {
				if missed++; missed >= c.opts.ImageNotFoundTries {
					return false, &clouds.Error{Kind: clouds.KindFailed, Op: what,
						Err: fmt.Errorf("image %s not found after %d tries", id, missed)}
				}
				return false, nil
			}
			missed = 0
			im := seen.Value
			switch im.Status {
			case images.ImageStatusActive:
				active = &im
				return true, nil
			case images.ImageStatusKilled, images.ImageStatusDeleted, "pending_delete":
				return false, &clouds.Error{Kind: clouds.KindFailed, Op: what, Code: string(im.Status),
					Err: fmt.Errorf("image %s is %s: the upload failed", id, im.Status)}
			}
			return false, nil
		})
	})
	return active, err
}

// PollerStats are what the account's pollers of servers and of images have
// done (for tests and benchmarks).
func (c *Cloud) PollerStats() (servers, images clouds.PollerStats) {
	return c.acct.servers.Stats(), c.acct.images.Stats()
}

// Polling reports whether a poller of the cloud's account runs: a build
// waits on one of its servers or images.
func (c *Cloud) Polling() bool {
	return c.acct.servers.Running() || c.acct.images.Running()
}
