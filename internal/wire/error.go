package wire

// Error is the JSON body of every error response.
type Error struct {
	Error string `json:"error"`
	// ModRevision is set on a failed compare-and-set: the key's current
	// mod revision (0 when the key does not exist).
	ModRevision *int64 `json:"mod_revision,omitempty"`
	// CompactRevision is set when a watch asked for compacted history.
	CompactRevision int64 `json:"compact_revision,omitempty"`
}
