package bench

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
)

var partition = flag.Duration("bench.partition", 5*time.Second, "how long BenchmarkPartitionHeal keeps a node cut off")

// healWriters is how many writers hammer the cut-off node's API.
const healWriters = 4

// BenchmarkPartitionHeal measures how soon a node that was cut off from the
// other nodes serves again once the network heals. On a 3-node cluster in
// network namespaces (clustertest Options.Netns, so it needs root, ip and
// nft) it silently drops every packet between one node and the other two
// for -bench.partition (5 s), removes the rules, and times from the moment
// they are gone until that node's own HTTP API acknowledges a write. The
// test's clients reach the node all along: healWriters writers, staggered,
// send PUT ?timeout=300ms to it through the partition and after the heal.
// Sub-benchmarks cut off a follower voter, the store leader, and a client
// node (a fourth node, without a store member, which reaches the voters
// through etcd's gRPC client); each reports the median, min, max and p90
// (nearest rank) over -bench.runs partitions, in milliseconds, and logs
// what the node answered between the heal and its first acknowledged write.
func BenchmarkPartitionHeal(b *testing.B) {
	if err := clustertest.NetnsAvailable(); err != nil {
		b.Skip(err)
	}
	for _, role := range []string{"follower", "leader", "client"} {
		b.Run(role, func(b *testing.B) {
			nodes := 3
			if role == "client" {
				nodes = 4 // three voters and a client node
			}
			c := clustertest.Start(b, nodes, clustertest.Options{Mode: clustertest.Processes, Voters: 3, Netns: true, Flags: strings.Fields(*agentFlags)})
			var times []time.Duration
			var perRun []string
			failures := map[string]int{} // answers between the heal and the first ack, by kind
			for run := 1; run <= *runs; run++ {
				c.WaitHealthy()
				target := pick(b, c, role)
				waitWrite(b, target)

				ctx, cancel := context.WithTimeout(context.Background(), *partition+failoverLimit)
				acks := hammer(ctx, target)
				c.Isolate(target)
				time.Sleep(*partition) // the fault's length, not a wait for state
				c.Heal()
				healed := time.Now()
				acked, after := acks.firstAfter(healed)
				cancel()
				acks.wait()
				if acked.IsZero() {
					b.Fatalf("run %d: %s (%s) acknowledged no write within %s of the heal", run, target.Name, role, failoverLimit)
				}
				d := acked.Sub(healed)
				times = append(times, d)
				perRun = append(perRun, fmt.Sprintf("%s %v", target.Name, d.Round(time.Millisecond)))
				for k, n := range after {
					failures[k] += n
				}
			}
			reportRuns(b, "cut-off node and time from the heal to its first acknowledged write", perRun, "answers after the heal before the first ack", failures, times)
		})
	}
}

// pick returns the node to cut off: the store leader, a follower voter, or
// a client node (no store member), as role says.
func pick(b *testing.B, c *clustertest.Cluster, role string) *clustertest.Node {
	b.Helper()
	leader := c.Leader()
	if role == "leader" {
		return leader
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := c.Client().Members(ctx)
	if err != nil {
		b.Fatalf("members: %v", err)
	}
	want := "voter"
	if role == "client" {
		want = "client"
	}
	for _, m := range ms.Members {
		if m.Role == want && m.Name != leader.Name {
			return c.Node(m.Name)
		}
	}
	b.Fatalf("no %s node other than the leader in %+v", want, ms.Members)
	return nil
}

// waitWrite waits until nd's API acknowledges a write.
func waitWrite(b *testing.B, nd *clustertest.Node) {
	b.Helper()
	cl := nd.Client()
	err := clustertest.Poll(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cl.Put(ctx, "bench/heal", []byte("x"), client.WriteOptions{})
		return err
	})
	if err != nil {
		b.Fatalf("%s serves no write: %v", nd.Name, err)
	}
}

// ackLog is what the writers of hammer saw: every answer, with when it came.
type ackLog struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every answer
	answers []answer
	wg      sync.WaitGroup
}

type answer struct {
	at   time.Time
	kind string // "" for an acknowledged write
}

// hammer starts healWriters writers sending PUTs to nd's API until ctx
// ends, staggered over one writeTimeout, each with timeout=writeTimeout
// and a client deadline of twice that.
func hammer(ctx context.Context, nd *clustertest.Node) *ackLog {
	l := &ackLog{changed: make(chan struct{})}
	cl := nd.Client()
	for i := range healWriters {
		stagger := time.Duration(i) * writeTimeout / healWriters
		l.wg.Go(func() {
			select {
			case <-time.After(stagger):
			case <-ctx.Done():
				return
			}
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 2*writeTimeout)
				_, err := cl.Put(rctx, "bench/heal", []byte("x"), client.WriteOptions{Timeout: writeTimeout})
				rcancel()
				if ctx.Err() != nil {
					return
				}
				a := answer{at: time.Now()}
				if err != nil {
					a.kind = failureKind(err)
				}
				l.mu.Lock()
				l.answers = append(l.answers, a)
				close(l.changed)
				l.changed = make(chan struct{})
				l.mu.Unlock()
				if err != nil {
					time.Sleep(retryPause)
				}
			}
		})
	}
	return l
}

// firstAfter waits for the first acknowledged write answered after t, and
// returns when it came (zero if none came before the writers' context
// ended) and the failed answers between t and then, by kind.
func (l *ackLog) firstAfter(t time.Time) (time.Time, map[string]int) {
	seen := 0
	failed := map[string]int{}
	for {
		l.mu.Lock()
		as, changed := l.answers[seen:], l.changed
		seen = len(l.answers)
		l.mu.Unlock()
		for _, a := range as {
			switch {
			case !a.at.After(t):
			case a.kind == "":
				return a.at, failed
			default:
				failed[a.kind]++
			}
		}
		select {
		case <-changed:
		case <-time.After(failoverLimit):
			return time.Time{}, failed
		}
	}
}

// wait waits for the writers to stop (after their context ends).
func (l *ackLog) wait() { l.wg.Wait() }
