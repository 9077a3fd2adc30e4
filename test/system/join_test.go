package system

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// TestConcurrentJoins starts one node, then four joiners at the same moment,
// in several rounds: every round must end with every node alive, the
// target voters alive and no agent exited (issue 9: two joiners started
// together once failed half the time with etcd's "member count is unequal").
func TestConcurrentJoins(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint("round", round+1), func(t *testing.T) {
			c := clustertest.Start(t, 1, clustertest.Options{Mode: clustertest.Processes, Timeout: 30 * time.Second})
			nds := c.AddNodesAtOnce(4)
			c.WaitHealthy()
			for _, nd := range append(nds, c.Nodes[0]) {
				if !nd.Running() {
					t.Fatalf("%s exited", nd.Name)
				}
			}
			ms, err := c.Client().Members(ctxT(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			voters := 0
			for _, m := range ms.Members {
				if m.Role == "voter" {
					voters++
				}
			}
			if voters != 3 || len(ms.Members) != 5 {
				t.Fatalf("want 5 members with 3 voters, got %d with %d: %+v", len(ms.Members), voters, ms.Members)
			}
		})
	}
}

// TestFailedJoinRemovesItsLearner starts a joiner whose peer port another
// process holds: a reason that cannot pass. It must exit naming the flag,
// leave no learner in the store (it would lower the fault tolerance) and no
// half-made state in its data dir.
func TestFailedJoinRemovesItsLearner(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Mode: clustertest.Processes})
	ports := clustertest.FreePorts(t, 5)
	held, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", ports[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dataDir := filepath.Join(t.TempDir(), "n2")
	cmd := exec.Command(clustertest.Binary(t), "agent", "--name", "n2", "--data-dir", dataDir,
		"--bind", "127.0.0.1", "--advertise", "127.0.0.1",
		"--api-port", fmt.Sprint(ports[0]), "--peer-port", fmt.Sprint(ports[1]), "--store-port", fmt.Sprint(ports[2]),
		"--dns-port", fmt.Sprint(ports[3]), "--proxy-port", fmt.Sprint(ports[4]), "--join", c.Nodes[0].API,
		"--token-file", c.JoinTokenFile())
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the joiner succeeded with its peer port taken:\n%s", out)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the joiner still runs 90 s after start with its peer port taken:\n%s", out)
	}
	if !strings.Contains(out.String(), "--peer-port") {
		t.Fatalf("the joiner's error does not name the flag:\n%s", out)
	}
	ms, err := c.Client().Members(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 1 {
		t.Fatalf("want n1 alone in the cluster after the failed join, got %+v", ms.Members)
	}
	for _, p := range []string{"store", "node.json"} {
		if _, err := os.Stat(filepath.Join(dataDir, p)); err == nil {
			t.Errorf("the failed join left %s in its data dir", p)
		}
	}
}
