package dns

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/view"
)

// fakeCatalog is a fixed catalog. It is not modified once a server reads
// it, so it is safe from any goroutine.
type fakeCatalog struct {
	services map[string][]registry.InstanceHealth
	nodes    []view.Node
}

func (c *fakeCatalog) Instances(svc string) []registry.InstanceHealth { return c.services[svc] }
func (c *fakeCatalog) Nodes() []view.Node                             { return c.nodes }

func inst(svc, id, addr string, port int, node, status string, tags ...string) registry.InstanceHealth {
	return registry.InstanceHealth{
		Instance: registry.Instance{ID: id, Service: svc, Address: addr, Port: port, Node: node, Tags: tags},
		Status:   status,
	}
}

// fixture is the catalog most tests read:
//
//	nodes n1 10.0.0.1, n2 10.0.0.2, n3 10.0.0.3 (dead), n6 fd00::6
//	web  passing on n1's own address (weight 5), on 10.0.1.2 and fd00::1;
//	     critical 10.0.1.3, warning 10.0.1.5
//	api  warning 10.0.2.1, critical 10.0.2.2
//	db   critical only
//	host passing on a host name and on 10.0.3.1
//	idle known, no instances
func fixture() *fakeCatalog {
	const P, W, C = registry.Passing, registry.Warning, registry.Critical
	web1 := inst("web", "w1", "10.0.0.1", 8080, "n1", P, "v1", "primary")
	web1.Weight = 5
	return &fakeCatalog{
		nodes: []view.Node{
			{Name: "n1", Addr: "10.0.0.1", Role: "voter", Alive: true},
			{Name: "n2", Addr: "10.0.0.2", Role: "voter", Alive: true},
			{Name: "n3", Addr: "10.0.0.3", Role: "voter", Alive: false},
			{Name: "n6", Addr: "fd00::6", Role: "client", Alive: true},
		},
		services: map[string][]registry.InstanceHealth{
			"web": {
				web1,
				inst("web", "w2", "10.0.1.2", 8080, "n2", P, "v2"),
				inst("web", "w3", "10.0.1.3", 8080, "n3", C, "v1", "old"),
				inst("web", "w4", "fd00::1", 9000, "n6", P, "v2"),
				inst("web", "w5", "10.0.1.5", 8080, "n2", W, "v1"),
			},
			"api": {
				inst("api", "a1", "10.0.2.1", 7000, "n1", W),
				inst("api", "a2", "10.0.2.2", 7000, "n2", C),
			},
			"db": {
				inst("db", "d1", "10.0.4.1", 5432, "n1", C),
			},
			"host": {
				inst("host", "h1", "db.example.com", 5432, "n1", P),
				inst("host", "h2", "10.0.3.1", 5432, "n2", P),
			},
			"idle": {},
		},
	}
}

// bigService adds a service of n passing IPv4 instances named svc.
func (c *fakeCatalog) bigService(svc string, n int) {
	for i := range n {
		addr := fmt.Sprintf("10.100.%d.%d", i/256, i%256)
		c.services[svc] = append(c.services[svc], inst(svc, fmt.Sprint(i), addr, 8000+i, "n1", registry.Passing))
	}
}

// testLogger routes logs to t.Log until the test ends; benchmarks, which
// print their logs, get none.
func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

var _ io.Writer = (*testWriter)(nil)

// start runs a server on 127.0.0.1:0 until the test ends and returns it
// once it listens.
func start(t testing.TB, cfg Config, cat Catalog) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, cat, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of its context ending")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server not ready within 5s")
	}
	return s
}

// ask sends one question to addr over network ("udp" or "tcp"). With
// ednsSize > 0 the query carries an OPT record with that UDP size.
func ask(t testing.TB, addr, network, name string, qtype uint16, ednsSize uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	return exchange(t, addr, network, m)
}

func exchange(t testing.TB, addr, network string, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, m.Question[0].Name, mdns.TypeToString[m.Question[0].Qtype], err)
	}
	if r.Id != m.Id {
		t.Fatalf("answer id %d, query id %d", r.Id, m.Id)
	}
	return r
}

// rdata is the record without its header, as in a zone file: "10.0.0.1",
// "1 5 8080 n1.node.tandem.".
func rdata(rr mdns.RR) string {
	return strings.TrimSpace(strings.TrimPrefix(rr.String(), rr.Header().String()))
}

// rdatas returns the sorted rdata of rrs, leaving out OPT records.
func rdatas(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype != mdns.TypeOPT {
			out = append(out, rdata(rr))
		}
	}
	slices.Sort(out)
	return out
}

// records returns "name type rdata" of rrs, sorted, leaving out OPT records.
func records(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if h := rr.Header(); h.Rrtype != mdns.TypeOPT {
			out = append(out, h.Name+" "+mdns.TypeToString[h.Rrtype]+" "+rdata(rr))
		}
	}
	slices.Sort(out)
	return out
}
