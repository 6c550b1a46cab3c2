package provenance

// The image tags a statement speaks for. They are the same strings as the
// clouds package's Tag* constants (a test keeps them so); this package keeps its
// own copy so that it needs nothing of clouds.
const (
	TagRepo      = "imagegen:repo"
	TagCommit    = "imagegen:commit"
	TagGenerator = "imagegen:generator"
	TagScriptSHA = "imagegen:script-sha256"
	TagBaseImage = "imagegen:base-image"
	TagBuild     = "imagegen:build"

	// TagProvenance holds the Digest of the image's envelope. It is set after
	// signing (the statement names the image id, which only exists once
	// Snapshot returns), so it cannot be among the statement's own Tags.
	TagProvenance = "imagegen:provenance-sha256"
)
