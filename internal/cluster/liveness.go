package cluster

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/store"
)

// RunLiveness writes this node's record, then keeps its alive key bound to a
// lease of LeaseTTL, kept alive every TTL/3 (etcd's client keepalive rate).
// When the lease is lost (a partition longer than the TTL, or the client was
// switched) it takes a new one. On return it revokes the lease so the node
// shows as dead at once after a clean stop.
func (m *Manager) RunLiveness(ctx context.Context) error {
	ttl := int64(m.opts.LeaseTTL / time.Second)
	if ttl < 1 {
		ttl = 1
	}
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
		lease, err := c.Grant(rctx, ttl)
		if err == nil {
			_, err = c.Put(rctx, store.AliveKey(m.Self().Name), "", clientv3.WithLease(lease.ID))
		}
		cancel()
		if err != nil {
			m.log.Debug("liveness lease", "err", err)
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		m.leaseID.Store(int64(lease.ID))
		m.lastContact.Store(time.Now().UnixNano())
		ka, err := c.KeepAlive(ctx, lease.ID)
		if err != nil {
			continue
		}
		for range ka {
			m.lastContact.Store(time.Now().UnixNano())
		}
		if ctx.Err() == nil {
			m.log.Warn("liveness lease lost; taking a new one")
		}
	}
	return nil
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
			m.event(ctx, EventLeader, m.Self().Name, "%s is the store leader", m.Self().Name)
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
