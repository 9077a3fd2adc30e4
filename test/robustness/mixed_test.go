package robustness

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// mixedBudget is how many nodes the mixed nemesis may have faulted at once:
// two of five, so that three voters can always form a quorum.
const mixedBudget = 2

// mixedFaults returns a scenario fault that runs several faults in one run
// for about d, one after another and overlapping, in an order drawn from
// the workload seed: every 0.7–1.5 s one fault starts (kill -9, SIGSTOP or
// isolation of a node, the store leader one time in three) or one ends
// (restart, SIGCONT, heal), with at most mixedBudget nodes faulted at once
// and one isolated. Everything runs on the test's goroutine; the schedule
// is a timeline, so it sleeps. The heal it returns ends every fault left
// and waits until the cluster is healthy.
func mixedFaults(d time.Duration) func(t *testing.T, c *target) (string, func() string) {
	return func(t *testing.T, c *target) (string, func() string) {
		m := &mixed{t: t, c: c, rnd: rand.New(rand.NewPCG(c.seed, 0x6d69786564)), state: map[*clustertest.Node]string{}}
		start := time.Now()
		steps := 0
		for time.Since(start) < d {
			what := m.step()
			steps++
			t.Logf("  +%5.2fs %s", time.Since(start).Seconds(), what)
			time.Sleep(700*time.Millisecond + time.Duration(m.rnd.Int64N(int64(800*time.Millisecond))))
		}
		return fmt.Sprintf("%d fault steps over %.1fs", steps, time.Since(start).Seconds()), m.healAll
	}
}

type mixed struct {
	t     *testing.T
	c     *target
	rnd   *rand.Rand
	state map[*clustertest.Node]string // killed, stopped or isolated
}

// step starts or ends one fault and says what it did.
func (m *mixed) step() string {
	n := len(m.state)
	if n == mixedBudget || (n > 0 && m.rnd.IntN(3) == 0) {
		return m.end()
	}
	return m.start()
}

func (m *mixed) start() string {
	nd := m.pick()
	isolated := slices.Contains(slices.Collect(maps.Values(m.state)), "isolated")
	kinds := []string{"killed", "stopped"}
	if !isolated {
		kinds = append(kinds, "isolated")
	}
	kind := kinds[m.rnd.IntN(len(kinds))]
	m.state[nd] = kind
	switch kind {
	case "killed":
		nd.Kill()
		return "kill -9 " + nd.Name
	case "stopped":
		nd.Stop()
		return "SIGSTOP " + nd.Name
	default:
		m.c.Isolate(nd)
		return "isolate " + nd.Name
	}
}

// pick returns a node with no fault: the store leader one time in three
// if it has none, else any.
func (m *mixed) pick() *clustertest.Node {
	var free []*clustertest.Node
	for _, nd := range m.c.Nodes {
		if _, ok := m.state[nd]; !ok {
			free = append(free, nd)
		}
	}
	if m.rnd.IntN(3) == 0 {
		// Ask only nodes with no fault: a frozen one would hold the
		// question until the client's timeout and stall the schedule.
		var apis []string
		for _, nd := range free {
			apis = append(apis, nd.API)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := m.c.ClientFor(apis...).Status(ctx)
		cancel()
		if err == nil {
			for _, nd := range free {
				if nd.Name == st.Leader {
					return nd
				}
			}
		}
	}
	return free[m.rnd.IntN(len(free))]
}

func (m *mixed) end() string {
	var faulted []*clustertest.Node
	for _, nd := range m.c.Nodes {
		if _, ok := m.state[nd]; ok {
			faulted = append(faulted, nd)
		}
	}
	nd := faulted[m.rnd.IntN(len(faulted))]
	return m.undo(nd)
}

func (m *mixed) undo(nd *clustertest.Node) string {
	kind := m.state[nd]
	delete(m.state, nd)
	switch kind {
	case "killed":
		nd.Restart()
		return "restarted " + nd.Name
	case "stopped":
		nd.Cont()
		return "SIGCONT " + nd.Name
	default:
		m.c.healPartitions()
		return "healed " + nd.Name + "'s isolation"
	}
}

// healAll ends every fault left, SIGCONT and heal first so that restarted
// nodes find their peers, and waits until the cluster is healthy.
func (m *mixed) healAll() string {
	var did []string
	for _, kind := range []string{"stopped", "isolated", "killed"} {
		for _, nd := range m.c.Nodes {
			if m.state[nd] == kind {
				did = append(did, m.undo(nd))
			}
		}
	}
	m.c.WaitHealthy()
	if len(did) == 0 {
		return "no fault left"
	}
	return fmt.Sprint(did)
}
