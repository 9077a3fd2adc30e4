package robustness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	voters                  int      // store voters; 0: clustertest's default (3)
	flags                   []string // more agent flags
	net                     network  // how the nodes are connected
	runFor, faultAt, healAt time.Duration
	// sequence: fault runs a whole schedule of faults before it returns,
	// so the fault window starts when fault is called, not when it returns.
	sequence bool
	// fault injects the fault and returns what it did and how to heal it.
	// The injection must be done when fault returns (kill -9 waits for the
	// process to be reaped); heal must return once the cluster serves again
	// (Restart and RestartAll wait until the nodes answer).
	fault func(t *testing.T, c *target) (what string, heal func() string)
}

// network is how a scenario's nodes are connected.
type network int

const (
	// loopback: every node on 127.0.0.1, nothing in between.
	loopback network = iota
	// namespaces: each node in a network namespace of its own behind a
	// router namespace where nftables drops packets (clustertest's
	// Options.Netns). Needs root. Without it the scenario runs proxied,
	// its partitions made by the proxies (except in CI, which must have
	// namespaces); TANDEM_ROBUSTNESS_NET=proxy asks for that anyway.
	namespaces
	// proxied: a FaultProxy in front of every node's ports (Fronts), so
	// Raft traffic can be delayed or stalled. Needs nothing special.
	proxied
)

// target is what a fault acts on: the cluster, and the proxies in front of
// its nodes when the scenario's network is proxied. Its partition methods
// use the proxies when there are some, nftables otherwise.
type target struct {
	*clustertest.Cluster
	fronts *Fronts
	seed   uint64 // the workload's, for faults drawn at random
}

// Isolate cuts nd off from the other nodes, both ways.
func (c *target) Isolate(nd *clustertest.Node) {
	if c.fronts != nil {
		c.fronts.Isolate(nd.Name)
		return
	}
	c.Cluster.Isolate(nd)
}

// PartitionOneWay stops what from sends to to.
func (c *target) PartitionOneWay(from, to *clustertest.Node) {
	if c.fronts != nil {
		c.fronts.PartitionOneWay(from.Name, to.Name)
		return
	}
	c.Cluster.PartitionOneWay(from, to)
}

// Blackhole cuts nd off from everyone, the test's clients included.
func (c *target) Blackhole(nd *clustertest.Node) {
	if c.fronts != nil {
		c.fronts.Blackhole(nd.Name)
		return
	}
	c.Cluster.Blackhole(nd)
}

// electionPause freezes a node for longer than the agents' election
// timeout (500 ms), so the others elect a new leader meanwhile.
const electionPause = 2 * time.Second

