package api

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/tandemhq/tandem/internal/cluster"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestSnapshotRows checks what members say is alive: with a quorum the
// alive keys decide; in a stale snapshot only what the answering node
// reached itself counts, and every row says how it knows.
func TestSnapshotRows(t *testing.T) {
	seen := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	member := func(id uint64, name string, learner bool) *etcdserverpb.Member {
		return &etcdserverpb.Member{ID: id, Name: name, IsLearner: learner,
			PeerURLs: []string{"http://" + name + ":7401"}, ClientURLs: []string{"http://" + name + ":7402"}}
	}
	recs := map[string]cluster.NodeRecord{}
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		recs[n] = cluster.NodeRecord{Name: n, PeerURL: "http://" + n + ":7401", StoreURL: "http://" + n + ":7402", LastSeen: seen}
	}
	members := []*etcdserverpb.Member{member(1, "n1", false), member(2, "n2", false), member(3, "n3", false), member(5, "n5", true),
		member(9, "", false)} // a store member whose node never started
	alive := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true}

	contact := seen.Add(time.Minute)
	type want struct {
		alive  bool
		reach  string
		leader bool
		seen   time.Time
	}
	tests := []struct {
		name string
		snap snapshot
		want map[string]want
	}{
		{"with a quorum", snapshot{members: members, recs: recs, alive: alive, leader: 2}, map[string]want{
			"n1": {alive: true}, "n2": {alive: true, leader: true}, "n3": {alive: true}, "n4": {alive: true},
			"n5": {seen: seen}, "(unstarted 9)": {},
		}},
		{"stale", snapshot{stale: true, members: members, recs: recs, alive: map[string]bool{}, self: "n1",
			aliveInCopy: map[string]bool{"n1": true, "n2": true, "n3": true}, lastContact: contact,
			reached: map[string]bool{"http://n1:7402": true, "http://n2:7402": true}}, map[string]want{
			"n1": {alive: true, reach: wire.ReachSelf}, "n2": {alive: true, reach: wire.ReachReachable},
			"n3": {reach: wire.ReachUnreachable, seen: contact}, "n4": {reach: wire.ReachUnknown, seen: seen},
			"n5": {reach: wire.ReachUnknown, seen: seen}, "(unstarted 9)": {reach: wire.ReachUnreachable},
		}},
		{"stale on a client node", snapshot{stale: true, members: members, recs: recs, alive: map[string]bool{}, self: "n4",
			reached: map[string]bool{"http://n3:7402": true}}, map[string]want{
			"n1": {reach: wire.ReachUnreachable, seen: seen}, "n2": {reach: wire.ReachUnreachable, seen: seen},
			"n3": {alive: true, reach: wire.ReachReachable}, "n4": {alive: true, reach: wire.ReachSelf},
			"n5": {reach: wire.ReachUnknown, seen: seen}, "(unstarted 9)": {reach: wire.ReachUnreachable},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows := tt.snap.rows()
			if len(rows) != len(tt.want) {
				t.Fatalf("%d rows, want %d: %+v", len(rows), len(tt.want), rows)
			}
			for _, r := range rows {
				w, ok := tt.want[r.Name]
				if !ok {
					t.Errorf("unexpected row %q", r.Name)
					continue
				}
				got := want{alive: r.Alive, reach: r.Reach, leader: r.Leader, seen: r.LastSeen}
				if got != w {
					t.Errorf("%s: got %+v, want %+v", r.Name, got, w)
				}
			}
		})
	}
}
