package robustness

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// FaultProxy forwards the TCP connections made to its address to a target
// address, and injects faults into what they carry. It is a userspace
// stand-in for tc netem (not available on these machines), so it works at
// the level of the byte stream, not of packets:
//
//   - Delay holds every chunk read from either side for that long before
//     writing it on; chunks keep their order, and throughput is not capped
//     (a chunk's delay starts when it is read, not when the one before it
//     is written).
//   - Loss is what packet loss looks like to a program over TCP: the bytes
//     all arrive, some late. Each chunk, with probability Loss, is held back
//     LossStall more (Linux's minimum retransmission timeout), and the rest
//     of its direction waits behind it. No byte is ever dropped: dropping
//     bytes from a TCP stream would corrupt it, which real loss never does.
//   - Stall forwards nothing until it is cleared: connections are still
//     accepted (and dialled on), their bytes are queued. It is a blackhole
//     for bytes, not for connection attempts.
//   - Cut closes every open connection at once, as a reset would.
//
// A chunk is what one read returns (up to 32 KiB), so it may be several
// TCP segments or part of one. The methods may be called from any goroutine.
type FaultProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	faults Faults
	wake   chan struct{} // closed and replaced when faults change
	rng    *rand.Rand
	conns  map[net.Conn]struct{}
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// Faults are what a FaultProxy injects; the zero value injects nothing.
type Faults struct {
	Delay time.Duration // added to every chunk, in each direction
	Loss  float64       // probability a chunk is held back LossStall more
	Stall bool          // forward nothing until cleared
}