var scenarios = []scenario{
	{
		name: "kill-leader", nodes: 3,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			nd.Kill()
			return "kill -9 leader " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
	{
		name: "kill-follower", nodes: 3,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := follower(t, c)
			nd.Kill()
			return "kill -9 follower " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
	{
		name: "pause-leader", nodes: 3,
		runFor: 9 * time.Second, faultAt: 3 * time.Second, healAt: 3*time.Second + electionPause,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			nd.Stop()
			return "SIGSTOP leader " + nd.Name, func() string { nd.Cont(); return "SIGCONT " + nd.Name }
		},
	},
	{
		name: "kill-all", nodes: 3,
		runFor: 10 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			for _, nd := range c.Nodes {
				nd.Kill()
			}
			return "kill -9 all nodes", func() string { c.RestartAll(); return "restarted all nodes" }
		},
	},
	{
		name: "kill-leader-5", nodes: 5, voters: 5,
		runFor: 8 * time.Second, faultAt: 3 * time.Second, healAt: 5 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			nd.Kill()
			return "kill -9 leader " + nd.Name, func() string { nd.Restart(); return "restarted " + nd.Name }
		},
	},
	{
		// The leader is cut off from both followers, both ways; the test's
		// clients still reach it, and it answers them 503 once its
		// requests time out. The majority elects a new leader.
		name: "partition-leader", nodes: 3, net: namespaces,
		runFor: 12 * time.Second, faultAt: 3 * time.Second, healAt: 6 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			c.Isolate(nd)
			return "isolate leader " + nd.Name + " from the others", c.healNetwork
		},
	},
	{
		// What the followers send the leader is dropped; what the leader
		// sends still goes out. Of the two directions this is the harder
		// one: the followers go on hearing the leader, so they do not time
		// out on their own, and only the leader's check-quorum (no answer
		// from a majority for an election timeout) can end its term; then
		// the old leader, hearing nothing from the new one, campaigns at
		// the followers, and pre-vote must keep it from deposing the new
		// leader again and again. The other direction (leader -> followers
		// dropped) is close to partition-leader: the followers elect a new
		// leader, whose messages reach the old one and make it step down.
		// With packets dropped (namespaces) the followers hear the leader
		// only for a while: their TCP acknowledgements are dropped too, so
		// the leader's streams stall at its next retransmission timeout.
		// With the proxies (messages held) they hear it all along.
		name: "partition-one-way", nodes: 3, net: namespaces,
		runFor: 12 * time.Second, faultAt: 3 * time.Second, healAt: 6 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			leader := c.Leader()
			for _, nd := range c.Nodes {
				if nd != leader {
					c.PartitionOneWay(nd, leader)
				}
			}
			return "drop packets from the followers to leader " + leader.Name, c.healNetwork
		},
	},
	{
		// Every packet to or from the leader is dropped, the test's
		// clients' too: their connections time out instead of being
		// refused, and writes in flight there end with an unknown outcome.
		name: "blackhole-leader", nodes: 3, net: namespaces,
		runFor: 12 * time.Second, faultAt: 3 * time.Second, healAt: 6 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			c.Blackhole(nd)
			return "blackhole leader " + nd.Name, c.healNetwork
		},
	},
	{
		// 80 ms more each way on every Raft link (160 ms more per round
		// trip, against a 500 ms election timeout and 50 ms heartbeat):
		// no election should happen, writes get slower.
		name: "delay-peers", nodes: 3, net: proxied,
		runFor: 10 * time.Second, faultAt: 3 * time.Second, healAt: 6 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			f := Faults{Delay: 80 * time.Millisecond}
			c.fronts.SetPeers(f)
			return "peer links: " + f.String(), func() string { c.fronts.SetPeers(Faults{}); return "peer links: no faults" }
		},
	},
	{
		// 10 % of the chunks on every Raft link held back 200 ms (a TCP
		// retransmission), with 5 ms delay each way.
		name: "lossy-peers", nodes: 3, net: proxied,
		runFor: 10 * time.Second, faultAt: 3 * time.Second, healAt: 6 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			f := Faults{Delay: 5 * time.Millisecond, Loss: 0.1}
			c.fronts.SetPeers(f)
			return "peer links: " + f.String(), func() string { c.fronts.SetPeers(Faults{}); return "peer links: no faults" }
		},
	},
	{
		// Several faults in one run, overlapping, drawn from the seed:
		// kill -9, SIGSTOP and isolation of any node (the leader often),
		// at most two of the five at once (mixed_test.go).
		name: "mixed-5", nodes: 5, voters: 5, net: namespaces, sequence: true,
		runFor: 22 * time.Second, faultAt: 3 * time.Second, healAt: 3 * time.Second,
		fault: mixedFaults(12 * time.Second),
	},
	{
		// A voter dies for good; autopilot must put the spare client node
		// in its place (learner, promoted, then the dead member removed)
		// while the workload runs. The heal step kills nothing more: it
		// waits for autopilot. Dead-voter timeout 2 s (default 30 s).
		name: "replace-voter", nodes: 4, voters: 3, flags: []string{"--dead-voter-timeout", "2s"},
		runFor: 18 * time.Second, faultAt: 3 * time.Second, healAt: 3 * time.Second,
		fault: func(t *testing.T, c *target) (string, func() string) {
			nd := c.Leader()
			nd.Kill()
			killed := time.Now()
			return "kill -9 leader " + nd.Name + " for good", func() string {
				voters := waitReplaced(t, c.Cluster, nd, killed)
				return "autopilot replaced " + nd.Name + ": voters " + strings.Join(voters, ", ")
			}
		},
	},
}

// healPartitions removes the network faults, and returns at once.
func (c *target) healPartitions() {
	if c.fronts != nil {
		c.fronts.Heal()
		return
	}
	c.Heal()
}

// healNetwork removes the network faults and waits until every node is
// back: alive, the voters too, with a leader. After a partition that
// takes TCP's retransmission back-off (a second or more), not just the
// next packet.
func (c *target) healNetwork() string {
	if c.fronts != nil {
		n := c.fronts.Held()
		c.fronts.Heal()
		c.WaitHealthy()
		return fmt.Sprintf("healed (the proxies had held %d bytes)", n)
	}
	n := c.Dropped()
	c.Heal()
	c.WaitHealthy()
	return fmt.Sprintf("healed (%d packets had been dropped)", n)
}

