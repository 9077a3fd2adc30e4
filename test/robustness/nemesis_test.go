package robustness

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
)

// scenario is one nemesis run: a cluster of Nodes processes, a workload of
// RunFor, a fault injected at FaultAt and healed at HealAt.
type scenario struct {
	name                    string
	nodes                   int
	voters                  int // store voters; 0: clustertest's default (3)
	runFor, faultAt, healAt time.Duration
	// fault injects the fault and returns what it did and how to heal it.
	// The injection must be done when fault returns (kill -9 waits for the
	// process to be reaped); heal must return once the cluster serves again
	// (Restart and RestartAll wait until the nodes answer).
	fault func(t *testing.T, c *clustertest.Cluster) (what string, heal func() string)
}

// electionPause freezes a node for longer than the agents' election
// timeout (500 ms), so the others elect a new leader meanwhile.
const electionPause = 2 * time.Second

var scenarios = []scenario{
	{
		name: "kill-leader", nodes: 3,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *clustertest.Cluster) (string, func() string) {
			nd := c.Leader()
			nd.Kill()
			return "kill -9 leader " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
	{
		name: "kill-follower", nodes: 3,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *clustertest.Cluster) (string, func() string) {
			nd := follower(t, c)
			nd.Kill()
			return "kill -9 follower " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
	{
		name: "pause-leader", nodes: 3,
		runFor: 9 * time.Second, faultAt: 3 * time.Second, healAt: 3*time.Second + electionPause,
		fault: func(t *testing.T, c *clustertest.Cluster) (string, func() string) {
			nd := c.Leader()
			nd.Stop()
			return "SIGSTOP leader " + nd.Name, func() string { nd.Cont(); return "SIGCONT " + nd.Name }
		},
	},
	{
		name: "kill-all", nodes: 3,
		runFor: 10 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *clustertest.Cluster) (string, func() string) {
			for _, nd := range c.Nodes {
				nd.Kill()
			}
			return "kill -9 all nodes", func() string { c.RestartAll(); return "restarted all nodes" }
		},
	},
	{
		name: "kill-leader-5", nodes: 5, voters: 5,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *clustertest.Cluster) (string, func() string) {
			nd := c.Leader()
			nd.Kill()
			return "kill -9 leader " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
}

// follower returns a running node that does not hold store leadership.
func follower(t *testing.T, c *clustertest.Cluster) *clustertest.Node {
	t.Helper()
	leader := c.Leader()
	for _, nd := range c.Nodes {
		if nd != leader && nd.Running() {
			return nd
		}
	}
	t.Fatal("no follower")
	return nil
}

// seeds is the number of workload seeds each scenario runs with:
// $TANDEM_ROBUSTNESS_SEEDS, default 1.
func seeds(t *testing.T) int {
	s := os.Getenv("TANDEM_ROBUSTNESS_SEEDS")
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("TANDEM_ROBUSTNESS_SEEDS=%q: want a positive integer", s)
	}
	return n
}

// TestNemesisLinearizable runs every scenario, one at a time, with each
// workload seed (seeds 1..$TANDEM_ROBUSTNESS_SEEDS).
func TestNemesisLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	n := seeds(t)
	for _, sc := range scenarios {
		for seed := 1; seed <= n; seed++ {
			t.Run(fmt.Sprintf("%s/seed-%d", sc.name, seed), func(t *testing.T) {
				runScenario(t, sc, uint64(seed))
			})
		}
	}
}

