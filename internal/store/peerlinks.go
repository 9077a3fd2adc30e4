package store

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Peer links: reconnect the member's Raft connections as soon as a network
// fault between voters heals, instead of waiting out TCP's back-off.
//
// etcd carries Raft between two members over long-lived HTTP streams, one
// TCP connection per direction and message kind. When the network drops
// every packet for a while (a partition, a firewall, a broken link), the
// sender of each stalled connection retransmits with exponential back-off:
// after 5 s of loss its next retry is 1-3 s away, and only then does the
// connection carry anything again, although packets have been passing for
// a while. etcd would redial a stream whose reads time out, but its read
// timeout never applies on the dialing side (etcd's HTTP transport sets
// DialContext, which net/http prefers over the Dial that installs the
// timeouts), so nothing replaces the stalled connections. Measured
// (BenchmarkPartitionHeal): a voter cut off for 5 s took 1.5-2.9 s after
// the heal to serve a write again.
//
// RunPeerLinks watches the member's peer connections in the kernel's
// socket table when a stall is likely (see "Cost"). A peer whose
// connection has hit two retransmission timeouts in a row is stalled;
// while it is, a fresh TCP connection to its peer port is tried every
// 100 ms (a new connection's first packet is sent at once, with no
// back-off). Once one connects, the link works again, and every connection
// with that peer that existed before is shut down: etcd sees the streams
// end, redials them at once (it retries a dial after 100 ms at most) and
// the other end moves its stream writers to the new connections.
//
// Cost: the socket table lists every TCP socket of the network namespace
// (TIME-WAIT ones too), and reading it takes about 15 us per socket: 13 ms
// for 770 sockets, 50 ms for 3,300 on the loaded 2-core test machine. Too
// much to do 10 times a second on a node whose proxy holds thousands of
// connections, or during every election. So the table is read only when a
// stall is likely: every 100 ms once this member has known no leader for
// 300 ms (a voter cut off from the majority loses its leader an election
// timeout into the partition, and stays leaderless until its links carry
// messages again; an ordinary election is leaderless for milliseconds),
// every 1 s while the voter probe (RunProbe) missed a voter or a link is
// stalled (the majority side of a partition, or a voter that is down),
// and not at all otherwise. Both sides of a stalled link reset their own
// end: the leaderless side alone fixes both directions (the other end
// replaces its stream writers when the streams are redialed, and meanwhile
// messages go through etcd's pipeline, fresh HTTP requests), but the other
// end's stream readers would wait for TCP until then. Not covered: a link
// that stalls while this member keeps its leader and the probe reaches
// every voter (a one-way loss of the stream's packets only), and a
// partition too short for the member to lose its leader for 300 ms; those
// wait for TCP, as before.
//
// A paused or overloaded peer still acknowledges packets, so its
// connections never count retransmission timeouts (a full window shows as
// zero-window probes, not retransmissions): only lost packets trigger this.

// stallRetransmits is how many retransmission timeouts in a row make a
// connection stalled: two take about 0.6 s of loss at Linux's minimum
// retransmission timeout (200 ms, then 400 ms).
const stallRetransmits = 2

// peerLinkInterval is how often a stalled peer is tried, and the socket
// table read while the member knows no leader; it bounds how long after
// the heal the links are reset.
const peerLinkInterval = 100 * time.Millisecond

// peerLinkWatch is how often the socket table is read while the last probe
// of the voters missed one, or a link is stalled.
const peerLinkWatch = time.Second

// leaderlessFor is how long the member must have known no leader before
// the socket table is read every peerLinkInterval: longer than the
// leaderless moment of an ordinary election (milliseconds, or an election
// timeout after a split vote), shorter than what a stall takes to build up.
const leaderlessFor = 300 * time.Millisecond

// RunPeerLinks watches this node's store member's peer connections until
// ctx ends (see the comment above). It does nothing while the node has no
// member, and stops watching, with a log line, if the socket table cannot
// be read (not Linux).
func (s *Store) RunPeerLinks(ctx context.Context) error {
	t := time.NewTicker(peerLinkInterval)
	defer t.Stop()
	w := newLinkWatch()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		m := s.Member()
		if m == nil {
			w.forget()
			continue
		}
		try, err := w.tick(time.Now(), m.Etcd.Server.Lead() != 0, s.Health(), func() (map[netip.AddrPort]map[uint64]bool, error) {
			self, peers := m.peerAddrs()
			if !self.IsValid() || len(peers) == 0 {
				return nil, nil
			}
			socks, err := readTCPSockets()
			if err != nil {
				return nil, err
			}
			return stalledLinks(socks, self, peers), nil
		})
		if err != nil {
			s.log.Warn("peer links: cannot read the socket table; stalled Raft connections will wait for TCP to retry after a network fault heals", "err", err)
			return nil
		}
		for peer, inodes := range try {
			wg.Go(func() {
				ok := reachable(ctx, peer, 2*peerLinkInterval)
				w.tried(peer, ok)
				if !ok {
					return
				}
				n, err := shutdownSockets(inodes)
				if err != nil {
					s.log.Warn("peer links: reset the stalled connections", "peer", peer.String(), "err", err)
					return
				}
				s.log.Info("peer links: the store peer is reachable again; reset its stalled connections", "peer", peer.String(), "connections", n)
			})
		}
	}
}

