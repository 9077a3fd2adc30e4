package system

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestPartitionOverlap: with on_node_loss: overlap (the default), a node
// cut off from the others by a partition keeps running its instance,
// while the others place a replacement within seconds; once healed, the
// cut-off node sees its allocation stopped and stops its copy: two
// instances again, no duplicate.
func TestPartitionOverlap(t *testing.T) {
	clustertest.NeedNetns(t)
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes, Netns: true})
	cliEnv(t, c)
	ctx := ctxT(t, 3*time.Minute)
	mustTandem(t, "deploy", "-f", demoSpec(t, "web", 2, ""), "--addr="+c.Nodes[0].API, "--wait", "1m")
	victim, pgid := partitionVictim(ctx, t, c, "web")
	cl := majorityClient(c, victim)

	cut := time.Now()
	c.Isolate(victim)
	c.Eventually(30*time.Second, "a replacement runs beside the cut-off node", func() error {
		return runsElsewhere(ctx, cl, "web", victim.Name, 2)
	})
	replaced := time.Since(cut)
	if !groupAlive(pgid) {
		t.Errorf("the cut-off node stopped its overlap instance (process group %d): only at_most_one instances are fenced", pgid)
	}
	t.Logf("overlap: isolate -> replacement running and passing: %.2fs; the cut-off copy still runs", replaced.Seconds())

	c.Heal()
	healed := time.Now()
	c.Eventually(60*time.Second, "two instances, and the cut-off copy stopped", func() error {
		if groupAlive(pgid) {
			return fmt.Errorf("the cut-off copy (process group %d) still runs", pgid)
		}
		if err := runsElsewhere(ctx, cl, "web", victim.Name, 2); err != nil {
			return err
		}
		return countProcesses(c, 2)
	})
	t.Logf("overlap: heal -> the cut-off copy stopped, two instances: %.2fs", time.Since(healed).Seconds())
}

// TestPartitionAtMostOne: with on_node_loss: at_most_one, a node cut off
// by a partition kills its instance (it cannot renew its lease) before
// the others place the replacement, which waits for the node's last
// renewal + the lease TTL + a margin; once healed, the node does not
// start its copy again: one instance, never two. The instance proves it:
// it holds a lock on a file all nodes share (the nodes all run on this
// machine) and records a start and any failure to take the lock.
func TestPartitionAtMostOne(t *testing.T) {
	clustertest.NeedNetns(t)
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes, Netns: true})
	cliEnv(t, c)
	ctx := ctxT(t, 3*time.Minute)
	dir := t.TempDir()
	lock, journal := filepath.Join(dir, "lock"), filepath.Join(dir, "journal")
	script := fmt.Sprintf(`echo start $TANDEM_INSTANCE $(date +%%s%%N) >> %[2]s
flock -n -E 75 %[1]s %[3]s demo
s=$?
if [ $s = 75 ]; then echo conflict $TANDEM_INSTANCE $(date +%%s%%N) >> %[2]s; fi
exit $s`, lock, journal, clustertest.Binary(t))
	spec := demoSpecRun(t, "solo", 1, fmt.Sprintf("{command: [sh, -c, %q]}", script), "    on_node_loss: at_most_one\n")
	mustTandem(t, "deploy", "-f", spec, "--addr="+c.Nodes[0].API, "--wait", "1m")
	victim, pgid := partitionVictim(ctx, t, c, "solo")
	cl := majorityClient(c, victim)

	// Watch the cut-off copy's process group closely: when is it gone?
	var goneAt atomic.Int64
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		for wctx.Err() == nil {
			if !groupAlive(pgid) {
				goneAt.Store(time.Now().UnixNano())
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	cut := time.Now()
	c.Isolate(victim)
	var waits []string // the scheduler's reasons for holding the instance
	c.Eventually(30*time.Second, "the replacement runs on another node", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cl.Service(rctx, "solo")
		cancel()
		if err == nil {
			for _, u := range d.Unplaced {
				if !slices.Contains(waits, u.Reason) {
					waits = append(waits, u.Reason)
				}
			}
		}
		return runsElsewhere(ctx, cl, "solo", victim.Name, 1)
	})
	passing := time.Since(cut)
	t.Logf("the scheduler held the instance: %q", waits)
	gone := goneAt.Load()
	if gone == 0 {
		t.Fatalf("the cut-off node still runs its at_most_one copy (process group %d) while the replacement runs", pgid)
	}
	starts := journalStarts(t, journal)
	if len(starts) != 2 {
		t.Fatalf("the journal has %d starts, want 2 (the first copy, the replacement):\n%s", len(starts), readFile(journal))
	}
	if !time.Unix(0, gone).Before(starts[1]) {
		t.Errorf("the replacement started at %s, before the cut-off copy was seen gone at %s",
			starts[1].Format("15:04:05.000"), time.Unix(0, gone).Format("15:04:05.000"))
	}
	t.Logf("at_most_one: isolate -> cut-off copy killed: %.2fs; -> replacement started: %.2fs (%.2fs after the kill); -> running and passing: %.2fs",
		time.Unix(0, gone).Sub(cut).Seconds(), starts[1].Sub(cut).Seconds(), starts[1].Sub(time.Unix(0, gone)).Seconds(), passing.Seconds())

	c.Heal()
	healed := time.Now()
	c.Eventually(60*time.Second, "one instance, on the majority's side, and the healed node's allocation gone", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := cl.Service(rctx, "solo")
		if err != nil {
			return err
		}
		if len(d.Allocations) != 1 {
			return fmt.Errorf("%d allocations", len(d.Allocations))
		}
		if err := runsElsewhere(ctx, cl, "solo", victim.Name, 1); err != nil {
			return err
		}
		return countProcesses(c, 1)
	})
	t.Logf("at_most_one: heal -> the healed node's allocation removed: %.2fs", time.Since(healed).Seconds())
	if j := readFile(journal); strings.Contains(j, "conflict") || len(journalStarts(t, journal)) != 2 {
		t.Errorf("two copies ran at once, or the healed node started its copy again:\n%s", j)
	}
}

