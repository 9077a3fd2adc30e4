package proxy

import "sync"

// leaving holds the backends that left their pool while requests or
// connections to them may still be in flight, so that Proxy.Routing can
// tell when an instance has drained. The table's rebuild adds to it; a
// backend goes once nothing is in flight to it.
type leaving struct {
	mu sync.Mutex
	bs map[*Backend]struct{}
}

// add records backends that just left their pools.
func (l *leaving) add(bs []*Backend) {
	if len(bs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bs == nil {
		l.bs = map[*Backend]struct{}{}
	}
	// Forget the earlier ones with nothing in flight, so the set stays
	// small on a node that never asks (no instance stops) while backends
	// come and go.
	for b := range l.bs {
		if b.Inflight() <= 0 {
			delete(l.bs, b)
		}
	}
	for _, b := range bs {
		l.bs[b] = struct{}{}
	}
}

// inflight sums what is in flight to the leaving backends of instance id
// of service svc, and forgets the leaving backends with nothing in flight.
func (l *leaving) inflight(svc, id string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for b := range l.bs {
		in := b.Inflight()
		if in <= 0 {
			delete(l.bs, b)
			continue
		}
		if b.Service == svc && b.ID == id {
			n += in
		}
	}
	return n
}

// Routing reports whether this proxy may still send anything to instance
// id of service svc: routed when its routing table holds the instance (the
// table follows the node's view), and inflight, the requests and TCP
// connections sent to it that have not ended yet, including those sent
// before it left the table. An instance that is neither routed nor has
// anything in flight has drained from this proxy. Safe from any goroutine.
func (p *Proxy) Routing(svc, id string) (routed bool, inflight int64) {
	if pool := p.table.cur.Load().pools[svc]; pool != nil {
		for _, b := range pool.Backends {
			if b.ID == id {
				routed = true
				inflight += b.Inflight()
			}
		}
	}
	return routed, inflight + p.table.gone.inflight(svc, id)
}
