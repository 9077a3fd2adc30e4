package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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
	return demoSpecRun(t, name, count, fmt.Sprintf("{command: [%q, demo]}", clustertest.Binary(t)), extra)
}

// demoSpecRun is demoSpec with its run: given (YAML flow).
func demoSpecRun(t *testing.T, name string, count int, run, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	spec := fmt.Sprintf(`services:
  - name: %s
    run: %s
    count: %d
    ports: [{name: http}]
    checks:
      - {type: http, http: /healthz, interval: 200ms, timeout: 1s}
%s`, name, run, count, extra)
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
// by `service show` with the reason, naming the constraint.
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
}

// TestRollingUpdate: a changed spec replaces three instances one at a
// time, each new one passing before an old one stops, while clients GET
// through every node's proxy: no request fails. Then a new version that
// cannot start gets stuck and rolled back by itself (deploy says so), and
// with auto_rollback off it stays stuck while the good instances serve.
func TestRollingUpdate(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{})
	cliEnv(t, c)
	ctx := ctxT(t, 4*time.Minute)
	addr := "--addr=" + c.Nodes[0].API + "," + c.Nodes[1].API
	mustTandem(t, "deploy", "-f", demoSpec(t, "web", 3, ""), addr, "--wait", "1m")

	stop := make(chan struct{})
	type result struct {
		ok, failed int
		errs       []string
	}
	results := make(chan result, len(c.Nodes))
	for _, nd := range c.Nodes {
		go func() {
			var r result
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				if _, err := getDemo(nd, "web"); err != nil {
					r.failed++
					if len(r.errs) < 3 {
						r.errs = append(r.errs, nd.Name+": "+err.Error())
					}
				} else {
					r.ok++
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	out := mustTandem(t, "deploy", "-f", demoSpecRun(t, "web", 3, fmt.Sprintf("{command: [%q, demo], env: {VERSION: '2'}}", clustertest.Binary(t)), ""), addr, "--wait", "2m")
	close(stop)
	var total result
	for range c.Nodes {
		r := <-results
		total.ok += r.ok
		total.failed += r.failed
		total.errs = append(total.errs, r.errs...)
	}
	t.Logf("rolling update:\n%s\n%d GETs through the proxies, %d failed", out, total.ok+total.failed, total.failed)
	if total.failed > 0 || total.ok < 100 {
		t.Fatalf("%d of %d GETs failed during the rolling update: %v", total.failed, total.ok+total.failed, total.errs)
	}
	d, err := c.Client().Service(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Generation != 2 || len(d.Allocations) != 3 {
		t.Fatalf("after the update: generation %d, %d allocations", d.Spec.Generation, len(d.Allocations))
	}
	good := map[string]bool{}
	for _, a := range d.Allocations {
		if a.Generation != 2 {
			t.Fatalf("%s still runs generation %d", a.ID, a.Generation)
		}
		good[a.ID] = true
	}

	// A version that cannot start: the update gets stuck and is rolled back
	// by itself, and the good version answers throughout.
	_, err = tandem(t, "deploy", "-f", demoSpecRun(t, "web", 3, fmt.Sprintf("{command: [%q, demo, --no-such-flag]}", clustertest.Binary(t)), ""), addr, "--wait", "2m")
	if err == nil || !strings.Contains(err.Error(), "rolled it back") {
		t.Fatalf("deploy of a version that cannot start: %v", err)
	}
	c.Eventually(2*time.Minute, "the rollback runs three instances of generation 4", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := c.Client().Service(rctx, "web")
		if err != nil {
			return err
		}
		if d.Spec.Generation != 4 || d.RolledBack == nil || d.RolledBack.From != 3 || d.RolledBack.Back != 2 {
			return fmt.Errorf("generation %d, rolled back %+v", d.Spec.Generation, d.RolledBack)
		}
		if len(d.Spec.Run.Command) != 2 {
			return fmt.Errorf("the spec after the rollback runs %v", d.Spec.Run.Command)
		}
		for _, a := range d.Allocations {
			if a.Generation != 4 {
				return fmt.Errorf("%s runs generation %d", a.ID, a.Generation)
			}
			// The good instances are kept, relabelled: a rollback does
			// not replace what already runs the spec it writes back.
			if !good[a.ID] {
				return fmt.Errorf("%s is not one of the instances of generation 2 (%v)", a.ID, slices.Sorted(maps.Keys(good)))
			}
		}
		_, err = runningByNode(ctx, c, "web")
		return err
	})
	for _, nd := range c.Nodes {
		if _, err := getDemo(nd, "web"); err != nil {
			t.Errorf("web through %s after the rollback: %v", nd.Name, err)
		}
	}

	// With auto_rollback off, a stuck update waits and deploy says so.
	_, err = tandem(t, "deploy", "-f", demoSpecRun(t, "web", 3, fmt.Sprintf("{command: [%q, demo, --no-such-flag]}", clustertest.Binary(t)), "    update: {auto_rollback: false}\n"), addr, "--wait", "2m")
	if err == nil || !strings.Contains(err.Error(), "is stuck") {
		t.Fatalf("deploy of a version that cannot start, without rollback: %v", err)
	}
	for _, nd := range c.Nodes {
		if _, err := getDemo(nd, "web"); err != nil {
			t.Errorf("web through %s while the update is stuck: %v", nd.Name, err)
		}
	}
}

// TestWorkloadsRunUnprivileged: a node with the default workload settings,
// its agent running as root, runs an instance that names no user as
// nobody, and refuses one that asks for root, saying how to allow it.
func TestWorkloadsRunUnprivileged(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the defaults differ only for an agent running as root")
	}
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1, Flags: []string{"--workload-user=", "--workload-allow-root=false"}})
	cliEnv(t, c)
	ctx := ctxT(t, time.Minute)
	addr := "--addr=" + c.Nodes[0].API
	spec := filepath.Join(t.TempDir(), "who.yaml")
	if err := os.WriteFile(spec, []byte(`services:
  - name: who
    run: {command: [sh, -c, 'id -un; exec sleep 600']}
    count: 1
  - name: boss
    run: {command: [sleep, '600'], user: root}
    count: 1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTandem(t, "deploy", "-f", spec, addr, "--wait", "0")
	c.Eventually(30*time.Second, "who runs as nobody", func() error {
		d, err := c.Client().Service(ctx, "who")
		if err != nil {
			return err
		}
		if len(d.Allocations) != 1 {
			return fmt.Errorf("%d allocations", len(d.Allocations))
		}
		b, err := os.ReadFile(filepath.Join(c.Nodes[0].DataDir, "workloads", "logs", d.Allocations[0].ID+".stdout.log"))
		if err != nil {
			return err
		}
		if string(b) != "nobody\n" {
			return fmt.Errorf("it printed %q", b)
		}
		return nil
	})
	c.Eventually(30*time.Second, "boss is refused, saying how to allow root", func() error {
		d, err := c.Client().Service(ctx, "boss")
		if err != nil {
			return err
		}
		for _, a := range d.Allocations {
			if a.Status != nil && strings.Contains(a.Status.Error, "--workload-allow-root") {
				return nil
			}
		}
		return fmt.Errorf("allocations %+v", d.Allocations)
	})
}
