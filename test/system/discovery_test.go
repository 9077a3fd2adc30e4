package system

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
)

// srvPorts asks a node's DNS server for the SRV records of svc and returns
// the ports, sorted.
func srvPorts(server, svc string) ([]int, error) {
	m := new(mdns.Msg)
	m.SetQuestion(svc+".service.tandem.", mdns.TypeSRV)
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return nil, err
	}
	if r.Rcode != mdns.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", mdns.RcodeToString[r.Rcode])
	}
	var ports []int
	for _, rr := range r.Answer {
		if srv, ok := rr.(*mdns.SRV); ok {
			ports = append(ports, int(srv.Port))
		}
	}
	slices.Sort(ports)
	return ports, nil
}

// waitDNS waits until every listed node's DNS serves exactly ports for svc
// and returns how long that took.
func waitDNS(t *testing.T, c *clustertest.Cluster, nodes []*clustertest.Node, svc string, ports []int, timeout time.Duration) time.Duration {
	t.Helper()
	want := slices.Clone(ports)
	slices.Sort(want)
	start := time.Now()
	c.Eventually(timeout, fmt.Sprintf("%s serves %v in DNS on every node", svc, want), func() error {
		for _, nd := range nodes {
			got, err := srvPorts(nd.DNS, svc)
			if err != nil {
				return fmt.Errorf("%s: %v", nd.Name, err)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s serves %v", nd.Name, got)
			}
		}
		return nil
	})
	return time.Since(start)
}

func httpCheck() []registry.Check {
	return []registry.Check{{Type: registry.CheckHTTP, HTTP: "/healthz", Interval: config.Duration(time.Second)}}
}

// TestDiscoveryUnderFailures registers one real backend per node and checks
// DNS on every node as instances and nodes die and come back.
func TestDiscoveryUnderFailures(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	ctx := ctxT(t, 3*time.Minute)
	var backends []*clustertest.Backend
	var ports []int
	for i, nd := range c.Nodes {
		b := clustertest.StartBackend(t, fmt.Sprintf("web-%d", i+1))
		backends = append(backends, b)
		ports = append(ports, b.Port)
		if _, err := nd.Client().Register(ctx, registry.Instance{Service: "web", ID: b.Name, Address: "127.0.0.1", Port: b.Port, Checks: httpCheck()}); err != nil {
			t.Fatalf("register %s through %s: %v", b.Name, nd.Name, err)
		}
	}
	waitDNS(t, c, c.Nodes, "web", ports, 30*time.Second)

	// A dead instance turns critical and leaves DNS everywhere (goal:
	// interval 1 s × 2 failures + 0.5 s).
	backends[1].Kill()
	took := waitDNS(t, c, c.Nodes, "web", []int{ports[0], ports[2]}, 15*time.Second)
	t.Logf("dead instance left DNS on every node after %s (goal 2.5s)", took.Round(time.Millisecond))
	d, err := c.Client().Service(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range d.Instances {
		if in.ID == "web-2" && (in.Status != registry.Critical || in.Output == "") {
			t.Fatalf("dead instance: status %s output %q, want critical with the check's output", in.Status, in.Output)
		}
	}

	// It comes back when it recovers.
	backends[1].Restart()
	waitDNS(t, c, c.Nodes, "web", ports, 15*time.Second)

	// A dead node's instances leave every other node's DNS (goal: lease TTL
	// 2 s + 0.5 s).
	c.Nodes[2].Kill()
	took = waitDNS(t, c, c.Nodes[:2], "web", ports[:2], 15*time.Second)
	t.Logf("dead node's instance left DNS on the other nodes after %s (goal 2.5s)", took.Round(time.Millisecond))

	// The real dig agrees.
	out, err := exec.Command("dig", "@127.0.0.1", "-p", strings.Split(c.Nodes[0].DNS, ":")[1], "web.service.tandem.", "SRV", "+short").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v: %s (install dnsutils)", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.Contains(string(out), fmt.Sprint(ports[0])) || !strings.Contains(string(out), fmt.Sprint(ports[1])) {
		t.Fatalf("dig SRV: %q, want the two live instances", out)
	}
	out, err = exec.Command("dig", "@127.0.0.1", "-p", strings.Split(c.Nodes[0].DNS, ":")[1], "lb.tandem.", "A", "+short").CombinedOutput()
	// Cut n1 off from the majority (n3 is dead; freeze n2): its DNS keeps
	// answering from the last known view.
	c.Nodes[1].Stop()
	lastKnown := slices.Sorted(slices.Values(ports[:2]))
	for i := 0; i < 5; i++ {
		got, err := srvPorts(c.Nodes[0].DNS, "web")
		if err != nil || !slices.Equal(got, lastKnown) {
			t.Fatalf("DNS in a minority partition: %v %v, want the last known %v", got, err, lastKnown)
		}
	}
	c.Nodes[1].Cont()

	// Every node advertises 127.0.0.1 here, so the live nodes' addresses
	// collapse into one record (the DNS tests cover distinct addresses).
	if err != nil || strings.TrimSpace(string(out)) != "127.0.0.1" {
		t.Fatalf("dig lb.tandem.: %v %q, want the live nodes' address", err, out)
	}
}

