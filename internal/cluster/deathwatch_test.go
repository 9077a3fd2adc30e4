package cluster

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"
)

func TestWatchTargets(t *testing.T) {
	for _, tc := range []struct {
		alive []string
		self  string
		want  []string
	}{
		{[]string{"n1", "n2", "n3"}, "n1", []string{"n2", "n3"}},
		{[]string{"n3", "n1", "n2"}, "n3", []string{"n1", "n2"}},
		{[]string{"a", "b", "c", "d", "e"}, "d", []string{"e", "a"}},
		{[]string{"a", "b", "c", "d", "e"}, "e", []string{"a", "b"}},
		{[]string{"a", "c", "e", "g"}, "d", []string{"e", "g"}}, // self not alive: the next ones after its name
		{[]string{"n1", "n2"}, "n1", []string{"n2"}},
		{[]string{"n1"}, "n1", []string{}},
		{nil, "n1", []string{}},
	} {
		got := watchTargets(tc.alive, tc.self, 2)
		if !slices.Equal(got, tc.want) {
			t.Errorf("watchTargets(%v, %s) = %v, want %v", tc.alive, tc.self, got, tc.want)
		}
	}
	// Every node is watched by exactly k others when all are alive.
	alive := []string{"a", "b", "c", "d", "e", "f", "g"}
	watchers := map[string]int{}
	for _, self := range alive {
		for _, n := range watchTargets(alive, self, 2) {
			watchers[n]++
		}
	}
	for _, n := range alive {
		if watchers[n] != 2 {
			t.Errorf("%s is watched by %d nodes, want 2", n, watchers[n])
		}
	}
}

func TestDeathWatchDecisions(t *testing.T) {
	const (
		a = probeAnswered
		r = probeRefused
		s = probeSilent
		u = probeUnknown
	)
	type probe struct {
		lease  int64
		result probeResult
		revoke bool
	}
	for _, tc := range []struct {
		name   string
		probes []probe
	}{
		{"two refusals under one lease after an answer revoke it", []probe{
			{7, a, false}, {7, r, false}, {7, r, true}}},
		{"six silent probes under one lease after an answer revoke it", []probe{
			{7, a, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, true}}},
		{"a refusal and three silent probes add up", []probe{
			{7, a, false}, {7, s, false}, {7, r, false}, {7, s, false}, {7, s, true}}},
		{"an answer clears the evidence", []probe{
			{7, a, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false},
			{7, a, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false}, {7, s, false}}},
		{"an unknown result is no evidence either way", []probe{
			{7, a, false}, {7, r, false}, {7, u, false}, {7, r, true}}},
		{"a node never seen answering is left to its lease", []probe{
			{7, r, false}, {7, r, false}, {7, r, false}}},
		{"one refusal between answers does nothing", []probe{
			{7, a, false}, {7, r, false}, {7, a, false}, {7, r, false}}},
		{"a new lease between refusals (a restart) does nothing", []probe{
			{7, a, false}, {7, r, false}, {8, r, false}, {8, a, false}}},
		{"a new lease while refusing (the other watcher revoked, the node took a new one at once): not revoked until it answers", []probe{
			{7, a, false}, {7, r, false}, {8, r, false}, {8, r, false}, {8, r, false},
			{8, a, false}, {8, r, false}, {8, r, true}}},
		{"revoked once: a still refusing node with a new lease is not revoked again until it answers", []probe{
			{7, a, false}, {7, r, false}, {7, r, true},
			{8, r, false}, {8, r, false}, {8, s, false},
			{8, a, false}, {8, r, false}, {8, r, true}}},
		{"no lease, nothing to revoke", []probe{
			{0, a, false}, {0, r, false}, {0, r, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDeathWatch()
			for i, p := range tc.probes {
				if got := w.observe("n2", p.lease, p.result); got != p.revoke {
					t.Fatalf("probe %d (lease %d, %s): revoke = %v, want %v", i, p.lease, p.result, got, p.revoke)
				}
			}
		})
	}

	t.Run("a revocation that failed is decided again on the next probe without an answer", func(t *testing.T) {
		w := newDeathWatch()
		w.observe("n2", 7, a)
		w.observe("n2", 7, r)
		if !w.observe("n2", 7, r) {
			t.Fatal("no revoke")
		}
		w.retry("n2", 7)
		if !w.observe("n2", 7, s) {
			t.Fatal("no revoke after retry")
		}
	})
	t.Run("a node that leaves the targets while answering stays armed", func(t *testing.T) {
		w := newDeathWatch()
		w.observe("n2", 7, a)
		w.forget([]string{"n3"})
		if w.observe("n2", 7, r) {
			t.Fatal("revoked on one refusal")
		}
		if !w.observe("n2", 7, r) {
			t.Fatal("not armed after forget")
		}
	})
	t.Run("a node that leaves the targets while refusing (revoked by the other watcher) is disarmed", func(t *testing.T) {
		w := newDeathWatch()
		w.observe("n2", 7, a)
		w.observe("n2", 7, r)
		w.forget([]string{"n3"}) // n2's lease 7 is gone
		for i := range 3 {
			if w.observe("n2", 8, r) {
				t.Fatalf("refusal %d under its new lease revoked it again", i)
			}
		}
		w.observe("n2", 8, a)
		w.observe("n2", 8, r)
		if !w.observe("n2", 8, r) {
			t.Fatal("not armed again after it answered")
		}
	})
}

func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx := context.Background()
	if got := probe(ctx, addr, time.Second); got != probeAnswered {
		t.Fatalf("a listening port (never accepting, like a frozen process): %s", got)
	}
	ln.Close()
	if got := probe(ctx, addr, time.Second); got != probeRefused {
		t.Fatalf("a closed port: %s", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got := probe(cctx, addr, time.Second); got != probeUnknown {
		t.Fatalf("a cancelled probe: %s", got)
	}
}
