package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RunLiveness writes this node's record, then keeps its alive key bound to a
// lease of LeaseTTL, renewed every TTL/4. When the lease is lost (a
// partition longer than the TTL, a revocation, or the client was switched)
// it takes a new one; when the store client is switched, it keeps the lease
// and renews it through the new client. On return it revokes the lease so the node shows as
// dead at once after a clean stop.
//
// Each renewal is a KeepAliveOnce of its own, bounded by the renewal
// interval, rather than etcd's KeepAlive stream: a renewal reaches the
// leader through the local member, which forwards it over HTTP, and one
// forwarded to a leader that froze (SIGSTOP, a blackhole) hangs for etcd's
// request timeout (several seconds). On the shared stream every later
// renewal of every lease of this client waits behind it, so when the store
// leader froze, every other node's lease ran out even though a new leader
// had been elected within a second. A renewal that gives up after the
// interval is simply sent again, and reaches the new leader.
func (m *Manager) RunLiveness(ctx context.Context) error {
	ttl := int64(m.opts.LeaseTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
	every := max(time.Duration(ttl)*time.Second/4, 100*time.Millisecond)
	wroteRecord := false
	defer func() {
		if id := m.leaseID.Load(); id != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = m.st.Client().Revoke(rctx, clientv3.LeaseID(id))
			cancel()
		}
	}()
	for ctx.Err() == nil {
		c := m.st.Client()
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if !wroteRecord {
			if err := m.putSelf(rctx); err != nil {
				cancel()
				m.log.Debug("write node record", "err", err)
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			wroteRecord = true
		}
		sent := time.Now()
		lease, err := c.Grant(rctx, ttl)
		var put *clientv3.PutResponse
		if err == nil {
			// Tell the health runner first: it rewrites the instances'
			// health under the new lease while the alive key is written.
			m.setLease(lease.ID)
			m.opts.Metrics.leases.Inc()
			put, err = c.Put(rctx, keys.AliveKey(m.Self().Name), "", clientv3.WithLease(lease.ID))
		}
		cancel()
		if err != nil {
			m.log.Debug("liveness lease", "err", err)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		m.contacted(sent)
		// A lease is the cluster's, not a client's: when the store client
		// is switched (a promotion, a store member's restart), the same
		// lease is renewed through the new one.
		for m.keepAlive(ctx, lease.ID, put.Header.Revision, every) && ctx.Err() == nil {
			m.log.Debug("the store client changed; renewing the liveness lease through the new one")
		}
		if ctx.Err() == nil {
			m.log.Warn("liveness lease lost; taking a new one")
		}
	}
	return nil
}

// keepAlive renews lease every interval until ctx ends, the lease is gone
// (expired or revoked), or the store client is switched: then it returns
// true, and the caller goes on with the same lease. It also
// watches this node's alive key from rev, the revision that wrote it, and
// returns as soon as the key is deleted, so that a lease revoked by mistake
// (etcd's old leader, once resumed after a freeze, revokes the leases it
// thinks expired) is replaced within a few milliseconds rather than at the
// next renewal.
func (m *Manager) keepAlive(ctx context.Context, id clientv3.LeaseID, rev int64, every time.Duration) (switched bool) {
	c := m.st.Client()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	deleted := c.Watch(wctx, keys.AliveKey(m.Self().Name), clientv3.WithRev(rev+1))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if m.st.Client() != c {
			return true
		}
		kctx, cancel := context.WithTimeout(ctx, every)
		sent := time.Now()
		resp, err := c.KeepAliveOnce(kctx, id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			m.contacted(sent)
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			return false
		case ctx.Err() != nil:
			return false
		default:
			// No answer in time (no leader yet, or the renewal went to a
			// leader that froze): send it again at once.
			m.log.Debug("liveness renewal", "err", err)
			m.opts.Metrics.renewFails.Inc()
			sleep(ctx, 20*time.Millisecond)
			continue
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case wr, ok := <-deleted:
			if !ok {
				deleted = nil // watch ended (store switched or closing): renewals still tell
				continue
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return false
				}
			}
		}
	}
}

// RunLeaderEvents records an event each time this node's store member
// becomes the Raft leader. It waits while the node has no member.
func (m *Manager) RunLeaderEvents(ctx context.Context) error {
	wasLeader := false
	for ctx.Err() == nil {
		mem := m.st.Member()
		if mem == nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		ch := mem.Etcd.Server.LeaderChangedNotify()
		isLeader := mem.IsLeader()
		if isLeader && !wasLeader {
			m.event(ctx, wire.EventLeader, m.Self().Name, "%s is the store leader", m.Self().Name)
		}
		wasLeader = isLeader
		select {
		case <-ctx.Done():
		case <-ch:
		case <-mem.Etcd.Server.StopNotify():
			return nil
		}
	}
	return nil
}