// TestTTLCheck: an instance renewed through the API passes; it turns
// critical when renewals stop.
func TestTTLCheck(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	ctx := ctxT(t, time.Minute)
	cl := c.Client()
	in := registry.Instance{Service: "job", ID: "job-1", Address: "127.0.0.1", Port: 9,
		Checks: []registry.Check{{Type: registry.CheckTTL, TTL: config.Duration(time.Second), FailuresBeforeCritical: 1}}}
	if _, err := cl.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	status := func() string {
		d, err := cl.Service(ctx, "job")
		if err != nil || len(d.Instances) != 1 {
			return fmt.Sprint(err)
		}
		return d.Instances[0].Status
	}
	if s := status(); s != registry.Critical {
		t.Fatalf("before any renewal: %s, want critical", s)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			_ = cl.RenewTTL(ctx, "job", "job-1", "passing", "alive")
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	c.Eventually(10*time.Second, "passing while renewed", func() error {
		if s := status(); s != registry.Passing {
			return fmt.Errorf("%s", s)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	c.Eventually(10*time.Second, "critical once renewals stop", func() error {
		if s := status(); s != registry.Critical {
			return fmt.Errorf("%s", s)
		}
		return nil
	})
}

// TestRegistrationRules: every bad registration gets a 400 naming the
// problem and changes nothing; an exec check over the API is refused.
func TestRegistrationRules(t *testing.T) {
	c := clustertest.Start(t, 2, clustertest.Options{Voters: 1})
	ctx := ctxT(t, time.Minute)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	if _, err := n1.Client().Register(ctx, registry.Instance{Service: "api", ID: "api-1", Address: "127.0.0.1", Port: 8080, InitialState: registry.Passing}); err != nil {
		t.Fatal(err)
	}
	before, err := n1.Client().Services(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	good := registry.Instance{Service: "api", ID: "api-2", Address: "127.0.0.1", Port: 8081}
	tests := []struct {
		name string
		via  *clustertest.Node
		edit func(*registry.Instance)
		want string
	}{
		{"port 0", n1, func(in *registry.Instance) { in.Port = 0 }, "port 0"},
		{"port over 65535", n1, func(in *registry.Instance) { in.Port = 70000 }, "port 70000"},
		{"invalid service name", n1, func(in *registry.Instance) { in.Service = "Bad_Name" }, "service name"},
		{"service name too long", n1, func(in *registry.Instance) { in.Service = strings.Repeat("a", 64) }, "service name"},
		{"invalid id", n1, func(in *registry.Instance) { in.ID = "-x-" }, "instance id"},
		{"empty address", n1, func(in *registry.Instance) { in.Address = "" }, "address is empty"},
		{"unknown check type", n1, func(in *registry.Instance) { in.Checks = []registry.Check{{Type: "ping"}} }, "unknown check type \"ping\""},
		{"interval below 100ms", n1, func(in *registry.Instance) {
			in.Checks = []registry.Check{{Type: registry.CheckTCP, Interval: config.Duration(50 * time.Millisecond)}}
		}, "below the minimum of 100ms"},
		{"exec check over the API", n1, func(in *registry.Instance) {
			in.Checks = []registry.Check{{Type: registry.CheckExec, Command: []string{"/bin/true"}}}
		}, "--enable-exec-checks"},
		{"duplicate id owned by another node", n2, func(in *registry.Instance) { in.ID = "api-1" }, "owned by node n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good
			tt.edit(&in)
			_, err := tt.via.Client().Register(ctx, in)
			if !client.IsStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want 400 saying %q, got %v", tt.want, err)
			}
		})
	}
	// The same registration again, through the other node, succeeds and
	// leaves the instance with its owner (running a file twice is safe).
	same, err := n2.Client().Register(ctx, registry.Instance{Service: "api", ID: "api-1", Address: "127.0.0.1", Port: 8080, InitialState: registry.Passing})
	if err != nil || same.Node != "n1" {
		t.Fatalf("the same registration through n2: want success owned by n1, got %+v, %v", same, err)
	}
	// An empty instance id.
	req, _ := http.NewRequest(http.MethodPut, n1.URL("/v1/services/api/instances/"), strings.NewReader(`{"address":"127.0.0.1","port":1}`))
	resp, err := c.HTTP().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty instance id: status %d, want 400", resp.StatusCode)
	}
	after, err := n1.Client().Services(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := json.Marshal(before.Services)
	b2, _ := json.Marshal(after.Services)
	if string(b1) != string(b2) {
		t.Fatalf("bad registrations changed the catalog:\nbefore %s\nafter  %s", b1, b2)
	}
	d, err := n1.Client().Service(ctx, "api")
	if err != nil || len(d.Instances) != 1 || d.Instances[0].Node != "n1" {
		t.Fatalf("api-1 must still be n1's only instance: %v %+v", err, d)
	}
}

// TestThousandInstancesViewsMatchStore registers and deregisters 1,000
// instances through three nodes and checks every node's view equals the
// store.
func TestThousandInstancesViewsMatchStore(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{})
	ctx := ctxT(t, 5*time.Minute)
	const n = 1000
	// inParallel runs f for 0..n-1 on 16 workers spread over the nodes and
	// fails the test if any call failed.
	inParallel := func(what string, f func(cl *client.Client, i int) error) {
		t.Helper()
		work := make(chan int)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for w := 0; w < 16; w++ {
			cl := c.Nodes[w%3].Client()
			wg.Go(func() {
				for i := range work {
					if err := f(cl, i); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			})
		}
		for i := 0; i < n; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d %s failed, first: %v", len(errs), what, errs[0])
		}
	}
	inParallel("registrations", func(cl *client.Client, i int) error {
		_, err := cl.Register(ctx, registry.Instance{Service: fmt.Sprintf("svc-%d", i%10), ID: fmt.Sprintf("i-%04d", i),
			Address: "127.0.0.1", Port: 10000 + i, InitialState: registry.Passing})
		return err
	})
	compare := func(want int) {
		t.Helper()
		c.Eventually(30*time.Second, fmt.Sprintf("every view equals the store (%d instances)", want), func() error {
			resp, err := c.Nodes[0].Agent().Store().Client().Get(ctx, keys.InstancesPrefix, clientv3.WithPrefix())
			if err != nil {
				return err
			}
			inStore := map[string]string{}
			for _, kv := range resp.Kvs {
				inStore[strings.TrimPrefix(string(kv.Key), keys.InstancesPrefix)] = string(kv.Value)
			}
			if len(inStore) != want {
				return fmt.Errorf("store has %d instances", len(inStore))
			}
			for _, nd := range c.Nodes {
				v := nd.Agent().View().All()
				if len(v) != len(inStore) {
					return fmt.Errorf("%s's view has %d instances, the store %d", nd.Name, len(v), len(inStore))
				}
				for k, in := range v {
					b, _ := json.Marshal(in)
					if inStore[k] != string(b) {
						return fmt.Errorf("%s's view differs at %s:\n view  %s\n store %s", nd.Name, k, b, inStore[k])
					}
				}
			}
			return nil
		})
	}
	compare(n)
	inParallel("deregistrations", func(cl *client.Client, i int) error {
		return cl.Deregister(ctx, fmt.Sprintf("svc-%d", i%10), fmt.Sprintf("i-%04d", i))
	})
	compare(0)
}
