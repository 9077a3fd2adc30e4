package system

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

// TestStopDrainsFirst: an instance that stops gets SIGTERM only once every
// alive node's proxy has dropped it and finished the requests in flight
// to it. The demo runs with --shutdown-timeout 1ms, so a request still in
// flight at its SIGTERM would be cut off: under steady slow requests
// through every node's proxy, scaling down fails none, and each stopped
// instance logs 0 requests in flight when its SIGTERM came. A node that
// stopped answering (SIGSTOP) holds a stop up only until its lease ends,
// not for the drain timeout.
func TestStopDrainsFirst(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	cliEnv(t, c)
	ctx := ctxT(t, 4*time.Minute)
	run := fmt.Sprintf("{command: [%q, demo, --shutdown-timeout, 1ms]}", clustertest.Binary(t))
	mustTandem(t, "deploy", "-f", demoSpecRun(t, "slow", 3, run, "    drain_timeout: 60s\n"), "--addr="+c.Nodes[0].API, "--wait", "1m")
	for _, nd := range c.Nodes {
		c.Eventually(10*time.Second, "the demo answers through "+nd.Name+"'s proxy", func() error {
			_, err := getDemo(nd, "slow")
			return err
		})
	}

	// 3 -> 2 under load: 4 clients per node's proxy, each sending
	// /slow?ms=300 one after another.
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, failed int
	var errs []string
	for _, nd := range c.Nodes {
		for range 4 {
			wg.Go(func() {
				cl := proxyClient()
				for {
					select {
					case <-stopLoad:
						return
					default:
					}
					err := getSlow(cl, nd, "slow", 300)
					mu.Lock()
					if err != nil {
						failed++
						if len(errs) < 5 {
							errs = append(errs, nd.Name+": "+err.Error())
						}
					} else {
						ok++
					}
					mu.Unlock()
				}
			})
		}
	}
	answered := func(atLeast int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if ok+failed < atLeast {
				return fmt.Errorf("%d answers so far", ok+failed)
			}
			return nil
		}
	}
	before := allocsOf(ctx, t, c, "slow")
	c.Eventually(30*time.Second, "the load runs", answered(24))
	gone, took := scaleAndWatchStop(ctx, t, c, "slow", 2, before)
	mu.Lock()
	after := ok + failed
	mu.Unlock()
	c.Eventually(30*time.Second, "the load goes on after the stop", answered(after+24))
	close(stopLoad)
	wg.Wait()
	t.Logf("under load: %d slow GETs through the proxies, %d failed; drain %s", ok+failed, failed, took)
	if failed > 0 || ok < 48 {
		t.Fatalf("%d of %d slow GETs failed while an instance stopped: %v", failed, ok+failed, errs)
	}
	checkTermedIdle(t, c, gone)

	// 2 -> 1 idle.
	before = allocsOf(ctx, t, c, "slow")
	gone, took = scaleAndWatchStop(ctx, t, c, "slow", 1, before)
	t.Logf("idle: drain %s", took)
	checkTermedIdle(t, c, gone)

	// 1 -> 0 with a node that does not answer: the stop waits for its
	// lease to end (about the lease TTL, 2 s), not for the 60 s drain
	// timeout.
	before = allocsOf(ctx, t, c, "slow")
	var frozen *clustertest.Node
	leader := c.Leader() // freezing it would hold the scale up instead
	for _, nd := range c.Nodes {
		if nd.Name != before[0].Node && (frozen == nil || frozen == leader) {
			frozen = nd
		}
	}
	frozen.Stop()
	t.Cleanup(frozen.Cont)
	var live []string
	for _, nd := range c.Nodes {
		if nd != frozen {
			live = append(live, nd.API)
		}
	}
	gone, took = scaleAndWatchStopAt(ctx, t, c, "slow", 0, before, live)
	t.Logf("with %s frozen: drain %s", frozen.Name, took)
	if took > 20*time.Second {
		t.Fatalf("a frozen node held the stop up for %s", took)
	}
	checkTermedIdle(t, c, gone)
}

// getSlow sends GET /slow?ms=N through nd's proxy.
func getSlow(cl *http.Client, nd *clustertest.Node, svc string, ms int) error {
	req, _ := http.NewRequest("GET", "http://"+nd.Proxy+"/slow?ms="+strconv.Itoa(ms), nil)
	req.Host = svc
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != 200 || !strings.Contains(string(b), "slept") {
		return fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	return nil
}

// allocsOf returns the service's allocations to run.
func allocsOf(ctx context.Context, t *testing.T, c *clustertest.Cluster, svc string) []wire.AllocationInfo {
	t.Helper()
	var out []wire.AllocationInfo
	c.Eventually(30*time.Second, "the allocations of "+svc, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := c.RunningClient().Service(rctx, svc)
		if err != nil {
			return err
		}
		out = nil
		for _, a := range d.Allocations {
			if a.Desired != wire.DesiredRun {
				return fmt.Errorf("%s is still stopping", a.ID)
			}
			out = append(out, a)
		}
		return nil
	})
	return out
}

