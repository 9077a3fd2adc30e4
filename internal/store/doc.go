// Package store runs the replicated store tandem keeps all cluster state in:
// an embedded etcd member on voter nodes, or a client of the voters (or of an
// external etcd cluster) on client nodes. It owns the etcd client the rest of
// the agent uses, the key layout, and the mapping of store failures to
// errors a person can act on.
package store
