package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// Errors callers test for.
var (
	// ErrConflict means the request clashes with the cluster's state (a name
	// in use, a node that is still alive, a change that would lose quorum).
	ErrConflict = errors.New("conflict")
)

// ClusterInfo holds settings fixed when the cluster was bootstrapped.
type ClusterInfo struct {
	Voters  int       `json:"voters"`
	Created time.Time `json:"created"`
}

// Options configure a Manager.
type Options struct {
	Target           int // target voters, used when the cluster has no ClusterInfo yet
	DeadVoterTimeout time.Duration
	LeaseTTL         time.Duration
	// StartMember starts this node's store member joining with the given
	// initial cluster. Client nodes need it to be promoted to voter.
	StartMember func(ctx context.Context, initialCluster string) (*store.Member, error)
	// OnRoleChange is called after the node became a voter, to persist it.
	OnRoleChange func(role string) error
	// Metrics, if set, count lease changes and the death watch's actions.
	Metrics *Metrics
}

// Manager runs this node's part in membership: its record and liveness
// lease, autopilot when it holds the election, promotion when autopilot picks
// it, and the admission of other nodes through the API.
//
// Its Run methods are called once each, from the agent's errgroup; the other
// methods may be called from any goroutine.
type Manager struct {
	st   *store.Store
	log  *slog.Logger
	opts Options

	mu   sync.Mutex
	self NodeRecord

	// epoch is when the Manager was made; lastContact is the time from it
	// to the sending of the last lease grant or renewal that was answered
	// (so LastContact carries a monotonic reading).
	epoch       time.Time
	lastContact atomic.Int64
	leaseID     atomic.Int64
	leaseMu     sync.Mutex
	leaseCh     chan struct{} // closed when leaseID next changes
	promoting   atomic.Bool
}

// New returns a Manager for the node described by self.
func New(st *store.Store, self NodeRecord, opts Options, log *slog.Logger) *Manager {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	return &Manager{st: st, self: self, opts: opts, log: log, epoch: time.Now()}
}

// Self returns this node's record as last written.
func (m *Manager) Self() NodeRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self
}

// LastContact is when this node sent the last lease grant or renewal that
// the store leader answered (zero before the first); stale reads report
// the time since. It is taken when the request was sent, not when the
// answer came, so the lease surely lives until LastContact + LeaseTTL on
// the leader's clock. It carries a monotonic reading: time.Since on it
// is immune to changes of the wall clock.
func (m *Manager) LastContact() time.Time {
	n := m.lastContact.Load()
	if n == 0 {
		return time.Time{}
	}
	return m.epoch.Add(time.Duration(n))
}

// contacted records a grant or renewal sent at sent and answered.
func (m *Manager) contacted(sent time.Time) {
	m.lastContact.Store(max(int64(sent.Sub(m.epoch)), 1))
}

// Info reads the cluster settings, falling back to the local target. opts
// apply to the read (clientv3.WithSerializable: from this node's own copy,
// without a quorum).
func (m *Manager) Info(ctx context.Context, opts ...clientv3.OpOption) (ClusterInfo, error) {
	resp, err := m.st.Client().Get(ctx, keys.ClusterKey, opts...)
	if err != nil {
		return ClusterInfo{}, err
	}
	info := ClusterInfo{Voters: m.opts.Target}
	if len(resp.Kvs) == 1 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
			return ClusterInfo{}, fmt.Errorf("decode cluster info: %w", err)
		}
	}
	return info, nil
}

// Bootstrap records the cluster settings if no node has yet.
func (m *Manager) Bootstrap(ctx context.Context) error {
	b, _ := json.Marshal(ClusterInfo{Voters: m.opts.Target, Created: time.Now().UTC()})
	_, err := m.st.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(keys.ClusterKey), "=", 0)).
		Then(clientv3.OpPut(keys.ClusterKey, string(b))).Commit()
	return err
}

// withMembershipLock runs f while holding the cluster-wide membership lock.
func (m *Manager) withMembershipLock(ctx context.Context, f func(c *clientv3.Client) error) error {
	return lockedWith(ctx, m.st.Client(), f)
}

// lockedWith runs f holding the membership lock, taken through client c.
func lockedWith(ctx context.Context, c *clientv3.Client, f func(c *clientv3.Client) error) error {
	sess, err := concurrency.NewSession(c, concurrency.WithTTL(5), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("membership lock: %w", err)
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, keys.MembershipLock)
	if err := mu.Lock(ctx); err != nil {
		return fmt.Errorf("membership lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = mu.Unlock(uctx)
	}()
	return f(c)
}

// putSelf writes this node's record.
func (m *Manager) putSelf(ctx context.Context) error {
	rec := m.Self()
	b, _ := json.Marshal(rec)
	_, err := m.st.Client().Put(ctx, keys.NodeKey(rec.Name), string(b))
	return err
}

func (m *Manager) setRole(role string, memberID uint64) {
	m.mu.Lock()
	m.self.Role = role
	m.self.MemberID = memberID
	m.mu.Unlock()
}

// event records e, logging instead of failing when the store is unavailable.
func (m *Manager) event(ctx context.Context, typ, node, format string, args ...any) {
	e := wire.Event{Time: time.Now().UTC(), Type: typ, Node: node, Message: fmt.Sprintf(format, args...)}
	m.log.Info("cluster event", "type", typ, "node", node, "msg", e.Message)
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := RecordEvent(ectx, m.st.Client(), e); err != nil {
		m.log.Warn("record event", "type", typ, "err", err)
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// nodes reads every node record and the set of live nodes.
func readNodes(ctx context.Context, c *clientv3.Client) (map[string]NodeRecord, map[string]bool, error) {
	resp, err := c.Txn(ctx).Then(
		clientv3.OpGet(keys.NodesPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(keys.AlivePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, nil, err
	}
	recs := map[string]NodeRecord{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var r NodeRecord
		if json.Unmarshal(kv.Value, &r) == nil && r.Name != "" {
			recs[r.Name] = r
		}
	}
	alive := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		alive[string(kv.Key)[len(keys.AlivePrefix):]] = true
	}
	return recs, alive, nil
}

// LeaseID is this node's current liveness lease (0 before the first grant).
// Keys bound to it vanish when the node dies.
func (m *Manager) LeaseID() clientv3.LeaseID { return clientv3.LeaseID(m.leaseID.Load()) }

// Lease returns this node's liveness lease (0 before the first) and a
// channel closed when it next changes, so that what is bound to the lease
// (instance health) can be written again at once under the new one.
func (m *Manager) Lease() (clientv3.LeaseID, <-chan struct{}) {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	if m.leaseCh == nil {
		m.leaseCh = make(chan struct{})
	}
	return clientv3.LeaseID(m.leaseID.Load()), m.leaseCh
}

func (m *Manager) setLease(id clientv3.LeaseID) {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	m.leaseID.Store(int64(id))
	if m.leaseCh != nil {
		close(m.leaseCh)
	}
	m.leaseCh = make(chan struct{})
}