// runScenario runs six clients on the cluster for sc.runFor, injects the
// fault at sc.faultAt and heals it at sc.healAt, then reads every key
// through every node once the cluster is healthy and checks the whole
// history, final reads included, for linearizability. An acknowledged
// write that was lost shows up as a final read the model cannot explain.
func runScenario(t *testing.T, sc scenario, seed uint64) {
	c := clustertest.Start(t, sc.nodes, clustertest.Options{Mode: clustertest.Processes, Voters: sc.voters})
	var addrs, logs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.API)
		logs = append(logs, nd.Log)
	}
	w := Workload{Addrs: addrs, Clients: 6, Keys: 5, Timeout: time.Second, Seed: seed}
	h := NewHistory()
	ctx, cancel := context.WithTimeout(context.Background(), sc.runFor)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h) }()

	// The fault schedule is a timeline, not a wait for some state: sleeping
	// until a point of it is what the schedule means.
	until := func(d time.Duration) { time.Sleep(d - time.Duration(h.Now())) }
	until(sc.faultAt)
	what, heal := sc.fault(t, c)
	faulted := time.Duration(h.Now())
	t.Logf("%s at %.2fs (seed %d)", what, faulted.Seconds(), seed)
	until(sc.healAt)
	what = heal()
	healed := time.Duration(h.Now())
	t.Logf("%s, serving at %.2fs", what, healed.Seconds())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	end := time.Duration(h.Now())

	c.WaitHealthy()
	for _, addr := range addrs {
		final := client.New([]string{addr})
		for _, key := range w.KeyNames() {
			id := h.NewClient()
			err := clustertest.Poll(20*time.Second, func() error {
				r := Record{Client: id, Input: get(key), Call: h.Now()}
				r.Output, r.Failed = Apply(final, r.Input, time.Second)
				r.Return = h.Now()
				if r.Failed {
					return fmt.Errorf("final read of %s through %s failed", key, addr)
				}
				h.Add(r)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	rep := Check(t, h.Operations(), logs, 30*time.Second)
	f := figuresOf(h.Records(), faulted, healed, end)
	t.Logf("ops checked %d (%d failed operations left out), violations %d, result %s", rep.Ops, f.failed, rep.Violations, rep.Result)
	t.Logf("unknown-outcome writes %d of %d writes", f.unknown, f.writes)
	t.Logf("success rate: before the fault %s, during %s, after the heal %s", f.rate[0], f.rate[1], f.rate[2])
	if f.firstWrite >= 0 {
		t.Logf("first acknowledged write invoked after the fault returned %s after the fault", f.firstWrite.Round(time.Millisecond))
	} else {
		t.Errorf("no write invoked after the fault was acknowledged")
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
	if !rep.OK() {
		t.Fatalf("history not proved linearizable (%s); evidence in %s", rep.Result, rep.Dir)
	}
}

// figures summarise a run's availability. An operation counts in the window
// (before the fault, during it, after the heal) in which it was invoked, so
// an operation invoked just before the fault that failed counts before it.
type figures struct {
	writes, unknown, failed int
	rate                    [3]string // before, during, after the fault
	firstWrite              time.Duration
}

func figuresOf(recs []Record, faulted, healed, end time.Duration) figures {
	f := figures{firstWrite: -1}
	var okN, allN [3]int
	for _, r := range recs {
		call := time.Duration(r.Call)
		if call > end {
			continue // the final reads
		}
		isWrite := r.Input.Kind != Get
		if isWrite {
			f.writes++
		}
		if r.Output.Unknown {
			f.unknown++
		}
		if r.Failed {
			f.failed++
		}
		w := 0
		switch {
		case call >= healed:
			w = 2
		case call >= faulted:
			w = 1
		}
		allN[w]++
		success := !r.Failed && !r.Output.Unknown
		if success {
			okN[w]++
		}
		if isWrite && success && call >= faulted {
			if d := time.Duration(r.Return) - faulted; f.firstWrite < 0 || d < f.firstWrite {
				f.firstWrite = d
			}
		}
	}
	for i := range f.rate {
		f.rate[i] = "n/a"
		if allN[i] > 0 {
			f.rate[i] = fmt.Sprintf("%d/%d (%.1f%%)", okN[i], allN[i], 100*float64(okN[i])/float64(allN[i]))
		}
	}
	return f
}
