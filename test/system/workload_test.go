package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// demoSpec is a service file that runs `tandem demo` count times.
func demoSpec(t *testing.T, name string, count int, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	spec := fmt.Sprintf(`services:
  - name: %s
    run:
      command: [%q, demo]
    count: %d
    ports: [{name: http}]
    checks:
      - {type: http, http: /healthz, interval: 200ms, timeout: 1s}
%s`, name, clustertest.Binary(t), count, extra)
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// running returns a service's allocations that run, by node, and fails
// unless every one is running and passing.
func runningByNode(ctx context.Context, c *clustertest.Cluster, svc string) (map[string][]wire.AllocationInfo, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := c.RunningClient().Service(rctx, svc)
	if err != nil {
		return nil, err
	}
	passing := map[string]bool{}
	for _, in := range d.Instances {
		passing[in.ID] = in.Status == "passing"
	}
	out := map[string][]wire.AllocationInfo{}
	n := 0
	for _, a := range d.Allocations {
		if a.Desired != wire.DesiredRun {
			continue
		}
		if a.Status == nil || a.Status.State != wire.AllocRunning || !passing[a.ID] {
			return nil, fmt.Errorf("%s on %s is not running and passing yet (%+v)", a.ID, a.Node, a.Status)
		}
		out[a.Node] = append(out[a.Node], a)
		n++
	}
	if n != d.Spec.Count {
		return nil, fmt.Errorf("%d instances run, want %d", n, d.Spec.Count)
	}
	return out, nil
}

// getDemo asks a node's proxy for the demo service and returns the answer.
func getDemo(nd *clustertest.Node, svc string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+nd.Proxy+"/", nil)
	req.Host = svc
	resp, err := proxyClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// TestWorkloadsPlaceRestartAndReschedule: `tandem deploy` runs three demo
// instances, one per node, that answer through every node's proxy; a
// killed instance is restarted on its node within a second or so; a node
// killed with its instances has its instance placed on a live node; when
// it comes back, the count stays at three, with no duplicate.
func TestWorkloadsPlaceRestartAndReschedule(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	cliEnv(t, c)
	ctx := ctxT(t, 4*time.Minute)
	addr := "--addr=" + c.Nodes[0].API + "," + c.Nodes[1].API

	out := mustTandem(t, "deploy", "-f", demoSpec(t, "demo", 3, ""), addr, "--wait", "1m")
	if !strings.Contains(out, "3/3 running, 3 passing") {
		t.Fatalf("tandem deploy:\n%s", out)
	}
	var byNode map[string][]wire.AllocationInfo
	c.Eventually(30*time.Second, "three instances, running and passing", func() (err error) {
		byNode, err = runningByNode(ctx, c, "demo")
		return err
	})
	if len(byNode) != 3 {
		t.Fatalf("the three instances are not spread over the three nodes: %v", byNode)
	}
	for _, nd := range c.Nodes {
		c.Eventually(10*time.Second, "the demo answers through "+nd.Name+"'s proxy", func() error {
			_, err := getDemo(nd, "demo")
			return err
		})
	}

	// A crashed instance is restarted on its node.
	victim := c.Nodes[1]
	states := victim.Instances()
	if len(states) != 1 {
		t.Fatalf("%s runs %d instance processes, want 1", victim.Name, len(states))
	}
	crashed := time.Now()
	if err := syscall.Kill(-states[0].Pgid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Eventually(20*time.Second, "the killed instance runs again", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := c.RunningClient().Service(rctx, "demo")
		if err != nil {
			return err
		}
		for _, a := range d.Allocations {
			if a.ID == states[0].Task.ID {
				if a.Status == nil || a.Status.Restarts < 1 || a.Status.State != wire.AllocRunning {
					return fmt.Errorf("status %+v", a.Status)
				}
				return nil
			}
		}
		return errors.New("the allocation is gone")
	})
	t.Logf("a killed instance ran again %.1fs later", time.Since(crashed).Seconds())

	// A node dies with its instances: its instance is placed elsewhere.
	dead := c.Nodes[2]
	dead.Kill()
	dead.KillInstances()
	c.Eventually(60*time.Second, "three instances run on the live nodes", func() error {
		by, err := runningByNode(ctx, c, "demo")
		if err != nil {
			return err
		}
		if len(by[dead.Name]) > 0 {
			return fmt.Errorf("%s still counts as running one", dead.Name)
		}
		return nil
	})
	for _, nd := range c.Nodes[:2] {
		if _, err := getDemo(nd, "demo"); err != nil {
			t.Fatalf("the demo through %s's proxy after %s died: %v", nd.Name, dead.Name, err)
		}
	}

	// It comes back: still three, and its old allocation is gone.
	dead.Restart()
	c.Eventually(60*time.Second, "the returned node's old allocation is removed", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := c.RunningClient().Service(rctx, "demo")
		if err != nil {
			return err
		}
		if len(d.Allocations) != 3 {
			return fmt.Errorf("%d allocations", len(d.Allocations))
		}
		_, err = runningByNode(ctx, c, "demo")
		return err
	})
	if n := len(dead.Instances()); n != 0 {
		t.Errorf("%s runs %d instance processes after it came back, want 0 (its instance was replaced)", dead.Name, n)
	}

	// Scale down to one, then stop: the processes end.
	mustTandem(t, "scale", "demo", "1", addr)
	c.Eventually(30*time.Second, "one instance", func() error {
		total := 0
		for _, nd := range c.Nodes {
			total += len(nd.Instances())
		}
		if total != 1 {
			return fmt.Errorf("%d instance processes", total)
		}
		return nil
	})
	mustTandem(t, "stop", "demo", addr)
	c.Eventually(30*time.Second, "no instance", func() error {
		for _, nd := range c.Nodes {
			if n := len(nd.Instances()); n > 0 {
				return fmt.Errorf("%s runs %d", nd.Name, n)
			}
		}
		return nil
	})
}

