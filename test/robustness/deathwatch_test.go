package robustness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestDeathWatchDoesNotFlap puts a firewall in front of a live node's API
// that resets the other nodes' connections (their death-watch probes) but
// lets Raft and the store through, so the node keeps renewing its lease.
// The watchers revoke its lease once, on the evidence they have; the node
// takes a new lease, and it must then stay alive, revoked no more, until
// its API answers the watchers again.
func TestDeathWatchDoesNotFlap(t *testing.T) {
	clustertest.NeedNetns(t)
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes, Netns: true})
	leader := c.Leader()
	var victim *clustertest.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			victim = nd
		}
	}
	cl := c.RunningClient()
	revocations := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		evs, _, err := cl.Events(ctx, 1000)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, e := range evs {
			if e.Type == wire.EventLeaseRevoked && e.Node == victim.Name {
				n++
			}
		}
		return n, nil
	}
	alive := func() error {
		if ok, err := clustertest.MemberAlive(cl, victim.Name); err != nil || !ok {
			return fmt.Errorf("%s alive: %v (%v)", victim.Name, ok, err)
		}
		return nil
	}

	c.RejectAPI(victim)
	c.Eventually(15*time.Second, "the watchers revoke "+victim.Name+"'s lease once its API resets their probes", func() error {
		n, err := revocations()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no lease-revoked event for %s yet", victim.Name)
		}
		return nil
	})
	c.Eventually(15*time.Second, victim.Name+" alive again on a new lease", alive)

	// Twelve probe rounds of both watchers: no second revocation, and the
	// node alive throughout.
	until := time.Now().Add(3 * time.Second)
	for time.Now().Before(until) {
		if err := alive(); err != nil {
			t.Fatalf("while its API still resets the probes: %v", err)
		}
		n, err := revocations()
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%s's lease was revoked %d times; want once until its API answers again", victim.Name, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Heal()
	c.WaitHealthy()
}

// TestSilentLeaderNoticedBeforeItsLease gives nodes a 30 s lease and drops
// every packet to and from the store leader's node, as a host that lost
// power would look: the other nodes' probes get no answer, and after six
// of them they revoke its lease once the survivors have elected a new
// leader, long before the lease (renewed in full by that election) ends.
func TestSilentLeaderNoticedBeforeItsLease(t *testing.T) {
	clustertest.NeedNetns(t)
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes, Netns: true, Flags: []string{"--lease-ttl=30s"}})
	victim := c.Leader()
	var survivors []string
	for _, nd := range c.Nodes {
		if nd != victim {
			survivors = append(survivors, nd.API)
		}
	}
	cl := c.ClientFor(survivors...)
	c.Blackhole(victim)
	silenced := time.Now()
	c.Eventually(20*time.Second, victim.Name+" shown dead well inside its 30 s lease", func() error {
		if alive, err := clustertest.MemberAlive(cl, victim.Name); err != nil || alive {
			return fmt.Errorf("%s alive: %v (%v)", victim.Name, alive, err)
		}
		return nil
	})
	t.Logf("blackholed store leader %s shown dead after %s (lease TTL 30s)", victim.Name, time.Since(silenced).Round(time.Millisecond))
	c.Heal()
	c.WaitHealthy()
}
