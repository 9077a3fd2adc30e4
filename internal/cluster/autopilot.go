package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/wire"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// autopilotInterval is how often the holder re-reads membership and liveness.
const autopilotInterval = 500 * time.Millisecond

// RunAutopilot campaigns for the autopilot election and, while holding it,
// keeps the voter count at target (see Plan) and records node up/down
// events. Any node can hold it; when the holder dies its session lease
// expires and another node's campaign wins.
func (m *Manager) RunAutopilot(ctx context.Context) error {
	ttl := max(int(m.opts.LeaseTTL/time.Second), 1)
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(m.st.Client(), concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		el := concurrency.NewElection(sess, keys.AutopilotElection)
		if err := el.Campaign(ctx, m.Self().Name); err != nil || !HoldsElection(ctx, el, sess) {
			sess.Close()
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		m.event(ctx, wire.EventAutopilot, m.Self().Name, "%s now runs autopilot", m.Self().Name)
		m.lead(ctx, sess)
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = el.Resign(rctx)
		cancel()
		sess.Close()
	}
	return nil
}

// HoldsElection reports whether this node's key, on its live session,
// leads the election. Campaign also returns when the session's lease ran
// out while it waited (the keys before it were deleted, its own with
// them); the node must not then act as the holder. Every singleton task
// (autopilot, the scheduler) checks it after Campaign.
func HoldsElection(ctx context.Context, el *concurrency.Election, sess *concurrency.Session) bool {
	select {
	case <-sess.Done():
		return false
	default:
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := el.Leader(lctx)
	return err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) == sess.Lease()
}

// AutopilotHolder returns the name of the node running autopilot.
func AutopilotHolder(ctx context.Context, c *clientv3.Client) (string, error) {
	resp, err := c.Get(ctx, keys.AutopilotElection+"/", append(clientv3.WithFirstCreate(), clientv3.WithPrefix())...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

func (m *Manager) lead(ctx context.Context, sess *concurrency.Session) {
	downSince := map[string]time.Time{}
	memberSeen := map[uint64]time.Time{}
	var prevAlive map[string]bool
	lastWhy := ""
	lastTrim := time.Time{}
	t := time.NewTicker(autopilotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			m.log.Warn("autopilot: lost the election session; campaigning again")
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		why, err := m.step(sctx, downSince, memberSeen, &prevAlive)
		if err == nil && time.Since(lastTrim) > time.Minute {
			if err := TrimEvents(sctx, m.st.Client()); err == nil {
				lastTrim = time.Now()
			}
		}
		cancel()
		if err != nil {
			m.log.Debug("autopilot step", "err", err)
			continue
		}
		if why != lastWhy && why != "" {
			m.log.Info("autopilot: not acting", "why", why)
		}
		lastWhy = why
	}
}

func (m *Manager) step(ctx context.Context, downSince map[string]time.Time, memberSeen map[uint64]time.Time, prevAlive *map[string]bool) (string, error) {
	c := m.st.Client()
	recs, alive, err := readNodes(ctx, c)
	if err != nil {
		return "", err
	}
	now := time.Now()
	first := *prevAlive == nil
	for name, rec := range recs {
		if alive[name] {
			delete(downSince, name)
			if !first && !(*prevAlive)[name] {
				m.event(ctx, wire.EventNodeUp, name, "%s is up (%s)", name, rec.Role)
			}
			continue
		}
		if _, ok := downSince[name]; !ok {
			downSince[name] = now
			if first && rec.LastSeen.After(rec.Started) {
				downSince[name] = rec.LastSeen // marked down by an earlier holder
			}
		}
		// A node down since before this holder took over (often the old
		// holder itself) is reported once, if no holder marked it down
		// since it last started.
		wasUp := (*prevAlive)[name] || (first && rec.LastSeen.Before(rec.Started))
		if wasUp {
			m.event(ctx, wire.EventNodeDown, name, "%s is down (its liveness lease ended)", name)
			rec.LastSeen = now.UTC()
			b, _ := json.Marshal(rec)
			if err := updateRecord(ctx, c, name, b); err != nil {
				return "", err
			}
		}
	}
	*prevAlive = alive

	if m.Self().External {
		return "", nil
	}
	a, why, _, err := m.plan(ctx, c, now, downSince, memberSeen)
	if err != nil || a == nil {
		return why, err
	}
	// That plan was read before taking the membership lock, and a join (or
	// an operator's removal) may have changed membership since: re-read and
	// re-plan under the lock, and act only on that plan, so that a join
	// racing this step cannot leave one voter too many.
	err = m.withMembershipLock(ctx, func(c *clientv3.Client) error {
		var recs map[string]NodeRecord
		a, why, recs, err = m.plan(ctx, c, time.Now(), downSince, memberSeen)
		if err != nil || a == nil {
			return err
		}
		m.log.Info("autopilot: acting", "action", a.Kind, "node", a.Node, "reason", a.Reason)
		return m.execute(ctx, c, *a, recs)
	})
	if a != nil {
		why = ""
	}
	return why, err
}

// plan reads membership, node records and liveness through c and returns
// Plan's action (nil for none), why it does not act, and the records read.
// memberSeen gains the members seen for the first time.
func (m *Manager) plan(ctx context.Context, c *clientv3.Client, now time.Time, downSince map[string]time.Time, memberSeen map[uint64]time.Time) (*Action, string, map[string]NodeRecord, error) {
	recs, alive, err := readNodes(ctx, c)
	if err != nil {
		return nil, "", nil, err
	}
	info, err := m.Info(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	ml, err := c.MemberList(ctx)
	if err != nil {
		return nil, "", nil, err
	}
	in := planInput(now, info.Voters, m.opts.DeadVoterTimeout, planMembers(ml.Members), recs, alive, downSince, memberSeen)
	a, why := Plan(in)
	return a, why, recs, nil
}

// planInput assembles Plan's input. A dead node missing from downSince
// (it died after the holder last looked) counts as dead from now.
func planInput(now time.Time, target int, deadVoterTimeout time.Duration, members []Member, recs map[string]NodeRecord, alive map[string]bool, downSince map[string]time.Time, memberSeen map[uint64]time.Time) PlanInput {
	in := PlanInput{Now: now, Target: target, DeadVoterTimeout: deadVoterTimeout, MemberSeen: memberSeen, Members: members}
	current := map[uint64]bool{}
	for _, mem := range members {
		current[mem.ID] = true
		if _, ok := memberSeen[mem.ID]; !ok {
			memberSeen[mem.ID] = now
		}
	}
	for id := range memberSeen {
		if !current[id] {
			delete(memberSeen, id)
		}
	}
	for name, rec := range recs {
		ns := NodeState{Name: name, Role: rec.Role, PeerURL: rec.PeerURL, Alive: alive[name]}
		if !ns.Alive {
			ns.DownSince = downSince[name]
			if ns.DownSince.IsZero() {
				ns.DownSince = now
			}
		}
		in.Nodes = append(in.Nodes, ns)
	}
	return in
}

func (m *Manager) execute(ctx context.Context, c *clientv3.Client, a Action, recs map[string]NodeRecord) error {
	switch a.Kind {
	case AddLearner:
		resp, err := c.MemberAddAsLearner(ctx, []string{a.PeerURL})
		if err != nil {
			return fmt.Errorf("add learner %s: %w", a.Node, err)
		}
		jr := memberResponse(resp.Members, resp.Member.ID, a.Node)
		b, _ := json.Marshal(jr)
		if _, err := c.Put(ctx, keys.PromoteKey(a.Node), string(b)); err != nil {
			return err
		}
		m.event(ctx, wire.EventLearnerAdded, a.Node, "autopilot adds %s as a store learner: %s", a.Node, a.Reason)
	case RemoveMember:
		if _, err := c.MemberRemove(ctx, a.MemberID); err != nil {
			return fmt.Errorf("remove member %s: %w", a.Node, err)
		}
		if rec, ok := recs[a.Node]; ok {
			rec.Role = RoleClient
			rec.MemberID = 0
			b, _ := json.Marshal(rec)
			if err := updateRecord(ctx, c, a.Node, b); err != nil {
				return err
			}
		}
		m.event(ctx, wire.EventVoterRemoved, a.Node, "autopilot removes store member %s: %s", a.Node, a.Reason)
	}
	return nil
}

// updateRecord rewrites a node's record only if it still exists, so a
// record an operator just removed is not brought back.
func updateRecord(ctx context.Context, c *clientv3.Client, name string, rec []byte) error {
	key := keys.NodeKey(name)
	_, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpPut(key, string(rec))).Commit()
	return err
}
