package wire

import "encoding/base64"

// KV is one key and its value. Value holds text; a value that is not valid
// UTF-8 comes in ValueBase64 instead.
type KV struct {
	Key            string `json:"key"`
	Value          string `json:"value,omitempty"`
	ValueBase64    string `json:"value_base64,omitempty"`
	CreateRevision int64  `json:"create_revision"`
	ModRevision    int64  `json:"mod_revision"`
	Version        int64  `json:"version"`
}

// Bytes returns the value.
func (kv KV) Bytes() []byte {
	if kv.ValueBase64 != "" {
		b, _ := base64.StdEncoding.DecodeString(kv.ValueBase64)
		return b
	}
	return []byte(kv.Value)
}

// ReadInfo says how a read was served. For a stale read, Revision is the
// revision the answering node had applied and LastContactMs how long ago it
// last heard from the store leader.
type ReadInfo struct {
	Consistency   string `json:"consistency"`
	Revision      int64  `json:"revision"`
	LastContactMs *int64 `json:"last_contact_ms,omitempty"`
}

// GetResult answers GET /v1/kv/KEY.
type GetResult struct {
	ReadInfo
	KV
}

// ListResult answers GET /v1/kv/PREFIX?prefix=true.
type ListResult struct {
	ReadInfo
	Items []KV  `json:"items"`
	Count int64 `json:"count"`
	More  bool  `json:"more"`
}

// IdempotencyHeader is the request header of an idempotent KV write: the
// cluster applies a write at most once per key (remembered at least ten
// minutes) and answers a repeat with the first write's revision.
const IdempotencyHeader = "Idempotency-Key"

// WriteResult answers PUT and DELETE.
type WriteResult struct {
	Key      string `json:"key"`
	Revision int64  `json:"revision"`
	Deleted  int64  `json:"deleted,omitempty"`
	// Replayed: the request's Idempotency-Key was already applied; Revision
	// is that first write's (a replayed delete does not know its count).
	Replayed bool `json:"replayed,omitempty"`
}

// WatchEvent is one line of a watch stream.
type WatchEvent struct {
	Type     string `json:"type"` // put, delete, or error
	Revision int64  `json:"revision"`
	KV       *KV    `json:"kv,omitempty"`
	Error    string `json:"error,omitempty"`
	// CompactRevision is set on an error when the requested revision was
	// compacted: resume from it (history before it is gone).
	CompactRevision int64 `json:"compact_revision,omitempty"`
}
