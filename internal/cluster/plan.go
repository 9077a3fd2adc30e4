package cluster

import (
	"fmt"
	"sort"
	"time"
)

// This file is autopilot's decision logic: a pure function of the cluster's
// membership, node liveness and the time, returning at most one action. The
// loop in autopilot.go gathers the state and carries the action out.
//
// Rule: never lower the number of failures the cluster survives while it
// heals. A dead voter is removed only after its replacement has been
// promoted (add before remove), and only one membership change runs at a time.

// Member is a store member as autopilot sees it.
type Member struct {
	ID      uint64
	Name    string // empty until an added learner has started
	PeerURL string
	Learner bool
}

// NodeState is a node's liveness as autopilot sees it.
type NodeState struct {
	Name      string
	Role      string
	PeerURL   string
	Alive     bool
	DownSince time.Time // when it was first seen dead; zero while alive
}

// PlanInput is everything Plan decides on.
type PlanInput struct {
	Now              time.Time
	Target           int           // target voter count
	DeadVoterTimeout time.Duration // a voter dead this long is replaced
	Members          []Member
	Nodes            []NodeState
	// MemberSeen is when the autopilot holder first saw each member (by
	// ID). A member with no node record (a learner whose node is still
	// starting, or a ghost) counts as dead only from then on.
	MemberSeen map[uint64]time.Time
}

// ActionKind says what autopilot will do.
type ActionKind string

const (
	// AddLearner adds Node as a store learner; it promotes itself once
	// caught up. Replaces names the dead voter it will stand in for, if any.
	AddLearner ActionKind = "add-learner"
	// RemoveMember removes the store member MemberID (Node's).
	RemoveMember ActionKind = "remove-member"
)

// Action is one step of healing.
type Action struct {
	Kind     ActionKind
	Node     string
	PeerURL  string
	MemberID uint64
	Replaces string
	Reason   string
}

func (a Action) String() string {
	return fmt.Sprintf("%s %s: %s", a.Kind, a.Node, a.Reason)
}

// Plan returns the next healing action, or nil when there is nothing to do
// (or nothing that can be done safely). The second result explains a
// decision not to act when one would be wanted, for the log.
func Plan(in PlanInput) (*Action, string) {
	nodes := map[string]NodeState{}
	byPeer := map[string]NodeState{}
	for _, n := range in.Nodes {
		nodes[n.Name] = n
		if n.PeerURL != "" {
			byPeer[n.PeerURL] = n
		}
	}
	nodeOf := func(m Member) (NodeState, bool) {
		if n, ok := nodes[m.Name]; ok && m.Name != "" {
			return n, true
		}
		n, ok := byPeer[m.PeerURL]
		return n, ok
	}
	deadFor := func(m Member) time.Duration {
		n, ok := nodeOf(m)
		if !ok {
			// No record: its node may be starting; count from first sight.
			if seen, ok := in.MemberSeen[m.ID]; ok {
				return in.Now.Sub(seen)
			}
			return 0
		}
		if n.Alive {
			return 0
		}
		return in.Now.Sub(n.DownSince)
	}

	var voters, learners []Member
	inStore := map[string]bool{}
	for _, m := range in.Members {
		if n, ok := nodeOf(m); ok {
			inStore[n.Name] = true
		}
		if m.Learner {
			learners = append(learners, m)
		} else {
			voters = append(voters, m)
		}
	}
	sort.Slice(voters, func(i, j int) bool { return voters[i].Name < voters[j].Name })

	// A learner whose node died before it caught up holds a slot forever.
	for _, l := range learners {
		if deadFor(l) >= in.DeadVoterTimeout {
			n, _ := nodeOf(l)
			return &Action{Kind: RemoveMember, Node: n.Name, MemberID: l.ID, PeerURL: l.PeerURL,
				Reason: fmt.Sprintf("learner has been dead for %s and never caught up", in.DeadVoterTimeout)}, ""
		}
	}
	if len(learners) > 0 {
		return nil, "waiting for a learner to catch up and be promoted"
	}

	var deadLong []Member
	for _, v := range voters {
		if deadFor(v) >= in.DeadVoterTimeout {
			deadLong = append(deadLong, v)
		}
	}
	// Replacement promoted: now there are more voters than the target, so
	// removing a dead one does not lower fault tolerance.
	if len(voters) > in.Target && len(deadLong) > 0 {
		d := deadLong[0]
		n, _ := nodeOf(d)
		name := n.Name
		if name == "" {
			name = d.Name
		}
		return &Action{Kind: RemoveMember, Node: name, MemberID: d.ID, PeerURL: d.PeerURL,
			Reason: fmt.Sprintf("voter dead for over %s and %d voters remain without it", in.DeadVoterTimeout, len(voters)-1)}, ""
	}

	if len(voters)-len(deadLong) >= in.Target {
		return nil, ""
	}
	// Need a voter: pick a live client node that is not in the store yet.
	var candidates []string
	for _, n := range in.Nodes {
		if n.Alive && n.Role == RoleClient && n.PeerURL != "" && !inStore[n.Name] {
			candidates = append(candidates, n.Name)
		}
	}
	sort.Strings(candidates)
	replaces := ""
	if len(deadLong) > 0 {
		replaces = deadLong[0].Name
	}
	if len(candidates) == 0 {
		if replaces != "" {
			return nil, fmt.Sprintf("voter %s is dead but no live client node can replace it; add a node with 'tandem agent --join'", replaces)
		}
		return nil, fmt.Sprintf("%d of %d target voters; no live client node to add", len(voters), in.Target)
	}
	c := nodes[candidates[0]]
	reason := fmt.Sprintf("%d voters, target %d", len(voters)-len(deadLong), in.Target)
	if replaces != "" {
		reason = fmt.Sprintf("replacing voter %s, dead for over %s", replaces, in.DeadVoterTimeout)
	}
	return &Action{Kind: AddLearner, Node: c.Name, PeerURL: c.PeerURL, Replaces: replaces, Reason: reason}, ""
}
