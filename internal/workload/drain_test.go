package workload

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/keys"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/store"
)

// testStore starts a one-member store for the test.
func testStore(t *testing.T) *store.Store {
	t.Helper()
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	m, err := store.StartMember(ctx, store.MemberConfig{
		Name: "t", Dir: filepath.Join(t.TempDir(), "store"), BindIP: "127.0.0.1",
		PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		PeerPort: ports[0], StorePort: ports[1], Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	st, err := store.NewLocal(m, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// alive makes node alive with a lease of its own, and returns the lease.
func alive(t *testing.T, c *clientv3.Client, node string) clientv3.LeaseID {
	t.Helper()
	ctx := context.Background()
	l, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, keys.AliveKey(node), "", clientv3.WithLease(l.ID)); err != nil {
		t.Fatal(err)
	}
	return l.ID
}

// TestAwaitAcks: the stopping node waits for every alive node's
// acknowledgement; a node whose lease ends stops counting, and the
// timeout says who did not answer.
func TestAwaitAcks(t *testing.T) {
	st := testStore(t)
	c := st.Client()
	ctx := context.Background()
	alive(t, c, "n1")
	alive(t, c, "n2")
	n3 := alive(t, c, "n3")
	ack := func(node string) {
		if _, err := c.Put(ctx, keys.DrainAckKey("a1", node), ""); err != nil {
			t.Fatal(err)
		}
	}
	ack("n1")

	type result struct{ acked, missing []string }
	done := make(chan result, 1)
	go func() {
		acked, missing := awaitAcks(ctx, st.Client, "a1")
		done <- result{acked, missing}
	}()
	ack("n2")
	select {
	case r := <-done:
		t.Fatalf("returned with n3 alive and silent: %+v", r)
	case <-time.After(100 * time.Millisecond): // it keeps waiting
	}
	if _, err := c.Revoke(ctx, n3); err != nil { // n3 dies
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if !slices.Equal(r.acked, []string{"n1", "n2"}) || len(r.missing) != 0 {
			t.Fatalf("awaitAcks = %v, %v; want [n1 n2], none", r.acked, r.missing)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the silent node's lease ended")
	}

	// A node that never answers: the timeout ends the wait, naming it.
	alive(t, c, "n4")
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	acked, missing := awaitAcks(tctx, st.Client, "a1")
	if !slices.Equal(acked, []string{"n1", "n2"}) || !slices.Equal(missing, []string{"n4"}) {
		t.Fatalf("after the timeout: acked %v, missing %v; want [n1 n2], [n4]", acked, missing)
	}
}

// fakeView and fakeProxy stand for a node's view and proxy.
type fakeView struct {
	mu  sync.Mutex
	has bool
	rev int64
	ch  chan struct{}
}

func (v *fakeView) Instance(svc, id string) (registry.Instance, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return registry.Instance{}, v.has
}

func (v *fakeView) Revision() (int64, time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev, time.Time{}
}

func (v *fakeView) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ch
}

func (v *fakeView) set(f func(v *fakeView)) {
	v.mu.Lock()
	f(v)
	close(v.ch)
	v.ch = make(chan struct{})
	v.mu.Unlock()
}

type fakeProxy struct {
	mu       sync.Mutex
	routed   bool
	inflight int64
}

func (p *fakeProxy) Routing(svc, id string) (bool, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.routed, p.inflight
}

// TestDrainAcker: a node acknowledges a drain only once its view has
// reached the request and dropped the instance and its proxy has nothing
// in flight to it; the ack is bound to its lease and written again under
// a new one.
func TestDrainAcker(t *testing.T) {
	st := testStore(t)
	c := st.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lease := alive(t, c, "n1")
	var leaseMu sync.Mutex
	leaseCh := make(chan struct{})
	view := &fakeView{has: true, ch: make(chan struct{})}
	px := &fakeProxy{routed: true, inflight: 2}
	d, err := NewDrainAcker(DrainAckerConfig{
		Store: st, Node: "n1", View: view, Proxy: px,
		Lease: func() (clientv3.LeaseID, <-chan struct{}) {
			leaseMu.Lock()
			defer leaseMu.Unlock()
			return lease, leaseCh
		},
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	resp, err := c.Put(ctx, keys.DrainRequestKey("a1"), `{"service":"web","instance":"a1","node":"n2"}`)
	if err != nil {
		t.Fatal(err)
	}
	ackLease := func() clientv3.LeaseID {
		r, err := c.Get(ctx, keys.DrainAckKey("a1", "n1"))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(r.Kvs[0].Lease)
	}
	notYet := func(why string) {
		t.Helper()
		time.Sleep(3 * drainPoll) // a few polls: nothing may be written
		if l := ackLease(); l != 0 {
			t.Fatalf("acknowledged while %s", why)
		}
	}
	notYet("the view is behind the request")
	view.set(func(v *fakeView) { v.rev = resp.Header.Revision })
	notYet("the view holds the instance")
	view.set(func(v *fakeView) { v.has = false })
	notYet("the proxy routes to it")
	px.mu.Lock()
	px.routed = false
	px.mu.Unlock()
	notYet("two requests are in flight")
	px.mu.Lock()
	px.inflight = 0
	px.mu.Unlock()
	waitUntil(t, "the ack", func() bool { return ackLease() == lease })

	// A new lease (the old one lost): the ack is written again under it.
	l2, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	leaseMu.Lock()
	old := lease
	lease = l2.ID
	close(leaseCh)
	leaseCh = make(chan struct{})
	leaseMu.Unlock()
	if _, err := c.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the ack under the new lease", func() bool { return ackLease() == l2.ID })
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