// partitionVictim waits until svc's instances all run and pass, and
// returns a node running one and that instance's process group.
func partitionVictim(ctx context.Context, t *testing.T, c *clustertest.Cluster, svc string) (*clustertest.Node, int) {
	t.Helper()
	var byNode map[string][]wire.AllocationInfo
	c.Eventually(30*time.Second, svc+" running and passing", func() (err error) {
		byNode, err = runningByNode(ctx, c, svc)
		return err
	})
	for _, nd := range c.Nodes {
		if len(byNode[nd.Name]) == 0 {
			continue
		}
		for _, st := range nd.Instances() {
			if st.Task.ID == byNode[nd.Name][0].ID && st.Pgid > 0 {
				t.Logf("cutting off %s (the store leader: %v)", nd.Name, c.Leader() == nd)
				return nd, st.Pgid
			}
		}
	}
	t.Fatalf("no node has a process of %s: %v", svc, byNode)
	return nil, 0
}

// majorityClient is a client of every node but cut.
func majorityClient(c *clustertest.Cluster, cut *clustertest.Node) *client.Client {
	var addrs []string
	for _, nd := range c.Nodes {
		if nd != cut {
			addrs = append(addrs, nd.API)
		}
	}
	return c.ClientFor(addrs...)
}

// runsElsewhere checks that want instances of svc run and pass on nodes
// other than not.
func runsElsewhere(ctx context.Context, cl *client.Client, svc, not string, want int) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := cl.Service(rctx, svc)
	if err != nil {
		return err
	}
	passing := map[string]bool{}
	for _, in := range d.Instances {
		passing[in.ID] = in.Status == "passing"
	}
	n := 0
	for _, a := range d.Allocations {
		if a.Node != not && a.Desired == wire.DesiredRun && a.Status != nil && a.Status.State == wire.AllocRunning && passing[a.ID] {
			n++
		}
	}
	if n != want {
		return fmt.Errorf("%d instances run and pass away from %s, want %d", n, not, want)
	}
	return nil
}

// countProcesses checks that the nodes run want instance processes in all.
func countProcesses(c *clustertest.Cluster, want int) error {
	n := 0
	for _, nd := range c.Nodes {
		for _, st := range nd.Instances() {
			if st.Pgid > 0 && groupAlive(st.Pgid) {
				n++
			}
		}
	}
	if n != want {
		return fmt.Errorf("%d instance processes run, want %d", n, want)
	}
	return nil
}

// groupAlive reports whether a process of group pgid remains.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }

// journalStarts returns the start times the instances wrote.
func journalStarts(t *testing.T, path string) []time.Time {
	t.Helper()
	var out []time.Time
	for line := range strings.Lines(readFile(path)) {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "start" {
			continue
		}
		ns, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		out = append(out, time.Unix(0, ns))
	}
	return out
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
