package system

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// hangGuard bounds each status or members call on a cut-off node. It only
// catches a call that waits out a quorum timeout (the request timeout is
// 3 s); how fast the answer comes is measured, not asserted (the test logs
// it, docs/ROBUSTNESS.md reports it).
const hangGuard = 1500 * time.Millisecond

// TestCutOffNodeAnswersStatusStale cuts one voter off from the other two,
// by a network partition (network namespaces) and by freezing the other
// two with SIGSTOP. The cut-off node answers GET /v1/status and
// /v1/members from its own copy at once, marked stale, with the figures it
// last had (never below what a stale read on it reports) and counts only
// what it can know is alive; once healed it answers fresh again.
func TestCutOffNodeAnswersStatusStale(t *testing.T) {
	t.Run("partition", func(t *testing.T) {
		clustertest.NeedNetns(t)
		c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes, Netns: true})
		cliEnv(t, c)
		lone := c.Node("n1")
		checkStaleStatus(t, c, lone, func() { c.Isolate(lone) }, c.Heal)
	})
	t.Run("sigstop", func(t *testing.T) {
		c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
		cliEnv(t, c)
		lone := c.Node("n1")
		others := c.Nodes[1:]
		cont := func() {
			for _, nd := range others {
				nd.Cont()
			}
		}
		defer cont()
		checkStaleStatus(t, c, lone, func() {
			for _, nd := range others {
				nd.Stop()
			}
		}, cont)
	})
}

func checkStaleStatus(t *testing.T, c *clustertest.Cluster, lone *clustertest.Node, cut, heal func()) {
	cl := lone.Client()
	for i := range 5 {
		if _, err := cl.Put(ctxT(t, 5*time.Second), fmt.Sprintf("before/cut/%d", i), []byte("v"), client.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	fresh, _ := timedStatus(t, cl)
	if fresh.Stale || fresh.Leader == "" {
		t.Fatalf("before the cut: %+v", fresh)
	}
	cut()
	cutAt := time.Now()

	// The first answers may still come with a quorum (a read confirmed
	// just before the cut); every answer must come within the hang guard.
	var st *wire.Status
	c.Eventually(20*time.Second, lone.Name+" answers status stale", func() error {
		st, _ = timedStatus(t, cl)
		if !st.Stale {
			return fmt.Errorf("status not stale yet: %+v", st)
		}
		return nil
	})
	t.Logf("status stale %.2fs after the cut", time.Since(cutAt).Seconds())

	// A stale read on the node, then status: its figures are at least the
	// read's revision.
	got, err := cl.Get(ctxT(t, 5*time.Second), "before/cut/4", client.ReadOptions{Stale: true})
	if err != nil {
		t.Fatalf("stale read on %s: %v", lone.Name, err)
	}
	var took []time.Duration
	for range 5 {
		var d time.Duration
		st, d = timedStatus(t, cl)
		took = append(took, d)
	}
	t.Logf("status on the cut-off node took %v", took)
	if !st.Stale {
		t.Fatalf("status fresh while cut off: %+v", st)
	}
	if st.TargetVoters != 3 || st.Voters != 3 || st.Term == 0 || st.AppliedIndex == 0 || st.Revision == 0 || st.StoreSizeBytes == 0 {
		t.Errorf("stale status lacks the figures it had: %+v", st)
	}
	if st.Revision < got.Revision {
		t.Errorf("stale status revision %d is below the stale read's %d", st.Revision, got.Revision)
	}
	if st.LastContactMs == nil || *st.LastContactMs <= 0 {
		t.Errorf("stale status does not say how stale it is (last_contact_ms %v)", st.LastContactMs)
	}
	if st.Leader != "" || st.FaultTolerance != -1 || st.VotersAlive != 1 || st.NodesAlive != 1 {
		t.Errorf("cut-off node claims what it cannot know: leader %q, fault tolerance %d, voters alive %d, nodes alive %d",
			st.Leader, st.FaultTolerance, st.VotersAlive, st.NodesAlive)
	}

	took = took[:0]
	var ms *wire.Members
	for range 3 {
		var d time.Duration
		ms, d = timedMembers(t, cl)
		took = append(took, d)
	}
	t.Logf("members on the cut-off node took %v", took)
	if !ms.Stale || ms.LastContactMs == nil {
		t.Errorf("members while cut off: stale %v, last_contact_ms %v", ms.Stale, ms.LastContactMs)
	}
	for _, m := range ms.Members {
		wantAlive, wantReach := m.Name == lone.Name, wire.ReachUnreachable
		if wantAlive {
			wantReach = wire.ReachSelf
		}
		if m.Alive != wantAlive || m.Reach != wantReach || m.Leader {
			t.Errorf("member %s on the cut-off node: alive %v, reach %q, leader %v; want alive %v, reach %q, no leader",
				m.Name, m.Alive, m.Reach, m.Leader, wantAlive, wantReach)
		}
	}

	// The CLI says so, and how old the copy is.
	statusOut := mustTandem(t, "status", "--addr", lone.API)
	membersOut := mustTandem(t, "members", "--addr", lone.API)
	t.Logf("on the cut-off node, tandem status:\n%s\ntandem members:\n%s", statusOut, membersOut)
	for _, want := range []string{"STALE:", "store leader last heard", "(none known to " + lone.Name + ")", "1 reached of 3"} {
		if !strings.Contains(statusOut, want) {
			t.Errorf("tandem status on the cut-off node does not say %q", want)
		}
	}
	for _, want := range []string{"STALE:", "alive (answering)", "unreachable"} {
		if !strings.Contains(membersOut, want) {
			t.Errorf("tandem members on the cut-off node does not say %q", want)
		}
	}

	heal()
	c.Eventually(30*time.Second, lone.Name+" answers status fresh after the heal", func() error {
		st, _ := timedStatus(t, cl)
		if st.Stale || st.Leader == "" || st.NodesAlive != 3 || st.LastContactMs != nil {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	c.Eventually(30*time.Second, lone.Name+" answers members fresh after the heal", func() error {
		ms, _ := timedMembers(t, cl)
		if ms.Stale {
			return fmt.Errorf("members still stale")
		}
		for _, m := range ms.Members {
			if !m.Alive || m.Reach != "" {
				return fmt.Errorf("member %s: alive %v, reach %q", m.Name, m.Alive, m.Reach)
			}
		}
		return nil
	})
}

// timedStatus asks cl for the status within the hang guard.
func timedStatus(t *testing.T, cl *client.Client) (*wire.Status, time.Duration) {
	t.Helper()
	return timed(t, "status", cl.Status)
}

// timedMembers asks cl for the members within the hang guard.
func timedMembers(t *testing.T, cl *client.Client) (*wire.Members, time.Duration) {
	t.Helper()
	return timed(t, "members", cl.Members)
}

// timed calls f within the hang guard and says how long it took.
func timed[T any](t *testing.T, what string, f func(context.Context) (T, error)) (T, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	start := time.Now()
	v, err := f(ctx)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s after %s (hang guard %s): %v", what, took.Round(time.Millisecond), hangGuard, err)
	}
	return v, took.Round(time.Millisecond)
}
