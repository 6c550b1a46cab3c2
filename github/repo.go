package github

import "github.com/tidwall/gjson"

// DeliveryRepo returns the full name (owner/name) of the repository a
// delivery's payload is about, "" when it names none. payload must be one
// JSON value (PeekDelivery checked it). Only the webhook's github.allow_repos
// filter reads it; the worker decides again on what ParseDelivery decodes.
func DeliveryRepo(payload []byte) string {
	return gjson.GetBytes(payload, "repository.full_name").String()
}
