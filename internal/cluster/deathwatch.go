package cluster

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
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

// RunDeathWatch speeds up the detection of dead nodes. Every interval it
// opens a TCP connection to the API of the next deathWatchPeers alive nodes
// (in name order, wrapping), as nodes() lists them (the local view, so the
// watch costs the store nothing until it acts), and revokes the liveness
// lease of a node that gave enough evidence of death under the same lease:
// two refused connections in a row (nothing listens: the agent binds its
// API before it takes a lease and closes it only when stopping), or six
// probes in a row with no answer within the interval (the host or its
// network is gone; a frozen process still has its connections accepted by
// the kernel, so a SIGSTOP does not count). Its instances then leave every
// view within about a second, instead of a lease TTL later, or a TTL plus an
// election when the dead node led the store (etcd restarts every lease's TTL
// when leadership moves).
//
// A node is revoked at most once until it answers a watcher again, so a
// firewall that rejects or drops the probes while the node's renewals still
// get through can make it flicker once, not flap.
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

// deathWatchRound probes this node's share of alive, all at once, and
// revokes the leases w decides on.
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
	// The leases come from a view read before the probes: a node binds its
	// API before it takes a lease, so a lease seen before a refused probe
	// belongs to a process that was not listening then.
	results := make([]probeResult, len(targets))
	var wg sync.WaitGroup
	for i, name := range targets {
		api := byName[name].API
		if api == "" {
			results[i] = probeUnknown
			continue
		}
		wg.Go(func() { results[i] = probe(ctx, api, interval) })
	}
	wg.Wait()
	for i, name := range targets {
		n, r := byName[name], results[i]
		if r == probeRefused || r == probeSilent {
			m.opts.Metrics.probesFailed.WithLabelValues(name, r.String()).Inc()
		}
		if !w.observe(name, n.Lease, r) {
			continue
		}
		if time.Since(m.LastContact()) > m.opts.LeaseTTL/2 {
			// This node cannot renew its own lease: it may be the one cut
			// off (its probes unanswered for that reason), or the store is
			// electing a leader. Judge again once it can.
			w.retry(name, n.Lease)
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
			m.log.Debug("death watch: could not revoke the lease of a node found dead", "dead", name, "err", err)
			continue
		}
		m.opts.Metrics.revocations.WithLabelValues(name).Inc()
		m.endCampaigns(ctx, name, interval)
		why := "refused connections"
		if r == probeSilent {
			why = "stopped answering (probes timed out)"
		}
		m.event(ctx, wire.EventLeaseRevoked, name, "%s revoked %s's liveness lease: its API (%s) %s", self, name, n.API, why)
	}
}

// endCampaigns revokes the session leases of the dead node's election
// keys (the elections' values are the candidates' names), so that the
// singletons it held, autopilot among them, move to a live node now rather
// than when its sessions expire: a TTL later, or a TTL after the election
// if it led the store. A session is the node's own; ending it early costs a
// live node (were the watch wrong) only its turn.
func (m *Manager) endCampaigns(ctx context.Context, node string, interval time.Duration) {
	rctx, cancel := context.WithTimeout(ctx, max(2*interval, 500*time.Millisecond))
	defer cancel()
	c := m.st.Client()
	resp, err := c.Get(rctx, keys.ElectionPrefix, clientv3.WithPrefix())
	if err != nil {
		return // the sessions will expire
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) == node && kv.Lease != 0 {
			_, _ = c.Revoke(rctx, clientv3.LeaseID(kv.Lease))
		}
	}
}

// probeResult is what one probe of a node's API found.
type probeResult int

const (
	probeAnswered probeResult = iota // connected
	probeRefused                     // connection refused: nothing listens there
	probeSilent                      // no answer within the timeout
	probeUnknown                     // another error, or this node stopping: no evidence
)

func (r probeResult) String() string {
	return [...]string{"answered", "refused", "silent", "unknown"}[r]
}

// probe opens and closes a TCP connection to addr.
func probe(ctx context.Context, addr string, timeout time.Duration) probeResult {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		return probeAnswered
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return probeRefused
	}
	if ctx.Err() != nil {
		return probeUnknown
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return probeSilent
	}
	return probeUnknown
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

// Evidence of death: a refused probe weighs refusedWeight, a silent one
// silentWeight; deadEvidence under one lease, with no answer in between,
// decides. So two refusals (0.25–0.5 s at the default interval) or six
// silent probes (1.5 s).
const (
	refusedWeight = 3
	silentWeight  = 1
	deadEvidence  = 6
)

// deathWatch is the decision state of RunDeathWatch, per probed node.
type deathWatch struct {
	armed map[string]bool     // it answered since its lease last went away unanswered
	seen  map[string]evidence // since its last answer
}

type evidence struct {
	lease int64 // the lease seen before the probes
	score int
}

func newDeathWatch() *deathWatch {
	return &deathWatch{armed: map[string]bool{}, seen: map[string]evidence{}}
}

// observe records a probe of node, whose alive key had lease just before
// the probe, and reports whether to revoke that lease now: the probes since
// its last answer, all under this lease, add up to deadEvidence, and the
// node answered at some time since its lease last went away while it did
// not answer (revoked by this watcher or another, or replaced).
func (w *deathWatch) observe(node string, lease int64, r probeResult) bool {
	var weight int
	switch r {
	case probeAnswered:
		w.armed[node] = true
		delete(w.seen, node)
		return false
	case probeRefused:
		weight = refusedWeight
	case probeSilent:
		weight = silentWeight
	default:
		return false
	}
	ev, ok := w.seen[node]
	if ok && ev.lease != lease {
		// A new lease while it does not answer this node: another watcher
		// revoked the last one and the node took a new one at once, or it
		// restarted and died before answering. Either way, wait for an
		// answer before revoking again.
		w.armed[node] = false
		ev = evidence{}
	}
	ev.lease = lease
	ev.score += weight
	w.seen[node] = ev
	if ev.score < deadEvidence || lease == 0 || !w.armed[node] {
		return false
	}
	w.armed[node] = false
	delete(w.seen, node)
	return true
}

// retry undoes a decision to revoke lease that could not be carried out, so
// that the next probe without an answer under the same lease decides again.
func (w *deathWatch) retry(node string, lease int64) {
	w.armed[node] = true
	w.seen[node] = evidence{lease: lease, score: deadEvidence - 1}
}

// forget drops the probe state of nodes this node no longer probes. A node
// that left the targets while not answering this node's probes (its lease
// was revoked by another watcher, or ran out) is disarmed: it must answer
// again before this node revokes a lease of its, so that a node whose
// probes a firewall blocks is revoked once in all, not once per watcher.
// Whether a node that left while answering was seen answering is kept.
func (w *deathWatch) forget(targets []string) {
	for name := range w.seen {
		if !slices.Contains(targets, name) {
			delete(w.seen, name)
			w.armed[name] = false
		}
	}
}