func (f Faults) String() string {
	var parts []string
	if f.Delay > 0 {
		parts = append(parts, "delay "+f.Delay.String())
	}
	if f.Loss > 0 {
		parts = append(parts, fmt.Sprintf("loss %.0f%%", 100*f.Loss))
	}
	if f.Stall {
		parts = append(parts, "stall")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// LossStall is how long a "lost" chunk is held back: the minimum TCP
// retransmission timeout on Linux.
const LossStall = 200 * time.Millisecond

// chunkSize is the most one read forwards; queueLen chunks may wait in
// each direction before the proxy stops reading that side.
const (
	chunkSize = 32 << 10
	queueLen  = 256
)

// NewFaultProxy listens on listen (host:port) and forwards to target.
func NewFaultProxy(listen, target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("fault proxy: listen on %s: %w", listen, err)
	}
	p := &FaultProxy{
		ln: ln, target: target,
		wake:  make(chan struct{}),
		rng:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		conns: map[net.Conn]struct{}{},
		done:  make(chan struct{}),
	}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr returns the address the proxy listens on.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Set replaces the faults. Chunks already waiting keep the time they were
// given; a stall cleared lets them go at once.
func (p *FaultProxy) Set(f Faults) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
	close(p.wake)
	p.wake = make(chan struct{})
}

// Faults returns the faults in force.
func (p *FaultProxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Cut closes every connection open now; new ones are accepted as before.
func (p *FaultProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines to end.
func (p *FaultProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track records c as open, or reports false (and closes c) if the proxy
// has been closed.
func (p *FaultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *FaultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *FaultProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(in) {
			return
		}
		p.wg.Go(func() { p.serve(in) })
	}
}

// serve carries one connection until either side ends it.
func (p *FaultProxy) serve(in net.Conn) {
	defer p.untrack(in)
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return // the client sees its connection closed, as with a refusal
	}
	if !p.track(out) {
		return
	}
	defer p.untrack(out)
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(in, out) })
	wg.Go(func() { p.pump(out, in) })
	wg.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst through a queue that applies the faults. A clean
// end of src passes on as a half-close of dst; an error on either side
// closes both, which ends the other direction too.
func (p *FaultProxy) pump(src, dst net.Conn) {
	q := make(chan chunk, queueLen)
	var readErr error // set before q is closed
	go func() {
		defer close(q)
		var last time.Time
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				due := time.Now().Add(p.holdFor())
				if due.Before(last) {
					due = last // keep the order: nothing overtakes a held chunk
				}
				last = due
				select {
				case q <- chunk{data: buf[:n], due: due}:
				case <-p.done:
					readErr = net.ErrClosed
					return
				}
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	for c := range q {
		if !p.wait(c.due) {
			break
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	select {
	case _, open := <-q:
		if !open && errors.Is(readErr, io.EOF) {
			if tc, ok := dst.(*net.TCPConn); ok && tc.CloseWrite() == nil {
				return
			}
		}
	default:
	}
	// An error, or a write that failed with the reader still going: close
	// both (the reader returns), then let the reader finish.
	src.Close()
	dst.Close()
	for range q {
	}
}

// holdFor is how long a chunk read now is held back.
func (p *FaultProxy) holdFor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.faults.Delay
	if p.faults.Loss > 0 && p.rng.Float64() < p.faults.Loss {
		d += LossStall
	}
	return d
}

// wait returns once a chunk due at due may be written: its time has come
// and no stall is in force. It reports false if the proxy closed.
func (p *FaultProxy) wait(due time.Time) bool {
	for {
		p.mu.Lock()
		stall, wake := p.faults.Stall, p.wake
		p.mu.Unlock()
		if stall {
			select {
			case <-wake:
				continue
			case <-p.done:
				return false
			}
		}
		d := time.Until(due)
		if d <= 0 {
			return true
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-wake:
			t.Stop() // faults changed: look at the stall again
		case <-p.done:
			t.Stop()
			return false
		}
	}
}

// Fronts puts FaultProxies in front of every node of a cluster started
// with Options.Front set to its Front method. Node nK advertises 127.0.1.K;
// a proxy listens there on each of the node's TCP ports (API, peer, store,
// proxy) and forwards to the same port on 127.0.0.1, where the node
// listens. The cluster's own traffic between nodes (Raft, the store's
// clients, joins) therefore passes through the proxies, and faults set on
// the peer proxies act on Raft. The test's clients go to the nodes
// directly. Every link between two voters passes through exactly one peer
// proxy (the one in front of the node that was dialled), both directions.
type Fronts struct {
	t  testing.TB
	mu sync.Mutex
	// by node name; replaced when the node's ports are chosen again
	nodes map[string][]*FaultProxy // API, peer, store, proxy
}

// NewFronts returns an empty set of fronts; it closes them all when the
// test ends, after the cluster (register it before starting the cluster).
func NewFronts(t testing.TB) *Fronts {
	f := &Fronts{t: t, nodes: map[string][]*FaultProxy{}}
	t.Cleanup(f.close)
	return f
}

// Front is a clustertest.Options.Front: it starts nd's proxies and returns
// the IP nd advertises.
func (f *Fronts) Front(nd *clustertest.Node) string {
	f.t.Helper()
	k, err := strconv.Atoi(strings.TrimPrefix(nd.Name, "n"))
	if err != nil || k < 1 || k > 254 {
		f.t.Fatalf("fronts: node name %q: want n1 to n254", nd.Name)
	}
	ip := fmt.Sprintf("127.0.1.%d", k)
	ports := nd.Ports()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, old := range f.nodes[nd.Name] {
		old.Close()
	}
	var ps []*FaultProxy
	for _, port := range []int{ports.API, ports.Peer, ports.Store, ports.Proxy} {
		p, err := NewFaultProxy(net.JoinHostPort(ip, strconv.Itoa(port)), net.JoinHostPort(nd.Bind, strconv.Itoa(port)))
		if err != nil {
			for _, q := range ps {
				q.Close()
			}
			f.t.Fatalf("fronts for %s: %v", nd.Name, err)
		}
		ps = append(ps, p)
	}
	f.nodes[nd.Name] = ps
	return ip
}

// Peer returns the proxy in front of node name's peer (Raft) port.
func (f *Fronts) Peer(name string) *FaultProxy {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.nodes[name]
	if ps == nil {
		f.t.Fatalf("fronts: no node %s", name)
	}
	return ps[1]
}

// SetPeers sets the faults of every node's peer proxy.
func (f *Fronts) SetPeers(faults Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ps := range f.nodes {
		ps[1].Set(faults)
	}
}

func (f *Fronts) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ps := range f.nodes {
		for _, p := range ps {
			p.Close()
		}
	}
}
