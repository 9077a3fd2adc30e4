package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/wire"
)

// rescheduleLimit bounds one run's wait for the replacement to answer.
const rescheduleLimit = 60 * time.Second

// BenchmarkReschedule measures how fast tandem replaces the instance of a
// node that dies: four agent processes, a demo service of three instances
// (one node free); each run kills -9 one instance's node together with its
// instances and times, from the kill: detection (the node shows dead),
// placement (the replacement's allocation is written), start (its process
// runs), passing (its check passes) and the first answer through a live
// node's proxy from the new instance. The victim alternates between the
// store leader's node, the scheduler holder's node and another one (when
// they run an instance). Goal (issue 11): p50 ≤ 3 s, p95 ≤ 5 s to the first
// proxied answer, over ≥ 20 runs (-bench.runs).
func BenchmarkReschedule(b *testing.B) {
	c := clustertest.Start(b, 4, clustertest.Options{Mode: clustertest.Processes, Flags: strings.Fields(*agentFlags)})
	cl := c.RunningClient()
	spec := registry.Service{Name: "demo", Checks: []registry.Check{{Type: registry.CheckHTTP, HTTP: "/healthz", Interval: 0}}}
	spec.Run.Command = []string{clustertest.Binary(b), "demo"}
	spec.Count = 3
	spec.Ports = []scheduler.PortSpec{{Name: "http"}}
	ctx := context.Background()
	if err := cl.PutService(ctx, spec); err != nil {
		b.Fatal(err)
	}
	phases := []string{"detect", "place", "start", "pass", "answer"}
	times := map[string][]time.Duration{}
	var perRun []string
	for run := 1; run <= *runs; run++ {
		before := waitThreePassing(b, c)
		victim := pickVictim(b, c, before, run)
		known := map[string]bool{}
		for _, a := range before {
			known[a.ID] = true
		}
		var live []*clustertest.Node
		for _, nd := range c.Nodes {
			if nd != victim {
				live = append(live, nd)
			}
		}
		obs := c.ClientFor(live[0].API, live[1].API)
		start := time.Now()
		victim.Kill()
		victim.KillInstances()
		at := map[string]time.Duration{}
		newID := ""
		for len(at) < len(phases) {
			if time.Since(start) > rescheduleLimit {
				b.Fatalf("run %d: no replacement answering %s after killing %s (so far %v)", run, rescheduleLimit, victim.Name, at)
			}
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if _, ok := at["detect"]; !ok {
				if alive, err := clustertest.MemberAlive(obs, victim.Name); err == nil && !alive {
					at["detect"] = time.Since(start)
				}
			}
			d, err := obs.Service(rctx, "demo")
			cancel()
			if err == nil {
				for _, a := range d.Allocations {
					if known[a.ID] || a.Desired != wire.DesiredRun {
						continue
					}
					newID = a.ID
					setOnce(at, "place", start)
					if a.Status != nil && a.Status.State == wire.AllocRunning {
						setOnce(at, "start", start)
					}
				}
				for _, in := range d.Instances {
					if in.ID == newID && in.Status == registry.Passing {
						setOnce(at, "pass", start)
					}
				}
			}
			if newID != "" {
				if body, err := proxyGet(live[run%len(live)], "demo"); err == nil && strings.Contains(body, newID) {
					setOnce(at, "answer", start)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, p := range phases {
			if _, ok := at["detect"]; !ok && p == "detect" {
				continue
			}
			times[p] = append(times[p], at[p])
		}
		perRun = append(perRun, fmt.Sprintf("%s %v", victim.Name, at["answer"].Round(10*time.Millisecond)))
		victim.Restart()
	}
	b.Logf("killed node and time to the replacement's first proxied answer, per run: %s", strings.Join(perRun, ", "))
	b.ReportMetric(0, "ns/op")
	for _, p := range phases {
		t := times[p]
		slices.Sort(t)
		b.ReportMetric(ms(median(t)), p+"_p50_ms")
		b.ReportMetric(ms(percentile(t, 0.95)), p+"_p95_ms")
	}
}

func setOnce(at map[string]time.Duration, phase string, start time.Time) {
	if _, ok := at[phase]; !ok {
		at[phase] = time.Since(start)
	}
}

// waitThreePassing waits until demo runs three passing instances and no
// other allocation (a returned node's old one is gone), and returns them.
func waitThreePassing(b *testing.B, c *clustertest.Cluster) []wire.AllocationInfo {
	b.Helper()
	var out []wire.AllocationInfo
	err := clustertest.Poll(rescheduleLimit, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		d, err := c.RunningClient().Service(ctx, "demo")
		if err != nil {
			return err
		}
		passing := map[string]bool{}
		for _, in := range d.Instances {
			passing[in.ID] = in.Status == registry.Passing
		}
		out = nil
		for _, a := range d.Allocations {
			if a.Desired != wire.DesiredRun || !passing[a.ID] {
				return fmt.Errorf("%s on %s not passing, or stopping", a.ID, a.Node)
			}
			out = append(out, a)
		}
		if len(out) != 3 {
			return fmt.Errorf("%d allocations", len(out))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// pickVictim chooses a node that runs an instance: in turn the store
// leader's node, the scheduler holder's, and any other, when they run one.
func pickVictim(b *testing.B, c *clustertest.Cluster, allocs []wire.AllocationInfo, run int) *clustertest.Node {
	b.Helper()
	runs := map[string]bool{}
	for _, a := range allocs {
		runs[a.Node] = true
	}
	var want string
	switch run % 3 {
	case 1:
		want = c.Leader().Name
	case 2:
		want = schedulerHolder(c)
	}
	if runs[want] {
		return c.Node(want)
	}
	for _, nd := range c.Nodes {
		if runs[nd.Name] && nd.Name != c.Leader().Name {
			return nd
		}
	}
	return c.Node(allocs[0].Node)
}

// schedulerHolder is the node that took the scheduler's election last,
// by the time stamps of its log lines.
func schedulerHolder(c *clustertest.Cluster) string {
	best, bestAt := "", ""
	for _, nd := range c.Nodes {
		b, err := os.ReadFile(nd.Log)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "this node now runs the scheduler") {
				continue
			}
			if ts, _, ok := strings.Cut(strings.TrimPrefix(line, "time="), " "); ok && ts > bestAt {
				best, bestAt = nd.Name, ts
			}
		}
	}
	return best
}

// proxyGet asks nd's proxy for svc's root page.
func proxyGet(nd *clustertest.Node, svc string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+nd.Proxy+"/", nil)
	req.Host = svc
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%d", resp.StatusCode)
	}
	return string(body), nil
}
