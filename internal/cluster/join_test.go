package cluster

import (
	"testing"
	"time"
)

func TestDecideAdmit(t *testing.T) {
	const me, url = "n4", "http://10.0.0.4:7401"
	voter := func(id uint64, name string) Member {
		return Member{ID: id, Name: name, PeerURL: "http://" + name + ":7401"}
	}
	tests := []struct {
		name       string
		members    []Member
		want       admitKind
		wantStale  bool
		wantErr    bool
		wantMember uint64
	}{
		{name: "below target, no learner", members: []Member{voter(1, "n1")}, want: admitLearner},
		{name: "at target", members: []Member{voter(1, "n1"), voter(2, "n2"), voter(3, "n3")}, want: admitClient},
		{name: "another learner joining", members: []Member{voter(1, "n1"), {ID: 2, PeerURL: "http://n2:7401", Learner: true}}, want: admitClient},
		{name: "its unstarted learner", members: []Member{voter(1, "n1"), {ID: 9, PeerURL: url, Learner: true}}, want: admitExisting, wantMember: 9},
		{name: "its started learner is stale", members: []Member{voter(1, "n1"), {ID: 9, Name: me, PeerURL: url, Learner: true}}, want: admitLearner, wantStale: true},
		{name: "stale learner at target", members: []Member{voter(1, "n1"), voter(2, "n2"), voter(3, "n3"), {ID: 9, Name: me, PeerURL: url, Learner: true}}, want: admitClient, wantStale: true},
		{name: "its voter without data", members: []Member{voter(1, "n1"), {ID: 9, Name: me, PeerURL: url}}, wantErr: true},
		{name: "peer URL of another member", members: []Member{voter(1, "n1"), {ID: 9, Name: "n9", PeerURL: url}}, wantErr: true},
		{name: "name of another member", members: []Member{voter(1, "n1"), voter(4, me)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := decideAdmit(tt.members, 3, me, url)
			if tt.wantErr {
				if err == nil || !IsConflict(err) {
					t.Fatalf("want a conflict, got %+v, %v", d, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Kind != tt.want || (d.Stale != nil) != tt.wantStale || d.Member.ID != tt.wantMember {
				t.Fatalf("got %+v", d)
			}
		})
	}
}

// A node that died after the holder's last look must not count as dead
// since the zero time when autopilot re-plans under the lock.
func TestPlanInputNewlyDead(t *testing.T) {
	now := time.Unix(1000, 0)
	recs := map[string]NodeRecord{"n1": {Name: "n1", Role: RoleVoter}, "n2": {Name: "n2", Role: RoleVoter}}
	in := planInput(now, 3, time.Second, nil, recs, map[string]bool{"n1": true}, map[string]time.Time{}, map[uint64]time.Time{})
	for _, n := range in.Nodes {
		if n.Name == "n2" && !n.DownSince.Equal(now) {
			t.Fatalf("n2 down since %v, want %v", n.DownSince, now)
		}
		if n.Name == "n1" && !n.DownSince.IsZero() {
			t.Fatalf("n1 alive but down since %v", n.DownSince)
		}
	}
}