// linkWatch holds RunPeerLinks' decisions: when to read the socket table,
// and which stalled peers to try. tick and forget are called from
// RunPeerLinks' loop, tried from the goroutines that try peers.
type linkWatch struct {
	stalled  map[netip.AddrPort]map[uint64]bool // at the last read
	lastRead time.Time
	noLeader time.Time // since when the member has known no leader; zero while it knows one

	mu      sync.Mutex
	probing map[netip.AddrPort]bool // being tried
	healed  map[netip.AddrPort]bool // reset since the table was last read
}

func newLinkWatch() *linkWatch {
	return &linkWatch{probing: map[netip.AddrPort]bool{}, healed: map[netip.AddrPort]bool{}}
}

// tick is one round at now. leader says whether the member knows a
// leader, h is the last probe of the voters, and read reads the socket
// table and returns the stalled links (called only when a read is due).
// tick returns the stalled peers to try now, each with the connections to
// shut down if it answers, and counts them as being tried until tried is
// called for them.
func (w *linkWatch) tick(now time.Time, leader bool, h Health, read func() (map[netip.AddrPort]map[uint64]bool, error)) (map[netip.AddrPort]map[uint64]bool, error) {
	switch {
	case leader:
		w.noLeader = time.Time{}
	case w.noLeader.IsZero():
		w.noLeader = now
	}
	leaderless := !w.noLeader.IsZero() && now.Sub(w.noLeader) >= leaderlessFor
	every := readEvery(leaderless, h, len(w.stalled) > 0)
	if every == 0 {
		w.stalled = nil
		return nil, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.lastRead) >= every {
		stalled, err := read()
		if err != nil {
			return nil, err
		}
		w.stalled, w.lastRead = stalled, now
		clear(w.healed)
	}
	var try map[netip.AddrPort]map[uint64]bool
	for peer, inodes := range w.stalled {
		if w.probing[peer] || w.healed[peer] {
			continue
		}
		w.probing[peer] = true
		if try == nil {
			try = map[netip.AddrPort]map[uint64]bool{}
		}
		try[peer] = inodes
	}
	return try, nil
}

// tried records that trying peer is over: it answered (its connections
// are shut down, and it is not tried again before the table is read again)
// or not (it is tried again next round).
func (w *linkWatch) tried(peer netip.AddrPort, answered bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.probing, peer)
	w.healed[peer] = answered
}

// forget drops what the last read found (the node has no member).
func (w *linkWatch) forget() { w.stalled = nil }

// readEvery returns how often to read the socket table: every
// peerLinkInterval while the member has known no leader for leaderlessFor,
// every peerLinkWatch while the last probe of the voters missed one or a
// link is stalled, and never (0) otherwise (see "Cost" above).
func readEvery(leaderless bool, h Health, stalled bool) time.Duration {
	switch {
	case leaderless:
		return peerLinkInterval
	case stalled || h.Reachable < h.Voters:
		return peerLinkWatch
	default:
		return 0
	}
}

// peerAddrs returns the address this member takes peer connections on
// (its port, on any IP) and the peer addresses of the other members.
func (m *Member) peerAddrs() (self netip.AddrPort, peers []netip.AddrPort) {
	cfg := m.Etcd.Config()
	if len(cfg.ListenPeerUrls) > 0 {
		if p, err := strconv.ParseUint(cfg.ListenPeerUrls[0].Port(), 10, 16); err == nil {
			self = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(p))
		}
	}
	id := m.Etcd.Server.MemberID()
	for _, pm := range m.Etcd.Server.Cluster().Members() {
		if pm.ID == id {
			continue
		}
		for _, u := range pm.PeerURLs {
			if ap, ok := urlAddrPort(u); ok {
				peers = append(peers, ap)
			}
		}
	}
	return self, peers
}

// urlAddrPort returns the IP:port of a URL with an IP address as its host.
func urlAddrPort(s string) (netip.AddrPort, bool) {
	u, err := url.Parse(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// stalledLinks returns, for each peer with a stalled connection, the
// inodes of every open connection with that peer: those this member dialed
// to the peer's address, and those it accepted on its peer port from the
// peer's IP. self is the member's peer port (its IP is ignored). Sockets
// without an inode (closed by the process, left to the kernel) neither
// count nor are returned.
func stalledLinks(socks []tcpSocket, self netip.AddrPort, peers []netip.AddrPort) map[netip.AddrPort]map[uint64]bool {
	var out map[netip.AddrPort]map[uint64]bool
	for _, p := range peers {
		var inodes map[uint64]bool
		stalled := false
		for _, sk := range socks {
			if sk.Inode == 0 || sk.State != tcpEstablished {
				continue
			}
			dialed := sk.Remote == p
			accepted := sk.Local.Port() == self.Port() && sk.Remote.Addr() == p.Addr()
			if !dialed && !accepted {
				continue
			}
			if inodes == nil {
				inodes = map[uint64]bool{}
			}
			inodes[sk.Inode] = true
			if sk.Timer == timerRetransmit && sk.Retransmits >= stallRetransmits {
				stalled = true
			}
		}
		if stalled {
			if out == nil {
				out = map[netip.AddrPort]map[uint64]bool{}
			}
			out[p] = inodes
		}
	}
	return out
}

// reachable reports whether a new TCP connection to addr opens within
// timeout.
func reachable(ctx context.Context, addr netip.AddrPort, timeout time.Duration) bool {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr.String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}
