package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/store"
	"github.com/tandemhq/tandem/internal/wire"
)

// Admit decides how a new node takes part: as a store learner (to be promoted
// to voter) while voters are below target, otherwise as a client node. It is
// idempotent: a node that asks again after a crash gets the same answer.
func (m *Manager) Admit(ctx context.Context, req wire.JoinRequest) (wire.JoinResponse, error) {
	if !config.ValidName(req.Name) {
		return wire.JoinResponse{}, fmt.Errorf("%w: node name %q is not valid: use 1-63 lowercase letters, digits or dashes", ErrConflict, req.Name)
	}
	if !strings.HasPrefix(req.PeerURL, "http://") || !strings.HasPrefix(req.StoreURL, "http://") {
		return wire.JoinResponse{}, fmt.Errorf("%w: peer_url and store_url must be http:// URLs", ErrConflict)
	}
	var out wire.JoinResponse
	err := m.withMembershipLock(ctx, func(c *clientv3.Client) error {
		info, err := m.Info(ctx)
		if err != nil {
			return err
		}
		ml, err := c.MemberList(ctx)
		if err != nil {
			return err
		}
		for _, mem := range ml.Members {
			if contains(mem.PeerURLs, req.PeerURL) {
				out = memberResponse(ml.Members, mem.ID, req.Name)
				return nil
			}
			if mem.Name == req.Name {
				return fmt.Errorf("%w: a store member named %q already exists at %v; if that node is gone, remove it with 'tandem node remove %s' first", ErrConflict, req.Name, mem.PeerURLs, req.Name)
			}
		}
		recs, alive, err := readNodes(ctx, c)
		if err != nil {
			return err
		}
		if rec, ok := recs[req.Name]; ok && alive[req.Name] && rec.API != req.API {
			return fmt.Errorf("%w: node name %q is taken by a live node at %s; pick another --name", ErrConflict, req.Name, rec.API)
		}
		if len(ml.Members) < info.Voters {
			resp, err := c.MemberAddAsLearner(ctx, []string{req.PeerURL})
			if err != nil {
				return fmt.Errorf("add learner: %w", err)
			}
			out = memberResponse(resp.Members, resp.Member.ID, req.Name)
			m.event(ctx, wire.EventLearnerAdded, req.Name, "%s joins as a store learner (%d of %d voters)", req.Name, len(ml.Members)+1, info.Voters)
			return nil
		}
		out = wire.JoinResponse{Role: RoleClient, Endpoints: voterEndpoints(ml.Members)}
		m.event(ctx, wire.EventJoined, req.Name, "%s joins as a client node (%d voters is the target)", req.Name, info.Voters)
		return nil
	})
	return out, err
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// memberResponse tells member id how to start: the initial cluster lists
// every member, naming the unstarted one after the joining node.
func memberResponse(members []*etcdserverpb.Member, id uint64, name string) wire.JoinResponse {
	var parts []string
	for _, mem := range members {
		n := mem.Name
		if mem.ID == id {
			n = name
		} else if n == "" {
			n = fmt.Sprintf("unstarted-%x", mem.ID)
		}
		for _, u := range mem.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return wire.JoinResponse{Role: RoleVoter, InitialCluster: strings.Join(parts, ","), MemberID: id, Endpoints: voterEndpoints(members)}
}

func voterEndpoints(members []*etcdserverpb.Member) []string {
	var eps []string
	for _, mem := range members {
		if !mem.IsLearner && len(mem.ClientURLs) > 0 {
			eps = append(eps, mem.ClientURLs...)
		}
	}
	sort.Strings(eps)
	return eps
}

// PromoteSelf waits until the learner id has caught up with the leader and
// promotes it to voter, through c (a client of the existing voters).
func PromoteSelf(ctx context.Context, c *clientv3.Client, id uint64) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.MemberPromote(pctx, id)
		cancel()
		if err == nil || strings.Contains(fmt.Sprint(err), "not a learner") {
			return nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("promote learner %x: %w (last error: %v)", id, ctx.Err(), err)
		}
	}
}

