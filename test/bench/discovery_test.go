package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
)

// BenchmarkRegister measures instance registrations per second through the
// HTTP API of a 3-node process cluster, at 1 and 64 concurrent clients,
// spread over the nodes. Each registration is a new instance (no checks,
// initial state passing), so the owner's runner also writes its health.
func BenchmarkRegister(b *testing.B) {
	c := startCluster(b)
	var clients []*client.Client
	for _, nd := range c.Nodes {
		clients = append(clients, nd.Client())
	}
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("c=%d", n), func(b *testing.B) {
			round := time.Now().UnixNano()
			measure(b, n, func(w, i int) error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err := clients[w%3].Register(ctx, registry.Instance{
					Service: fmt.Sprintf("reg-%d", w%10), ID: fmt.Sprintf("r%d-%d-%d", round, w, i),
					Address: "127.0.0.1", Port: 1 + i%65000, InitialState: registry.Passing,
				})
				return err
			})
		})
	}
}

// BenchmarkViewPropagation measures how long a committed health change
// takes to show in every node's local view (3 nodes in-process, so one
// clock times all of them). Reported: write latency (Put issued → answered)
// and propagation (Put issued → the last view shows it), p50 and p99.
func BenchmarkViewPropagation(b *testing.B) {
	c := clustertest.Start(b, 3, clustertest.Options{})
	ctx := context.Background()
	if _, err := c.Nodes[0].Client().Register(ctx, registry.Instance{Service: "prop", ID: "p1", Address: "127.0.0.1", Port: 1, InitialState: registry.Passing}); err != nil {
		b.Fatal(err)
	}
	cl := c.Nodes[1].Agent().Store().Client()
	var writes, props []time.Duration
	const changes = 300
	for i := range changes {
		status := []string{registry.Warning, registry.Passing}[i%2]
		val, _ := json.Marshal(registry.Health{Status: status, Node: "n1", Since: time.Now()})
		seen := make([]time.Time, len(c.Nodes))
		var wg sync.WaitGroup
		for n, nd := range c.Nodes {
			v := nd.Agent().View()
			wg.Go(func() {
				deadline := time.After(5 * time.Second)
				for {
					ch := v.Changed()
					if ins := v.Instances("prop"); len(ins) == 1 && ins[0].Status == status {
						seen[n] = time.Now()
						return
					}
					select {
					case <-ch:
					case <-deadline:
						return
					}
				}
			})
		}
		t0 := time.Now()
		if _, err := cl.Put(ctx, keys.HealthKey("prop", "p1"), string(val)); err != nil {
			b.Fatal(err)
		}
		writes = append(writes, time.Since(t0))
		wg.Wait()
		last := time.Duration(0)
		for n, s := range seen {
			if s.IsZero() {
				b.Fatalf("change %d never reached %s's view", i, c.Nodes[n].Name)
			}
			last = max(last, s.Sub(t0))
		}
		props = append(props, last)
	}
	slices.Sort(writes)
	slices.Sort(props)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(percentile(writes, 0.5)), "write_p50_ms")
	b.ReportMetric(ms(percentile(writes, 0.99)), "write_p99_ms")
	b.ReportMetric(ms(percentile(props, 0.5)), "prop_p50_ms")
	b.ReportMetric(ms(percentile(props, 0.99)), "prop_p99_ms")
}

// BenchmarkDNSQuery measures DNS queries per second answered by one node
// (from its local view) over UDP, with 10 services of 10 passing instances,
// at 1 and 16 concurrent clients, A and SRV alternating.
func BenchmarkDNSQuery(b *testing.B) {
	c := startCluster(b)
	ctx := context.Background()
	cl := c.Nodes[0].Client()
	for s := range 10 {
		for i := range 10 {
			if _, err := cl.Register(ctx, registry.Instance{Service: fmt.Sprintf("dns-%d", s), ID: fmt.Sprintf("d%d-%d", s, i),
				Address: fmt.Sprintf("10.0.%d.%d", s, i+1), Port: 8000 + i, InitialState: registry.Passing}); err != nil {
				b.Fatal(err)
			}
		}
	}
	server := c.Nodes[1].DNS
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("c=%d", n), func(b *testing.B) {
			conns := make([]*mdns.Conn, n)
			for w := range conns {
				conn, err := mdns.Dial("udp", server)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				conns[w] = conn
			}
			measure(b, n, func(w, i int) error {
				m := new(mdns.Msg)
				qtype := []uint16{mdns.TypeA, mdns.TypeSRV}[i%2]
				m.SetQuestion(fmt.Sprintf("dns-%d.service.tandem.", i%10), qtype)
				conn := conns[w]
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
				if err := conn.WriteMsg(m); err != nil {
					return err
				}
				r, err := conn.ReadMsg()
				if err != nil {
					return err
				}
				if len(r.Answer) != 10 {
					return fmt.Errorf("%d answers", len(r.Answer))
				}
				return nil
			})
		})
	}
}