// scaleAndWatchStop scales svc to n and waits until one of before has
// stopped: it returns that one, and how long its drain took, from the
// moment its node saw it stopped to the SIGTERM. It fails the test if the
// SIGTERM (in the demo's log) came before the drain ended (in the node's).
func scaleAndWatchStop(ctx context.Context, t *testing.T, c *clustertest.Cluster, svc string, n int, before []wire.AllocationInfo) (wire.AllocationInfo, time.Duration) {
	t.Helper()
	return scaleAndWatchStopAt(ctx, t, c, svc, n, before, []string{c.Nodes[0].API, c.Nodes[1].API})
}

// scaleAndWatchStopAt is scaleAndWatchStop through the nodes whose API
// addresses are given (not a frozen one, which a client would wait for).
func scaleAndWatchStopAt(ctx context.Context, t *testing.T, c *clustertest.Cluster, svc string, n int, before []wire.AllocationInfo, apis []string) (wire.AllocationInfo, time.Duration) {
	t.Helper()
	// The scale is retried: a frozen node may have led the store.
	c.Eventually(30*time.Second, "tandem scale", func() error {
		_, err := tandem(t, "scale", svc, strconv.Itoa(n), "--addr="+strings.Join(apis, ","))
		return err
	})
	cl := c.ClientFor(apis...)
	var gone wire.AllocationInfo
	c.Eventually(90*time.Second, "an instance of "+svc+" stopped and forgotten", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d, err := cl.Service(rctx, svc)
		if err != nil {
			return err
		}
		now := map[string]bool{}
		for _, a := range d.Allocations {
			now[a.ID] = true
		}
		for _, a := range before {
			if !now[a.ID] {
				gone = a
				return nil
			}
		}
		return fmt.Errorf("%d allocations, none of %d gone", len(d.Allocations), len(before))
	})
	termed, _ := demoShutdown(t, c, gone)
	drained, took := drainLogged(t, c, gone)
	if termed.Before(drained) {
		t.Fatalf("%s got SIGTERM at %s, before its node saw it drained at %s", gone.ID, termed.Format(time.StampMicro), drained.Format(time.StampMicro))
	}
	return gone, took
}

// drainLogged reads the log of a stopped instance's node for when the
// instance was drained from every node and how long that took from the
// moment the node saw its allocation stopped.
func drainLogged(t *testing.T, c *clustertest.Cluster, a wire.AllocationInfo) (time.Time, time.Duration) {
	t.Helper()
	nd := c.Node(a.Node)
	var at time.Time
	var took time.Duration
	c.Eventually(10*time.Second, "the drain of "+a.ID+" in "+nd.Name+"'s log", func() error {
		b, err := os.ReadFile(nd.Log)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(b)) {
			if !strings.Contains(line, "id="+a.ID) {
				continue
			}
			if strings.Contains(line, "drain timed out") {
				t.Fatalf("the drain of %s timed out: %s", a.ID, line)
			}
			if !strings.Contains(line, "instance drained from every node") {
				continue
			}
			for _, field := range strings.Fields(line) {
				k, v, _ := strings.Cut(field, "=")
				switch k {
				case "time":
					at, err = time.Parse(time.RFC3339Nano, v)
				case "took":
					took, err = time.ParseDuration(v)
				}
				if err != nil {
					t.Fatalf("%s: %q: %v", nd.Log, field, err)
				}
			}
			return nil
		}
		return fmt.Errorf("not logged yet")
	})
	return at, took
}

// demoShutdown reads the stopped demo instance's log for when it got
// SIGTERM ("demo shutting down") and how many requests it was serving.
func demoShutdown(t *testing.T, c *clustertest.Cluster, a wire.AllocationInfo) (time.Time, int) {
	t.Helper()
	path := filepath.Join(c.Node(a.Node).DataDir, "workloads", "logs", a.ID+".stderr.log")
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the log of the stopped instance: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="demo shutting down"`) {
			continue
		}
		var at time.Time
		inflight := -1
		for _, field := range strings.Fields(line) {
			k, v, _ := strings.Cut(field, "=")
			switch k {
			case "time":
				at, err = time.Parse(time.RFC3339Nano, v)
				if err != nil {
					t.Fatalf("%s: time %q: %v", path, v, err)
				}
			case "in_flight":
				inflight, _ = strconv.Atoi(v)
			}
		}
		return at, inflight
	}
	t.Fatalf("%s has no shutdown line: the instance did not get SIGTERM", path)
	return time.Time{}, 0
}

// checkTermedIdle fails unless the stopped instance was serving nothing
// when its SIGTERM came: every proxy had drained it.
func checkTermedIdle(t *testing.T, c *clustertest.Cluster, a wire.AllocationInfo) {
	t.Helper()
	if _, n := demoShutdown(t, c, a); n != 0 {
		t.Fatalf("%s on %s got SIGTERM with %d requests in flight", a.ID, a.Node, n)
	}
}