// waitReplaced waits until dead is no longer a store member and the
// target number of voters (3) are alive again, and returns them. It logs
// the cluster's events since the kill: autopilot's timeline.
func waitReplaced(t *testing.T, c *clustertest.Cluster, dead *clustertest.Node, killed time.Time) []string {
	t.Helper()
	var voters []string
	c.Eventually(60*time.Second, "autopilot replaces "+dead.Name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ms, err := c.RunningClient().Members(ctx)
		if err != nil {
			return err
		}
		if ms.Stale {
			return errors.New("no quorum")
		}
		voters = voters[:0]
		for _, m := range ms.Members {
			if m.Name == dead.Name && m.Role != "client" {
				return fmt.Errorf("%s is still a %s", dead.Name, m.Role)
			}
			if m.Role == "voter" && m.Alive {
				voters = append(voters, m.Name)
			}
		}
		if len(voters) != 3 {
			return fmt.Errorf("alive voters %v, want 3", voters)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if evs, _, err := c.RunningClient().Events(ctx, 100); err == nil {
		for _, e := range evs {
			if !e.Time.Before(killed) {
				t.Logf("  +%5.2fs %s %s: %s", e.Time.Sub(killed).Seconds(), e.Type, e.Node, e.Message)
			}
		}
	}
	return voters
}

// follower returns a running node that does not hold store leadership.
func follower(t *testing.T, c *target) *clustertest.Node {
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
	opts := clustertest.Options{Mode: clustertest.Processes, Voters: sc.voters, Flags: sc.flags}
	tg := &target{seed: seed}
	nw := sc.net
	if nw == namespaces {
		if os.Getenv("TANDEM_ROBUSTNESS_NET") == "proxy" {
			nw = proxied
		} else if err := clustertest.NetnsAvailable(); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI must run the network partition scenarios in network namespaces: %v", err)
			}
			t.Logf("no network namespaces (%v): the fault proxies make the partitions", err)
			nw = proxied
		}
	}
	switch nw {
	case namespaces:
		opts.Netns = true
	case proxied:
		tg.fronts = NewFronts(t) // before Start: closed after the nodes
		opts.Front = tg.fronts.Front
	}
	c := clustertest.Start(t, sc.nodes, opts)
	tg.Cluster = c
	var addrs, logs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.API)
		logs = append(logs, nd.Log)
	}
	// Half the clients send idempotent writes and repeat those whose
	// outcome is unknown (the API applies a repeat at most once).
	w := Workload{Addrs: addrs, Clients: 6, Keys: 5, Timeout: time.Second, Seed: seed, IdempotentClients: 3,
		Client: func(a []string) *client.Client { return c.ClientFor(a...) }}
	h := NewHistory()
	ctx, cancel := context.WithTimeout(context.Background(), sc.runFor)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h) }()

	// The fault schedule is a timeline, not a wait for some state: sleeping
	// until a point of it is what the schedule means.
	until := func(d time.Duration) { time.Sleep(d - time.Duration(h.Now())) }
	until(sc.faultAt)
	faulted := time.Duration(h.Now())
	what, heal := sc.fault(t, tg)
	if !sc.sequence {
		faulted = time.Duration(h.Now())
	}
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
	for _, nd := range c.Nodes {
		if !nd.Running() {
			continue // a voter killed for good
		}
		addr := nd.API
		final := c.ClientFor(addr)
		for _, key := range w.KeyNames() {
			id := h.NewClient()
			err := clustertest.Poll(20*time.Second, func() error {
				r := Record{Client: id, Input: get(key), Call: h.Now()}
				r.Output, r.Failed = Apply(final, r.Input, time.Second, "")
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
	var casOK, casConflict, replayed int
	for _, r := range h.Records() {
		if r.Output.Replayed {
			replayed++
		}
		if r.Input.Kind == CompareAndSet && !r.Failed && !r.Output.Unknown {
			if r.Output.OK {
				casOK++
			} else {
				casConflict++
			}
		}
	}
	t.Logf("compare-and-set: %d applied, %d conflicts", casOK, casConflict)
	t.Logf("idempotent writes answered from the record of an earlier attempt: %d", replayed)
	lost := LostWrites(h.Records(), int64(end))
	t.Logf("acknowledged writes lost %d", lost)
	if lost > 0 {
		t.Errorf("%d acknowledged writes are missing from the final state", lost)
	}
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
