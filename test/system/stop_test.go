package system

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
)

// TestWholeClusterStopsAtOnce sends SIGTERM to every agent of a
// three-voter cluster at the same moment (a host shutdown, 'tandem up' on
// Ctrl-C): every agent exits within a few seconds, and after a restart of
// all of them every write acknowledged before the signal is there.
func TestWholeClusterStopsAtOnce(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	const writes = 30
	for i := range writes {
		nd := c.Nodes[i%len(c.Nodes)]
		if _, err := nd.Client().Put(ctxT(t, 5*time.Second), fmt.Sprintf("acked/%02d", i), []byte("v"), client.WriteOptions{}); err != nil {
			t.Fatalf("write %d through %s: %v", i, nd.Name, err)
		}
	}
	start := time.Now()
	for _, nd := range c.Nodes {
		if err := syscall.Kill(-nd.Pid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	// The bound is generous for a loaded machine; the figure is logged.
	const bound = 10 * time.Second
	if err := clustertest.Poll(bound, func() error {
		for _, nd := range c.Nodes {
			if nd.Running() {
				return fmt.Errorf("%s still running", nd.Name)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%v %s after SIGTERM to every agent", err, bound)
	}
	t.Logf("all 3 agents exited %s after SIGTERM to all at once", time.Since(start).Round(time.Millisecond))

	c.RestartAll()
	c.WaitHealthy()
	got, err := c.Client().List(ctxT(t, 10*time.Second), "acked/", true, client.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != writes {
		t.Fatalf("after the restart %d of %d acknowledged writes are there", len(got.Items), writes)
	}
}
