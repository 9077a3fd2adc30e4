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
	for _, u := range []string{req.PeerURL, req.StoreURL} {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return wire.JoinResponse{}, fmt.Errorf("%w: peer_url and store_url must be http:// or https:// URLs, got %q", ErrConflict, u)
		}
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
		recs, alive, err := readNodes(ctx, c)
		if err != nil {
			return err
		}
		if err := checkScheme(ml.Members, req.PeerURL, req.StoreURL); err != nil {
			return err
		}
		if rec, ok := recs[req.Name]; ok && alive[req.Name] && rec.API != req.API {
			return fmt.Errorf("%w: node name %q is taken by a live node at %s; pick another --name", ErrConflict, req.Name, rec.API)
		}
		d, err := decideAdmit(planMembers(ml.Members), info.Voters, req.Name, req.PeerURL)
		if err != nil {
			return err
		}
		if d.Stale != nil {
			if _, err := c.MemberRemove(ctx, d.Stale.ID); err != nil {
				return fmt.Errorf("remove this node's learner of an earlier attempt: %w", err)
			}
			m.log.Info("removed the learner of an earlier join attempt", "node", req.Name, "member", fmt.Sprintf("%x", d.Stale.ID))
		}
		switch d.Kind {
		case admitExisting:
			out = memberResponse(ml.Members, d.Member.ID, req.Name)
			return nil
		case admitLearner:
			resp, err := c.MemberAddAsLearner(ctx, []string{req.PeerURL})
			if err != nil {
				return fmt.Errorf("add learner: %w", err)
			}
			out = memberResponse(resp.Members, resp.Member.ID, req.Name)
			m.event(ctx, wire.EventLearnerAdded, req.Name, "%s joins as a store learner (%d of %d voters)", req.Name, d.Voters+1, info.Voters)
			return nil
		}
		out = wire.JoinResponse{Role: RoleClient, Endpoints: voterEndpoints(ml.Members)}
		m.event(ctx, wire.EventJoined, req.Name, "%s joins as a client node (%s)", req.Name, d.Reason)
		return nil
	})
	return out, err
}

// checkScheme refuses a joiner whose peer or store URL does not use the
// scheme of the store members' peer URLs: a node without TLS cannot take
// part in a store that uses it, nor the other way round.
func checkScheme(members []*etcdserverpb.Member, peerURL, storeURL string) error {
	want := ""
	for _, mem := range members {
		if len(mem.PeerURLs) > 0 {
			want, _, _ = strings.Cut(mem.PeerURLs[0], "://")
			break
		}
	}
	if want == "" {
		return nil
	}
	for _, u := range []string{peerURL, storeURL} {
		if got, _, _ := strings.Cut(u, "://"); got != want {
			return fmt.Errorf("%w: this cluster's store uses %s:// and the joining node gave %s; a node joins a cluster with TLS only with TLS, and one without TLS only without", ErrConflict, want, u)
		}
	}
	return nil
}

// admitKind says how a joining node takes part.
type admitKind int

const (
	admitClient   admitKind = iota // as a client node
	admitLearner                   // as a new store learner
	admitExisting                  // with the unstarted learner added for it before
)

// admission is decideAdmit's answer.
type admission struct {
	Kind   admitKind
	Member Member  // its unstarted learner, for admitExisting
	Stale  *Member // its learner of an earlier attempt, to remove first
	Voters int     // voters in the store now
	Reason string  // why a client node, for the event
}