// RunPromotion waits, on a client node, for autopilot to pick it as a voter,
// then starts its store member, promotes it and switches the node to it.
func (m *Manager) RunPromotion(ctx context.Context) error {
	if m.Self().Role != RoleClient || m.Self().External || m.opts.StartMember == nil {
		<-ctx.Done()
		return nil
	}
	key := keys.PromoteKey(m.Self().Name)
	for ctx.Err() == nil {
		c := m.st.Client()
		resp, err := c.Get(ctx, key)
		if err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		if len(resp.Kvs) == 0 {
			wctx, cancel := context.WithCancel(ctx)
			for wr := range c.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
				if len(wr.Events) > 0 || wr.Err() != nil {
					break
				}
			}
			cancel()
			continue
		}
		var jr wire.JoinResponse
		if err := json.Unmarshal(resp.Kvs[0].Value, &jr); err != nil {
			return fmt.Errorf("decode promotion: %w", err)
		}
		return m.becomeVoter(ctx, jr)
	}
	return nil
}

func (m *Manager) becomeVoter(ctx context.Context, jr wire.JoinResponse) error {
	m.promoting.Store(true)
	defer m.promoting.Store(false)
	name := m.Self().Name
	m.log.Info("autopilot picked this node as a voter; starting store member", "initial_cluster", jr.InitialCluster)
	mem, err := m.opts.StartMember(ctx, jr.InitialCluster)
	if err != nil {
		return fmt.Errorf("start store member for promotion: %w", err)
	}
	if err := PromoteSelf(ctx, m.st.Client(), jr.MemberID); err != nil {
		mem.Close()
		return err
	}
	m.st.UseMember(mem)
	m.setRole(RoleVoter, jr.MemberID)
	if m.opts.OnRoleChange != nil {
		if err := m.opts.OnRoleChange(RoleVoter); err != nil {
			return err
		}
	}
	for ctx.Err() == nil {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := m.putSelf(wctx)
		if err == nil {
			_, err = m.st.Client().Delete(wctx, keys.PromoteKey(name))
		}
		cancel()
		if err == nil {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	m.event(ctx, wire.EventPromoted, name, "%s promoted to store voter", name)
	return nil
}

// Leave takes this node out of the cluster cleanly: a voter hands over
// leadership if it holds it and leaves store membership; every node deletes
// its record. It refuses when leaving would lose quorum.
func (m *Manager) Leave(ctx context.Context) error {
	self := m.Self()
	mem := m.st.Member()
	if mem != nil {
		return m.leaveVoter(ctx, self, mem)
	}
	m.event(ctx, wire.EventLeft, self.Name, "%s leaves the cluster", self.Name)
	c := m.st.Client()
	if _, err := c.Delete(ctx, keys.NodeKey(self.Name)); err != nil {
		return err
	}
	if id := m.leaseID.Load(); id != 0 {
		_, _ = c.Revoke(ctx, clientv3.LeaseID(id))
	}
	return nil
}

// leaveVoter takes a voter out of the store. It works through a client of
// the other voters, and stops its own member before removing it: etcd can
// panic answering a status request between a member's removal and its stop.
func (m *Manager) leaveVoter(ctx context.Context, self NodeRecord, mem *store.Member) error {
	ml, err := m.st.Client().MemberList(ctx)
	if err != nil {
		return err
	}
	var others []string
	for _, o := range ml.Members {
		if o.ID != mem.ID() && !o.IsLearner {
			others = append(others, o.ClientURLs...)
		}
	}
	if len(others) == 0 {
		return fmt.Errorf("%w: this is the last store voter; removing it would destroy the cluster's data", ErrConflict)
	}
	remote, err := clientv3.New(clientv3.Config{Endpoints: others, DialTimeout: 2 * time.Second, Logger: store.ZapLogger(m.log, zapcore.ErrorLevel)})
	if err != nil {
		return err
	}
	defer remote.Close()
	return lockedWith(ctx, remote, func(c *clientv3.Client) error {
		ml, err := c.MemberList(ctx)
		if err != nil {
			return err
		}
		_, alive, err := readNodes(ctx, c)
		if err != nil {
			return err
		}
		if err := checkQuorumAfterRemoval(ml.Members, alive, mem.ID()); err != nil {
			return err
		}
		if mem.IsLeader() {
			for _, o := range ml.Members {
				if o.ID != mem.ID() && !o.IsLearner && alive[o.Name] {
					if err := mem.Etcd.Server.MoveLeader(ctx, mem.ID(), o.ID); err != nil {
						return fmt.Errorf("hand over store leadership to %s: %w", o.Name, err)
					}
					m.log.Info("handed store leadership over", "to", o.Name)
					break
				}
			}
		}
		m.event(ctx, wire.EventLeft, self.Name, "%s leaves the cluster (store voter removed)", self.Name)
		if _, err := c.Delete(ctx, keys.NodeKey(self.Name)); err != nil {
			return err
		}
		mem.Close()
		if _, err := c.MemberRemove(ctx, mem.ID()); err != nil {
			return fmt.Errorf("remove store member (this node's member is already stopped; finish with 'tandem node remove %s' on another node): %w", self.Name, err)
		}
		return nil
	})
}

// RemoveNode removes a dead node: its store membership, record and liveness.
func (m *Manager) RemoveNode(ctx context.Context, name string) error {
	return m.withMembershipLock(ctx, func(c *clientv3.Client) error {
		recs, alive, err := readNodes(ctx, c)
		if err != nil {
			return err
		}
		if alive[name] {
			return fmt.Errorf("%w: node %s is alive; run 'tandem leave' on it instead, or stop it first", ErrConflict, name)
		}
		rec, known := recs[name]
		ml, err := c.MemberList(ctx)
		if err != nil {
			return err
		}
		var memberID uint64
		for _, mem := range ml.Members {
			if mem.Name == name || (rec.PeerURL != "" && contains(mem.PeerURLs, rec.PeerURL)) {
				memberID = mem.ID
			}
		}
		if !known && memberID == 0 {
			return fmt.Errorf("%w: no node named %s", store.ErrNotFound, name)
		}
		if memberID != 0 {
			if err := checkQuorumAfterRemoval(ml.Members, alive, memberID); err != nil {
				return err
			}
			if _, err := c.MemberRemove(ctx, memberID); err != nil {
				return fmt.Errorf("remove store member: %w", err)
			}
		}
		if _, err := c.Txn(ctx).Then(
			clientv3.OpDelete(keys.NodeKey(name)),
			clientv3.OpDelete(keys.AliveKey(name)),
			clientv3.OpDelete(keys.PromoteKey(name)),
		).Commit(); err != nil {
			return err
		}
		m.event(ctx, wire.EventRemoved, name, "%s removed by an operator", name)
		return nil
	})
}

// checkQuorumAfterRemoval refuses a removal that would leave the remaining
// voters without a live majority.
func checkQuorumAfterRemoval(members []*etcdserverpb.Member, alive map[string]bool, id uint64) error {
	voters, live := 0, 0
	for _, mem := range members {
		if mem.IsLearner || mem.ID == id {
			continue
		}
		voters++
		if alive[mem.Name] {
			live++
		}
	}
	if voters == 0 {
		return fmt.Errorf("%w: this is the last store voter; removing it would destroy the cluster's data", ErrConflict)
	}
	if need := voters/2 + 1; live < need {
		return fmt.Errorf("%w: after this removal %d of %d voters would be alive and %d are needed for quorum; bring a voter back or let autopilot replace dead ones first", ErrConflict, live, voters, need)
	}
	return nil
}

// IsConflict reports whether err is a conflict with cluster state.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }
