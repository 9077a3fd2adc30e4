package workload

import (
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/cluster"
)

func TestFenceStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const after = time.Second
	for _, tc := range []struct {
		name                       string
		last, fencedAt, start, now time.Time
		leaseChanged               bool
		wantFence, wantLift        bool
	}{
		{name: "renewed recently", last: at(0), start: at(0), now: at(900)},
		{name: "exactly at the threshold", last: at(0), start: at(0), now: at(1000)},
		{name: "cut off", last: at(0), start: at(0), now: at(1001), wantFence: true},
		{name: "no renewal yet, counted from start", start: at(500), now: at(1400)},
		{name: "no renewal since start", start: at(500), now: at(1600), wantFence: true},
		{name: "already fenced, still cut off", last: at(0), fencedAt: at(1100), start: at(0), now: at(5000)},
		{name: "renewal sent before the fence answered late", last: at(1050), fencedAt: at(1100), start: at(0), now: at(1200)},
		{name: "renewal sent after the fence", last: at(1150), fencedAt: at(1100), start: at(0), now: at(1200), wantLift: true},
		{name: "lease changed while renewing", last: at(900), start: at(0), now: at(1000), leaseChanged: true, wantFence: true},
		{name: "lease changed while fenced: fence again", last: at(1150), fencedAt: at(1100), start: at(0), now: at(1200), leaseChanged: true, wantFence: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fence, lift := fenceStep(tc.last, tc.fencedAt, tc.start, tc.now, after, tc.leaseChanged)
			if fence != tc.wantFence || lift != tc.wantLift {
				t.Errorf("fenceStep = fence %v, lift %v; want %v, %v", fence, lift, tc.wantFence, tc.wantLift)
			}
		})
	}
}

// TestFenceBeforeReplacement checks the arithmetic of fence.go: for every
// lease TTL, the node has killed its at_most_one copies (threshold, plus
// one tick, plus a generous budget for the kill) before the scheduler may
// place a replacement (TTL + margin past the last renewal).
func TestFenceBeforeReplacement(t *testing.T) {
	const killBudget = 300 * time.Millisecond
	for _, ttl := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, time.Minute} {
		killed := fenceAfter(ttl) + fenceTick(ttl) + killBudget
		if replaced := ttl + lossMargin; killed >= replaced {
			t.Errorf("TTL %s: the node has its copies killed %s after its last renewal, the scheduler may replace them after %s", ttl, killed, replaced)
		}
		// Renewals go every TTL/4: one late renewal must not fence.
		if fenceAfter(ttl) <= ttl/4+fenceTick(ttl) {
			t.Errorf("TTL %s: fencing after %s would kill on one late renewal", ttl, fenceAfter(ttl))
		}
	}
}

// TestLostAt: the scheduler dates a lost node's last renewal from its own
// first read of the node not alive, never from a LastSeen autopilot has
// not written yet.
func TestLostAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Scheduler{leaseTTL: 2 * time.Second}
	old := cluster.NodeRecord{LastSeen: t0.Add(-time.Hour)}
	if got := s.lostAt("n1", old, false, t0); !got.Equal(t0) {
		t.Fatalf("first read not alive: LostAt %s, want now", got)
	}
	if got := s.lostAt("n1", old, false, t0.Add(5*time.Second)); !got.Equal(t0) {
		t.Fatalf("later read: LostAt %s, want the first read", got)
	}
	later := cluster.NodeRecord{LastSeen: t0.Add(10 * time.Second)}
	if got := s.lostAt("n1", later, false, t0.Add(11*time.Second)); !got.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("autopilot saw it go down later: LostAt %s, want LastSeen", got)
	}
	s.lostAt("n1", old, true, t0.Add(12*time.Second))
	if got := s.lostAt("n1", old, false, t0.Add(20*time.Second)); !got.Equal(t0.Add(20 * time.Second)) {
		t.Fatalf("alive again, then lost: LostAt %s, want the new read", got)
	}
}
