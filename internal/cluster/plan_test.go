package cluster

import (
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	timeout := 30 * time.Second
	alive := func(name, role string) NodeState {
		return NodeState{Name: name, Role: role, PeerURL: "http://" + name, Alive: true}
	}
	dead := func(name, role string, ago time.Duration) NodeState {
		return NodeState{Name: name, Role: role, PeerURL: "http://" + name, DownSince: now.Add(-ago)}
	}
	voter := func(id uint64, name string) Member { return Member{ID: id, Name: name, PeerURL: "http://" + name} }
	learner := func(id uint64, name string) Member {
		return Member{ID: id, PeerURL: "http://" + name, Learner: true}
	}
	three := []Member{voter(1, "n1"), voter(2, "n2"), voter(3, "n3")}

	tests := []struct {
		name    string
		members []Member
		nodes   []NodeState
		seen    map[uint64]time.Time
		want    *Action // compared on Kind, Node, MemberID
		wantWhy bool    // a reason for not acting is given
	}{
		{
			name:    "healthy cluster: nothing to do",
			members: three,
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n2", RoleVoter), alive("n3", RoleVoter), alive("n4", RoleClient)},
		},
		{
			name:    "voter dead shorter than the timeout: wait",
			members: three,
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, 10*time.Second), alive("n3", RoleVoter), alive("n4", RoleClient)},
		},
		{
			name:    "voter dead past the timeout: add the client node as learner first",
			members: three,
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, 31*time.Second), alive("n3", RoleVoter), alive("n4", RoleClient)},
			want:    &Action{Kind: AddLearner, Node: "n4"},
		},
		{
			name:    "dead voter and no client node: never remove, explain",
			members: three,
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, time.Minute), alive("n3", RoleVoter)},
			wantWhy: true,
		},
		{
			name:    "dead client node is no candidate",
			members: three,
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, time.Minute), alive("n3", RoleVoter), dead("n4", RoleClient, time.Second)},
			wantWhy: true,
		},
		{
			name:    "learner catching up: wait",
			members: append(append([]Member{}, three...), learner(4, "n4")),
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, time.Minute), alive("n3", RoleVoter), alive("n4", RoleClient)},
			wantWhy: true,
		},
		{
			name:    "replacement promoted: now remove the dead voter",
			members: append(append([]Member{}, three...), voter(4, "n4")),
			nodes:   []NodeState{alive("n1", RoleVoter), dead("n2", RoleVoter, time.Minute), alive("n3", RoleVoter), alive("n4", RoleVoter)},
			want:    &Action{Kind: RemoveMember, Node: "n2", MemberID: 2},
		},
		{
			name:    "learner whose node died: remove it to free the slot",
			members: append(append([]Member{}, three...), learner(4, "n4")),
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n2", RoleVoter), alive("n3", RoleVoter), dead("n4", RoleClient, time.Minute)},
			want:    &Action{Kind: RemoveMember, Node: "n4", MemberID: 4},
		},
		{
			name:    "below target after a leave: add a client node",
			members: []Member{voter(1, "n1"), voter(3, "n3")},
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n3", RoleVoter), alive("n5", RoleClient), alive("n4", RoleClient)},
			want:    &Action{Kind: AddLearner, Node: "n4"},
		},
		{
			name:    "more voters than target but all alive: leave them",
			members: append(append([]Member{}, three...), voter(4, "n4")),
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n2", RoleVoter), alive("n3", RoleVoter), alive("n4", RoleVoter)},
		},
		{
			name:    "voter with no node record, seen long ago, counts as dead",
			members: append(append([]Member{}, three...), voter(9, "ghost")),
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n2", RoleVoter), alive("n3", RoleVoter)},
			seen:    map[uint64]time.Time{9: now.Add(-time.Hour)},
			want:    &Action{Kind: RemoveMember, Node: "ghost", MemberID: 9},
		},
		{
			name:    "learner just added, its node not recorded yet: wait",
			members: append(append([]Member{}, three...), learner(4, "n4")),
			nodes:   []NodeState{alive("n1", RoleVoter), alive("n2", RoleVoter), alive("n3", RoleVoter)},
			seen:    map[uint64]time.Time{4: now.Add(-time.Second)},
			wantWhy: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := Plan(PlanInput{Now: now, Target: 3, DeadVoterTimeout: timeout, Members: tt.members, Nodes: tt.nodes, MemberSeen: tt.seen})
			switch {
			case tt.want == nil && got != nil:
				t.Fatalf("want no action, got %v", got)
			case tt.want != nil && got == nil:
				t.Fatalf("want %s %s, got none (%s)", tt.want.Kind, tt.want.Node, why)
			case tt.want != nil && (got.Kind != tt.want.Kind || got.Node != tt.want.Node || got.MemberID != tt.want.MemberID):
				t.Fatalf("want %s %s (member %d), got %s %s (member %d)", tt.want.Kind, tt.want.Node, tt.want.MemberID, got.Kind, got.Node, got.MemberID)
			}
			if tt.wantWhy && why == "" {
				t.Fatalf("want a reason for not acting")
			}
		})
	}
}

// TestPlanNeverLowersFaultTolerance walks a replacement to the end and checks
// that no step leaves fewer live voters above quorum than before it.
func TestPlanNeverLowersFaultTolerance(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	members := []Member{{ID: 1, Name: "n1", PeerURL: "p1"}, {ID: 2, Name: "n2", PeerURL: "p2"}, {ID: 3, Name: "n3", PeerURL: "p3"}}
	nodes := []NodeState{
		{Name: "n1", Role: RoleVoter, PeerURL: "p1", Alive: true},
		{Name: "n2", Role: RoleVoter, PeerURL: "p2", DownSince: now.Add(-time.Hour)},
		{Name: "n3", Role: RoleVoter, PeerURL: "p3", Alive: true},
		{Name: "n4", Role: RoleClient, PeerURL: "p4", Alive: true},
	}
	tolerance := func() int {
		aliveVoters, voters := 0, 0
		for _, m := range members {
			if m.Learner {
				continue
			}
			voters++
			for _, n := range nodes {
				if n.PeerURL == m.PeerURL && n.Alive {
					aliveVoters++
				}
			}
		}
		return max(aliveVoters-(voters/2+1), -1)
	}
	before := tolerance()
	for step := 0; step < 10; step++ {
		a, _ := Plan(PlanInput{Now: now, Target: 3, DeadVoterTimeout: 30 * time.Second, Members: members, Nodes: nodes})
		if a == nil {
			// The learner promotes itself once caught up; simulate that.
			promoted := false
			for i := range members {
				if members[i].Learner {
					members[i].Learner, members[i].Name, promoted = false, "n4", true
				}
			}
			if !promoted {
				break
			}
		} else {
			switch a.Kind {
			case AddLearner:
				members = append(members, Member{ID: 4, PeerURL: a.PeerURL, Learner: true})
			case RemoveMember:
				var keep []Member
				for _, m := range members {
					if m.ID != a.MemberID {
						keep = append(keep, m)
					}
				}
				members = keep
			}
		}
		if got := tolerance(); got < before {
			t.Fatalf("step %d (%v) lowered fault tolerance from %d to %d", step, a, before, got)
		}
	}
	if got := tolerance(); got != 1 || len(members) != 3 {
		t.Fatalf("after healing: tolerance %d with %d members, want 1 with 3", got, len(members))
	}
}