// BenchmarkDetection measures, over bench.runs runs each, how long a dead
// instance (its HTTP server closed: connections refused), a dead follower's
// node and a dead store leader's node (kill -9) take to leave DNS on every
// other node. Goals: interval 1 s × 2 failures + 0.5 s = 2.5 s for an
// instance, 2 s for a node (DESIGN.md).
func BenchmarkDetection(b *testing.B) {
	c := startCluster(b)
	ctx := context.Background()
	check := []registry.Check{{Type: registry.CheckHTTP, HTTP: "/", Interval: config.Duration(time.Second)}}
	serve := func() *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	}
	portOf := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }
	register := func(nd *clustertest.Node, id string, port int) {
		if _, err := nd.Client().Register(ctx, registry.Instance{Service: "det", ID: id, Address: "127.0.0.1", Port: port, Checks: check}); err != nil {
			b.Fatal(err)
		}
	}
	// waitGone polls every 20 ms until port is absent from every listed
	// node's SRV answer, and returns when that was.
	waitGone := func(nodes []*clustertest.Node, port int) time.Time {
		err := clustertest.Poll(30*time.Second, func() error {
			for _, nd := range nodes {
				ports, err := srvPorts(nd.DNS, "det")
				if err != nil || slices.Contains(ports, port) {
					return fmt.Errorf("%s still serves %d (%v)", nd.Name, port, err)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return time.Now()
	}
	waitServed := func(nodes []*clustertest.Node, port int) {
		if err := clustertest.Poll(30*time.Second, func() error {
			for _, nd := range nodes {
				ports, err := srvPorts(nd.DNS, "det")
				if err != nil || !slices.Contains(ports, port) {
					return fmt.Errorf("%s does not serve %d yet (%v)", nd.Name, port, err)
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}

	var instance []time.Duration
	for run := range *runs {
		s := serve()
		register(c.Nodes[run%3], fmt.Sprintf("inst-%d", run), portOf(s))
		waitServed(c.Nodes, portOf(s))
		t0 := time.Now()
		s.Close()
		instance = append(instance, waitGone(c.Nodes, portOf(s)).Sub(t0))
		_ = c.Nodes[run%3].Client().Deregister(ctx, "det", fmt.Sprintf("inst-%d", run))
	}
	// A follower's node, then the store leader's node: etcd renews every
	// lease when leadership moves, so without the death watch's probes the
	// leader's instances would stay a TTL after the election.
	killNode := func(run int, leader bool) time.Duration {
		st, err := c.Status()
		if err != nil {
			b.Fatal(err)
		}
		var victim *clustertest.Node
		for _, nd := range c.Nodes {
			if (nd.Name == st.Leader) == leader {
				victim = nd
			}
		}
		var others []*clustertest.Node
		for _, nd := range c.Nodes {
			if nd != victim {
				others = append(others, nd)
			}
		}
		id := fmt.Sprintf("node-%v-%d", leader, run)
		s := serve()
		register(victim, id, portOf(s))
		waitServed(c.Nodes, portOf(s))
		t0 := time.Now()
		victim.Kill()
		took := waitGone(others, portOf(s)).Sub(t0)
		s.Close()
		victim.Restart()
		c.WaitHealthy()
		_ = others[0].Client().Deregister(ctx, "det", id)
		return took
	}
	var node, leaderNode []time.Duration
	for run := range *runs {
		node = append(node, killNode(run, false))
	}
	for run := range *runs {
		leaderNode = append(leaderNode, killNode(run, true))
	}
	slices.Sort(instance)
	slices.Sort(node)
	slices.Sort(leaderNode)
	b.Logf("dead instance → gone from DNS: %v", instance)
	b.Logf("dead node → gone from DNS: %v", node)
	b.Logf("dead store leader's node → gone from DNS: %v", leaderNode)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ms(median(instance)), "instance_median_ms")
	b.ReportMetric(ms(instance[len(instance)-1]), "instance_max_ms")
	b.ReportMetric(ms(median(node)), "node_median_ms")
	b.ReportMetric(ms(node[len(node)-1]), "node_max_ms")
	b.ReportMetric(ms(median(leaderNode)), "leader_node_median_ms")
	b.ReportMetric(ms(leaderNode[len(leaderNode)-1]), "leader_node_max_ms")
}

// srvPorts returns the ports in a node's SRV answer for svc.
func srvPorts(server, svc string) ([]int, error) {
	m := new(mdns.Msg)
	m.SetQuestion(svc+".service.tandem.", mdns.TypeSRV)
	r, _, err := (&mdns.Client{Net: "udp", Timeout: time.Second}).Exchange(m, server)
	if err != nil {
		return nil, err
	}
	var ports []int
	for _, rr := range r.Answer {
		if srv, ok := rr.(*mdns.SRV); ok {
			ports = append(ports, int(srv.Port))
		}
	}
	return ports, nil
}