// decideAdmit decides how node name, whose store peer URL is peerURL, joins
// a store with the given members and target voter count.
//
// A learner is added only while there is no other learner and voters are
// below target: etcd starts a joining member only if the member list has
// not changed since its addition, so learners are added one at a time
// (autopilot adds the next, from the client nodes, once this one is
// promoted; Plan waits for learners the same way). A node that asks again
// gets its unstarted learner back; a learner of its that has started
// belongs to an attempt that failed or was killed (a node asks only while
// it has no store data), so it is removed and the node decided on afresh.
func decideAdmit(members []Member, target int, name, peerURL string) (admission, error) {
	var d admission
	learners := 0
	for _, mem := range members {
		if mem.PeerURL == peerURL {
			switch {
			case mem.Name != "" && mem.Name != name:
				return d, fmt.Errorf("%w: peer URL %s belongs to store member %q; give this node another --peer-port or --advertise, or remove %s with 'tandem node remove %s'", ErrConflict, peerURL, mem.Name, mem.Name, mem.Name)
			case !mem.Learner:
				return d, fmt.Errorf("%w: %s is a store voter already, but this node has no store data (was its data dir lost?); remove it with 'tandem node remove %s' on another node, then join again", ErrConflict, name, name)
			case mem.Name == "":
				return admission{Kind: admitExisting, Member: mem}, nil
			default:
				d.Stale = &mem
			}
			continue
		}
		if mem.Name == name {
			return admission{}, fmt.Errorf("%w: a store member named %q already exists at %s; if that node is gone, remove it with 'tandem node remove %s' first", ErrConflict, name, mem.PeerURL, name)
		}
		if mem.Learner {
			learners++
		} else {
			d.Voters++
		}
	}
	switch {
	case learners > 0:
		d.Kind, d.Reason = admitClient, "another node is joining as a store learner; autopilot adds voters one at a time"
	case d.Voters >= target:
		d.Kind, d.Reason = admitClient, fmt.Sprintf("%d voters is the target", target)
	default:
		d.Kind = admitLearner
	}
	return d, nil
}

// planMembers converts etcd's member list to autopilot's Member.
func planMembers(members []*etcdserverpb.Member) []Member {
	out := make([]Member, 0, len(members))
	for _, mem := range members {
		mm := Member{ID: mem.ID, Name: mem.Name, Learner: mem.IsLearner}
		if len(mem.PeerURLs) > 0 {
			mm.PeerURL = mem.PeerURLs[0]
		}
		out = append(out, mm)
	}
	return out
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
		err = m.becomeVoter(ctx, jr)
		if !errors.Is(err, ErrLearnerGone) {
			return err
		}
		// Its learner was removed before it started: drop this promotion
		// (unless autopilot has written a new one) and wait for the next.
		m.log.Warn("the store learner autopilot added for this node is gone; waiting to be picked again")
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, _ = c.Txn(dctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(key)).Commit()
		cancel()
	}
	return nil
}

func (m *Manager) becomeVoter(ctx context.Context, jr wire.JoinResponse) error {
	m.promoting.Store(true)
	defer m.promoting.Store(false)
	name := m.Self().Name
	m.log.Info("autopilot picked this node as a voter; starting store member", "member", fmt.Sprintf("%x", jr.MemberID))
	mem, err := StartLearner(ctx, m.st.Client(), m.st.TLS(), jr.MemberID, name, m.opts.StartMember, m.log)
	if errors.Is(err, ErrLearnerGone) {
		return err
	}
	if err == nil {
		if err = PromoteSelf(ctx, m.st.Client(), jr.MemberID); err != nil {
			if derr := mem.Discard(); derr != nil {
				m.log.Warn("discard the unpromoted store member", "err", derr)
			}
		}
	}
	if err != nil {
		// Leave no unstarted learner behind: autopilot may pick this node
		// or another again.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if aerr := AbandonLearner(actx, m.st.Client(), jr.MemberID); aerr != nil {
			m.log.Warn("remove this node's store learner after a failed promotion", "err", aerr)
		}
		cancel()
		if ctx.Err() != nil {
			return nil // stopping
		}
		return fmt.Errorf("start store member for promotion: %w", err)
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
	remote, err := clientv3.New(clientv3.Config{Endpoints: others, TLS: m.st.TLS(), DialTimeout: 2 * time.Second, Logger: store.ZapLogger(m.log, zapcore.ErrorLevel)})
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
