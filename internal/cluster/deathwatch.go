package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/store"
)

// deathWatchPeers is how many other nodes each node probes: the next ones
// after it in name order, so that every node is probed by as many.
const deathWatchPeers = 2

// RunDeathWatch speeds up the detection of dead node processes. Every
// interval it opens a TCP connection to the API of the next deathWatchPeers
// alive nodes (in name order, wrapping). When a node's API refuses two
// probes in a row, its process is gone (the agent binds its API before it
// takes a lease and closes it only when stopping), so this node revokes the
// node's liveness lease: its instances leave every view about one interval
// after the kill, instead of a lease TTL later, or a TTL plus an election
// when the dead node led the store (etcd restarts every lease's TTL when
// leadership moves).
//
// Only a refusal counts. A timeout (a host down, a partition, an overloaded
// node) is left to the lease. A node is revoked at most once until its API
// answers again, so a firewall that rejects this node's probes while the
// node's keepalives still get through cannot make it flap.
//
// interval 0 disables the watch.
func (m *Manager) RunDeathWatch(ctx context.Context, interval time.Duration) error {
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
		rctx, cancel := context.WithTimeout(ctx, max(4*interval, time.Second))
		m.deathWatchRound(rctx, w, interval)
		cancel()
	}
}

// deathWatchRound reads the alive nodes, probes this node's share of them
// and revokes the leases w decides on.
func (m *Manager) deathWatchRound(ctx context.Context, w *deathWatch, interval time.Duration) {
	c := m.st.Client()
	// A serializable read answers from the local member; a stale list only
	// means a probe of a node that just left or a round without one that
	// just came.
	alive, err := c.Get(ctx, store.AlivePrefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return
	}
	leases := map[string]clientv3.LeaseID{}
	var names []string
	for _, kv := range alive.Kvs {
		name := strings.TrimPrefix(string(kv.Key), store.AlivePrefix)
		leases[name] = clientv3.LeaseID(kv.Lease)
		names = append(names, name)
	}
	self := m.Self().Name
	targets := watchTargets(names, self, deathWatchPeers)
	w.forget(targets)
	for _, name := range targets {
		lease := int64(leases[name])
		api, err := m.apiOf(ctx, w, name, lease)
		if err != nil || api == "" {
			continue
		}
		if !w.observe(name, lease, probeRefused(ctx, api, interval)) {
			continue
		}
		// Revoking needs a store leader. When the dead node was the leader,
		// a request made before the election can hang until etcd's own
		// timeout, so give up soon and decide again next round.
		vctx, cancel := context.WithTimeout(ctx, max(2*interval, 500*time.Millisecond))
		_, err = c.Revoke(vctx, clientv3.LeaseID(lease))
		cancel()
		if err != nil {
			w.retry(name, lease)
			m.log.Debug("death watch: could not revoke the lease of a node whose API refuses connections", "dead", name, "err", err)
			continue
		}
		m.log.Info("death watch: node's API refuses connections; revoked its liveness lease", "dead", name, "api", api)
	}
}

// apiOf returns a node's API address from its record, cached in w for as
// long as the node keeps the same lease (a node writes its record before it
// takes a lease, so a new lease may come with a new address).
func (m *Manager) apiOf(ctx context.Context, w *deathWatch, name string, lease int64) (string, error) {
	if a, ok := w.api[name]; ok && a.lease == lease {
		return a.addr, nil
	}
	resp, err := m.st.Client().Get(ctx, store.NodeKey(name), clientv3.WithSerializable())
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	var rec NodeRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return "", err
	}
	w.api[name] = leasedAddr{lease: lease, addr: rec.API}
	return rec.API, nil
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
	api     map[string]leasedAddr // API address from the node record
	armed   map[string]bool       // its API answered since the last revocation
	refused map[string]int64      // lease seen before the last probe, if it was refused
}

type leasedAddr struct {
	lease int64
	addr  string
}

func newDeathWatch() *deathWatch {
	return &deathWatch{api: map[string]leasedAddr{}, armed: map[string]bool{}, refused: map[string]int64{}}
}

// observe records a probe of node, whose alive key had lease just before
// the probe, and reports whether to revoke that lease now: the probe and
// the one before were refused under the same lease, and the node's API
// answered at some time since the watch last revoked one of its leases.
func (w *deathWatch) observe(node string, lease int64, refused bool) bool {
	if !refused {
		w.armed[node] = true
		delete(w.refused, node)
		return false
	}
	prev, seen := w.refused[node]
	w.refused[node] = lease
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

// forget drops the probe state of nodes this node no longer probes. Whether
// a node was seen answering is kept: a node that leaves the targets and
// comes back (another node died or came back) stays armed.
func (w *deathWatch) forget(targets []string) {
	for name := range w.refused {
		if !slices.Contains(targets, name) {
			delete(w.refused, name)
		}
	}
	for name := range w.api {
		if !slices.Contains(targets, name) {
			delete(w.api, name)
		}
	}
}
