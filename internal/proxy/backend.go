package proxy

import "sync/atomic"

// Backend is one instance the proxy can send to. One Backend is shared by
// every request to that instance, from any goroutine: its counters are
// atomic and its outlier state guards itself, so no method needs a lock
// held by the caller. The exported fields are set by NewBackend and never
// change afterwards; a change of weight or node makes a new Backend.
type Backend struct {
	ID      string // instance id, the same on every node
	Service string
	Addr    string // host:port
	Node    string // the node that owns the instance
	Weight  int    // at least 1

	idHash   uint64 // rendezvous hashing's per-backend seed, from ID
	inflight atomic.Int64
	outlier  outlierState
	conns    connPool // keep-alive connections of the HTTP/1.1 path
}

// NewBackend returns a backend with nothing in flight and no outlier
// history. A weight below 1 counts as 1.
func NewBackend(id, service, addr, node string, weight int) *Backend {
	return &Backend{
		ID:      id,
		Service: service,
		Addr:    addr,
		Node:    node,
		Weight:  max(weight, 1),
		idHash:  hashID(id),
	}
}

// Inflight is the number of requests (or TCP connections) in flight to the
// backend: Begin calls minus End calls.
func (b *Backend) Inflight() int64 { return b.inflight.Load() }

// Begin counts a request that starts. Every Begin must be matched by
// exactly one End.
func (b *Backend) Begin() { b.inflight.Add(1) }

// End counts a request that ends.
func (b *Backend) End() { b.inflight.Add(-1) }

// hashID hashes an instance id for rendezvous hashing. It depends on
// nothing but the id, so every node (and every process) agrees.
func hashID(id string) uint64 { return mix64(fnv1a(id)) }

// fnv1a is FNV-1a 64 of s (as hash/fnv computes it), without allocating.
func fnv1a(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// mix64 is the finalizer of MurmurHash3: a bijection on uint64 in which
// every input bit affects every output bit.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