// TestDeployRefusesABadSpecWhole: a spec with a bad field is refused,
// naming the field, and nothing is stored.
func TestDeployRefusesABadSpecWhole(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	cliEnv(t, c)
	_, err := tandem(t, "deploy", "-f", demoSpec(t, "bad", -1, "    on_node_loss: sometimes\n"), "--addr", c.Nodes[0].API)
	if err == nil || !strings.Contains(err.Error(), "count: -1") || !strings.Contains(err.Error(), "on_node_loss") {
		t.Fatalf("deploy of a bad spec: %v", err)
	}
	ctx := ctxT(t, time.Minute)
	if _, err := c.Client().Service(ctx, "bad"); err == nil {
		t.Fatal("the bad spec was stored")
	}
}

// TestWorkloadsSayWhatTheyCannotDo: an instance no node can take is listed
// by `service show` with the reason, naming the constraint; a changed
// command, which needs a rolling update (not built yet), makes deploy fail
// saying so instead of waiting.
func TestWorkloadsSayWhatTheyCannotDo(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	cliEnv(t, c)
	addr := "--addr=" + c.Nodes[0].API
	mustTandem(t, "deploy", "-f", demoSpec(t, "nowhere", 1, "    constraints: [zone=mars]\n"), addr, "--wait", "0")
	c.Eventually(30*time.Second, "service show says why nowhere is not placed", func() error {
		out, err := tandem(t, "service", "show", "nowhere", addr)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "not placed: 1:") || !strings.Contains(out, "zone=mars") {
			return fmt.Errorf("service show:\n%s", out)
		}
		return nil
	})

	mustTandem(t, "deploy", "-f", demoSpec(t, "web", 1, ""), addr, "--wait", "1m")
	_, err := tandem(t, "deploy", "-f", demoSpec(t, "web", 1, "    stop_timeout: 3s\n"), addr, "--wait", "1m")
	if err == nil || !strings.Contains(err.Error(), "rolling updates") {
		t.Fatalf("deploy of a changed spec: %v", err)
	}
}
