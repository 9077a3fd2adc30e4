package robustness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
//   - HoldFrom and HoldTo stall only the connections of some clients, one
//     direction each: the proxy names each connection's client with the
//     identify function it was made with (Fronts names the node process
//     that owns the dialling socket). This is how Fronts partitions nodes
//     without network namespaces.
//
// A chunk is what one read returns (up to 32 KiB), so it may be several
// TCP segments or part of one. The methods may be called from any goroutine.
type FaultProxy struct {
	ln       net.Listener
	target   string
	identify func(conn net.Conn) string

	mu     sync.Mutex
	faults Faults
	wake   chan struct{} // closed and replaced when faults change
	rng    *rand.Rand
	conns  map[net.Conn]struct{}
	held   int64 // bytes read while their direction was stalled or held
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// Faults are what a FaultProxy injects; the zero value injects nothing.
// The maps are not changed once given to Set.
type Faults struct {
	Delay time.Duration // added to every chunk, in each direction
	Loss  float64       // probability a chunk is held back LossStall more
	Stall bool          // forward nothing until cleared
	// HoldFrom holds the bytes sent by the clients named, HoldTo the bytes
	// sent to them, until cleared. Clients are named by identify.
	HoldFrom, HoldTo map[string]bool
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
	for _, m := range []struct {
		what  string
		names map[string]bool
	}{{"hold from", f.HoldFrom}, {"hold to", f.HoldTo}} {
		var names []string
		for n, on := range m.names {
			if on {
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			sort.Strings(names)
			parts = append(parts, m.what+" "+strings.Join(names, " "))
		}
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
// identify, if not nil, names the client of each connection it accepts
// (called once, while the connection is forwarded; until it has answered,
// the connection's bytes are held whenever any client is held), for
// HoldFrom and HoldTo; "" names no one.
func NewFaultProxy(listen, target string, identify func(conn net.Conn) string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("fault proxy: listen on %s: %w", listen, err)
	}
	p := &FaultProxy{
		ln: ln, target: target, identify: identify,
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
	p.faults = f
	p.mu.Unlock()
	p.nudge()
}

// Faults returns the faults in force.
func (p *FaultProxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Held returns how many bytes have arrived while their direction was
// stalled or held, so far: bytes the faults kept back.
func (p *FaultProxy) Held() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
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
	// The client is named off the connection's path: identify reads
	// /proc, which on a loaded machine with many sockets takes long enough
	// to time out a TLS handshake held behind it (and the redials that
	// follow make it slower still). Until it is named, its bytes are held
	// only while some client is held.
	var client atomic.Pointer[string]
	if p.identify == nil {
		client.Store(new(string))
	} else {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			name := p.identify(in)
			client.Store(&name)
			p.nudge()
		})
	}
	holds := func(m map[string]bool) bool {
		if c := client.Load(); c != nil {
			return m[*c]
		}
		return len(m) > 0
	}
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return // the client sees its connection closed, as with a refusal
	}
	if !p.track(out) {
		return
	}
	defer p.untrack(out)
	var wg sync.WaitGroup
	wg.Go(func() { p.pump(in, out, func(f *Faults) bool { return f.Stall || holds(f.HoldFrom) }) })
	wg.Go(func() { p.pump(out, in, func(f *Faults) bool { return f.Stall || holds(f.HoldTo) }) })
	wg.Wait()
}

// nudge wakes the chunks waiting on a hold, to check it again.
func (p *FaultProxy) nudge() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.wake)
	p.wake = make(chan struct{})
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst through a queue that applies the faults. A clean
// end of src passes on as a half-close of dst; an error on either side
// closes both, which ends the other direction too.
// held says whether the faults hold this direction's bytes.
func (p *FaultProxy) pump(src, dst net.Conn, held func(*Faults) bool) {
	q := make(chan chunk, queueLen)
	var readErr error // set before q is closed
	go func() {
		defer close(q)
		var last time.Time
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				due := time.Now().Add(p.holdFor(n, held))
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
		if !p.wait(c.due, held) {
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

// holdFor is how long a chunk of n bytes read now is held back by delay
// and loss; it counts the bytes if held says the direction is held.
func (p *FaultProxy) holdFor(n int, held func(*Faults) bool) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if held(&p.faults) {
		p.held += int64(n)
	}
	d := p.faults.Delay
	if p.faults.Loss > 0 && p.rng.Float64() < p.faults.Loss {
		d += LossStall
	}
	return d
}

// wait returns once a chunk due at due may be written: its time has come
// and held says no. It reports false if the proxy closed.
func (p *FaultProxy) wait(due time.Time, held func(*Faults) bool) bool {
	for {
		p.mu.Lock()
		stall, wake := held(&p.faults), p.wake
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
// listens. Everything sent to a node passes through its proxies: the
// cluster's own traffic (Raft, store clients, joins) and the test's clients.
// Every link between two voters passes through exactly one peer proxy (the
// one in front of the node that was dialled), both directions.
//
// Link faults (SetPeers) act on the peer proxies. Partitions (Isolate,
// PartitionOneWay, Blackhole) act on every proxy: a proxy names the node
// that dialled it by finding, in /proc, the process that owns the dialling
// socket, and holds the bytes the partition forbids. The methods may be
// called from any goroutine.
type Fronts struct {
	t  testing.TB
	mu sync.Mutex
	// by node name; replaced when the node's ports are chosen again
	nodes map[string]*front
	link  Faults // on every peer proxy
	// partitions: for each front, the nodes whose bytes to it (holdFrom)
	// or from it (holdTo) are held; stalled fronts hold everything.
	holdFrom, holdTo map[string]map[string]bool
	stalled          map[string]bool
}

type front struct {
	nd      *clustertest.Node
	proxies []*FaultProxy // API, peer, store, proxy
}

// NewFronts returns an empty set of fronts; it closes them all when the
// test ends, after the cluster (register it before starting the cluster).
func NewFronts(t testing.TB) *Fronts {
	f := &Fronts{t: t, nodes: map[string]*front{}}
	f.clearPartitions()
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
	// Old proxies close outside the lock: their goroutines may be waiting
	// for it in identify.
	f.mu.Lock()
	old := f.nodes[nd.Name]
	delete(f.nodes, nd.Name)
	f.mu.Unlock()
	if old != nil {
		for _, p := range old.proxies {
			p.Close()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fr := &front{nd: nd}
	for _, port := range []int{ports.API, ports.Peer, ports.Store, ports.Proxy} {
		p, err := NewFaultProxy(net.JoinHostPort(ip, strconv.Itoa(port)), net.JoinHostPort(nd.Bind, strconv.Itoa(port)), f.identify)
		if err != nil {
			for _, q := range fr.proxies {
				q.Close()
			}
			f.t.Fatalf("fronts for %s: %v", nd.Name, err)
		}
		fr.proxies = append(fr.proxies, p)
	}
	f.nodes[nd.Name] = fr
	f.applyLocked()
	return ip
}

// SetPeers sets the link faults (delay, loss) of every node's peer proxy.
func (f *Fronts) SetPeers(faults Faults) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.link = Faults{Delay: faults.Delay, Loss: faults.Loss}
	f.applyLocked()
}

// Isolate holds every byte between nd and the other nodes, both ways;
// the test's clients still reach it.
func (f *Fronts) Isolate(nd string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for o := range f.nodes {
		if o != nd {
			f.holdFrom[o][nd], f.holdTo[o][nd] = true, true
			f.holdFrom[nd][o], f.holdTo[nd][o] = true, true
		}
	}
	f.applyLocked()
}

// PartitionOneWay holds every byte node from sends to node to; bytes from
// to to from still pass. Unlike the nftables fault it holds messages, not
// packets: from's TCP acknowledgements still flow, so to's messages arrive.
func (f *Fronts) PartitionOneWay(from, to string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdFrom[to][from] = true // on connections from dialled to
	f.holdTo[from][to] = true   // on connections to dialled from
	f.applyLocked()
}

// Blackhole holds every byte to or from nd, the test's clients' too. A
// client's connection is still accepted (then hangs), where a real
// blackhole would let it time out.
func (f *Fronts) Blackhole(nd string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalled[nd] = true
	for o := range f.nodes {
		if o != nd {
			f.holdFrom[o][nd], f.holdTo[o][nd] = true, true
		}
	}
	f.applyLocked()
}

// Held returns how many bytes the proxies have held for a partition or a
// stall so far.
func (f *Fronts) Held() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, fr := range f.nodes {
		for _, p := range fr.proxies {
			n += p.Held()
		}
	}
	return n
}

// Heal ends every partition; link faults stay (SetPeers clears them).
func (f *Fronts) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clearPartitions()
	f.applyLocked()
}

func (f *Fronts) clearPartitions() {
	f.holdFrom, f.holdTo, f.stalled = map[string]map[string]bool{}, map[string]map[string]bool{}, map[string]bool{}
	for k := 1; k <= 254; k++ {
		name := fmt.Sprintf("n%d", k)
		f.holdFrom[name], f.holdTo[name] = map[string]bool{}, map[string]bool{}
	}
}

// applyLocked gives every proxy its faults. The maps are copied: a proxy
// keeps the ones it was given.
func (f *Fronts) applyLocked() {
	for name, fr := range f.nodes {
		for i, p := range fr.proxies {
			pf := Faults{Stall: f.stalled[name], HoldFrom: maps.Clone(f.holdFrom[name]), HoldTo: maps.Clone(f.holdTo[name])}
			if i == 1 {
				pf.Delay, pf.Loss = f.link.Delay, f.link.Loss
			}
			p.Set(pf)
		}
	}
}

// identify names the node whose process owns the socket that dialled
// conn, or "" (the test's own clients, or a socket already gone).
func (f *Fronts) identify(conn net.Conn) string {
	inode := socketInode(conn.RemoteAddr(), conn.LocalAddr())
	if inode == "" {
		return ""
	}
	f.mu.Lock()
	pids := map[string]int{}
	for name, fr := range f.nodes {
		pids[name] = fr.nd.Pid()
	}
	f.mu.Unlock()
	for name, pid := range pids {
		if pid > 0 && ownsSocket(pid, inode) {
			return name
		}
	}
	return ""
}

// socketInode returns the inode of the IPv4 TCP socket of this network
// namespace going from local to remote, from /proc/net/tcp.
func socketInode(local, remote net.Addr) string {
	hex := func(a net.Addr) string {
		ta, ok := a.(*net.TCPAddr)
		if !ok || ta.IP.To4() == nil {
			return ""
		}
		return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ta.IP.To4()), ta.Port)
	}
	from, to := hex(local), hex(remote)
	if from == "" || to == "" {
		return ""
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(line)
		if len(fs) >= 10 && fs[1] == from && fs[2] == to && fs[9] != "0" {
			return fs[9]
		}
	}
	return ""
}

// ownsSocket reports whether process pid has socket inode open.
func ownsSocket(pid int, inode string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}

func (f *Fronts) close() {
	f.mu.Lock()
	nodes := f.nodes
	f.nodes = map[string]*front{}
	f.mu.Unlock()
	for _, fr := range nodes {
		for _, p := range fr.proxies {
			p.Close()
		}
	}
}
