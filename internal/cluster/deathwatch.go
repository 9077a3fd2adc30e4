package cluster

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// deathWatchPeers is how many other nodes each node probes: the next ones
// after it in name order, so that every node is probed by as many.
const deathWatchPeers = 2

// AliveNode is an alive node as the death watch needs it.
type AliveNode struct {
	Name  string
	API   string // host:port
	Lease int64  // the lease its alive key is bound to
}

// RunDeathWatch speeds up the detection of dead node processes. Every
// interval it opens a TCP connection to the API of the next deathWatchPeers
// alive nodes (in name order, wrapping), as nodes() lists them (the local
// view, so the watch costs the store nothing until it acts). When a node's
// API refuses two probes in a row, its process is gone (the agent binds its
// API before it takes a lease and closes it only when stopping), so this
// node revokes the node's liveness lease: its instances leave every view
// about one interval after the kill, instead of a lease TTL later, or a TTL
// plus an election when the dead node led the store (etcd restarts every
// lease's TTL when leadership moves).
//
// Only a refusal counts. A timeout (a host down, a partition, an overloaded
// node) is left to the lease. A node is revoked at most once until its API
// answers a watcher again, so a firewall that rejects the probes while the
// node's keepalives still get through cannot make it flap.
//
// interval 0 disables the watch.
func (m *Manager) RunDeathWatch(ctx context.Context, interval time.Duration, nodes func() []AliveNode) error {
	if interval <= 0 {
		return nil
	}
	w := newDeathWatch()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		m.deathWatchRound(ctx, w, interval, nodes())
	}
}

// deathWatchRound probes this node's share of alive and revokes the leases
// w decides on.
func (m *Manager) deathWatchRound(ctx context.Context, w *deathWatch, interval time.Duration, alive []AliveNode) {
	byName := make(map[string]AliveNode, len(alive))
	names := make([]string, 0, len(alive))
	for _, n := range alive {
		byName[n.Name] = n
		names = append(names, n.Name)
	}
	self := m.Self().Name
	targets := watchTargets(names, self, deathWatchPeers)
	w.forget(targets)
	for _, name := range targets {
		n := byName[name]
		// The lease comes from a view read before the probe: a node binds
		// its API before it takes a lease, so a lease seen before a refused
		// probe belongs to a process that was not listening then.
		if n.API == "" {
			continue
		}
		refused := probeRefused(ctx, n.API, interval)
		if refused {
			m.opts.Metrics.refused.WithLabelValues(name).Inc()
		}
		if !w.observe(name, n.Lease, refused) {
			continue
		}
		// Revoking needs a store leader. When the dead node was the leader,
		// a request made before the election can hang until etcd's own
		// timeout, so give up soon and decide again next round.
		vctx, cancel := context.WithTimeout(ctx, max(2*interval, 500*time.Millisecond))
		_, err := m.st.Client().Revoke(vctx, clientv3.LeaseID(n.Lease))
		cancel()
		if err != nil {
			if rpctypes.Error(err) == rpctypes.ErrLeaseNotFound {
				continue // revoked by another watcher, or expired
			}
			w.retry(name, n.Lease)
			m.log.Debug("death watch: could not revoke the lease of a node whose API refuses connections", "dead", name, "err", err)
			continue
		}
		m.opts.Metrics.revocations.WithLabelValues(name).Inc()
		m.event(ctx, EventLeaseRevoked, name, "%s revoked %s's liveness lease: its API (%s) refused two connections in a row", self, name, n.API)
	}
}

// probeRefused reports whether a TCP connection to addr was refused. Any
// other outcome (connected, timed out, unreachable) is not a refusal.
func probeRefused(ctx context.Context, addr string, timeout time.Duration) bool {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// watchTargets returns the k nodes after self in name order among alive,
// wrapping, never self. self need not be alive itself.
func watchTargets(alive []string, self string, k int) []string {
	others := make([]string, 0, len(alive))
	for _, n := range alive {
		if n != self {
			others = append(others, n)
		}
	}
	slices.Sort(others)
	others = slices.Compact(others)
	if len(others) <= k {
		return others
	}
	start, _ := slices.BinarySearch(others, self)
	out := make([]string, 0, k)
	for i := range k {
		out = append(out, others[(start+i)%len(others)])
	}
	return out
}

// deathWatch is the decision state of RunDeathWatch, per probed node.
type deathWatch struct {
	armed   map[string]bool  // its API answered since the last revocation
	refused map[string]int64 // lease seen before the last probe, if it was refused
}

func newDeathWatch() *deathWatch {
	return &deathWatch{armed: map[string]bool{}, refused: map[string]int64{}}
}

// observe records a probe of node, whose alive key had lease just before
// the probe, and reports whether to revoke that lease now: the probe and
// the one before were refused under the same lease, and the node's API
// answered at some time since its lease last went away while it refused
// (revoked by this watcher or another, or replaced).
func (w *deathWatch) observe(node string, lease int64, refused bool) bool {
	if !refused {
		w.armed[node] = true
		delete(w.refused, node)
		return false
	}
	prev, seen := w.refused[node]
	w.refused[node] = lease
	if seen && prev != lease {
		// A new lease while its API refuses this node: another watcher
		// revoked the last one and the node took a new one at once, or it
		// restarted and died before answering. Either way, wait for an
		// answer before revoking again.
		w.armed[node] = false
	}
	if !seen || prev != lease || lease == 0 || !w.armed[node] {
		return false
	}
	w.armed[node] = false
	delete(w.refused, node)
	return true
}

// retry undoes a decision to revoke lease that could not be carried out, so
// that the next refused probe under the same lease decides it again.
func (w *deathWatch) retry(node string, lease int64) {
	w.armed[node] = true
	w.refused[node] = lease
}

// forget drops the probe state of nodes this node no longer probes. A node
// that left the targets while refusing this node's probes (its lease was
// revoked by another watcher, or ran out) is disarmed: it must answer again
// before this node revokes a lease of its, so that a node whose probes are
// rejected by a firewall is revoked once in all, not once per watcher.
// Whether a node that left while answering was seen answering is kept.
func (w *deathWatch) forget(targets []string) {
	for name := range w.refused {
		if !slices.Contains(targets, name) {
			delete(w.refused, name)
			w.armed[name] = false
		}
	}
}
