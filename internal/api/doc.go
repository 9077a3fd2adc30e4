// Package api serves tandem's HTTP API on every node: the user's key-value
// store (/v1/kv/, /v1/watch/), membership and status (/v1/members,
// /v1/status, /v1/events), and the calls nodes make of each other
// (/v1/cluster/join). Errors are JSON objects with a message that says what
// went wrong and what to do.
package api
