package store

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A socket table as Linux prints it (little-endian words): this member's
// peer port is 7401 on 10.77.2.2; the peer is 10.77.1.2:7401.
const tcpTable = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 02024D0A:1CE9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 02024D0A:1CE9 02014D0A:ECC6 01 0000000C:00000000 01:00000180 00000003     0        0 101 1 0000000000000000 20 4 30 1 7
   2: 02024D0A:AF28 02014D0A:1CE9 01 00000000:00000000 02:00005B40 00000000     0        0 102 1 0000000000000000 20 4 30 10 -1
   3: 02024D0A:AF36 02014D0A:1CE9 01 0000006B:00000000 01:00000420 00000001     0        0 103 1 0000000000000000 20 4 30 1 7
   4: 02024D0A:AF00 02014D0A:1CE9 04 000000A9:00000000 01:00000820 00000004     0        0 0 1 0000000000000000 20 4 30 1 7
   5: 02024D0A:1CEA 0100000A:C2AA 01 00000000:00000000 00:00000000 00000000     0        0 104 1 0000000000000000 20 4 30 10 -1
`

func TestParseTCPSockets(t *testing.T) {
	socks, err := parseTCPSockets(strings.NewReader(tcpTable))
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 6 {
		t.Fatalf("got %d sockets, want 6", len(socks))
	}
	got := socks[1]
	want := tcpSocket{
		Local:  netip.MustParseAddrPort("10.77.2.2:7401"),
		Remote: netip.MustParseAddrPort("10.77.1.2:60614"),
		State:  tcpEstablished, Timer: timerRetransmit, Retransmits: 3, Inode: 101,
	}
	if got != want {
		t.Errorf("row 1: got %+v, want %+v", got, want)
	}

	for _, bad := range []string{
		"header\n 0: 0100007F 00000000:0000 0A 0:0 00:0 0 0 0 1",
		"header\n 0: 0100007F:1F90 00000000:0000 0A 0:0 00 0 0 0 1",
		"header\n 0: 0100007F:1F90 00000000:0000 0A 0:0 00:0 zz 0 0 1",
		"header\n 0: 0100007F:1F90 00000000:0000 0A 0:0 00:0 0 0 0 -1",
		"header\n 0: 0100007G:1F90 00000000:0000 0A 0:0 00:0 0 0 0 1",
	} {
		if _, err := parseTCPSockets(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseProcAddrIPv6(t *testing.T) {
	// ::ffff:10.77.1.2 and 2001:db8::1, as a little-endian machine prints them.
	for in, want := range map[string]string{
		"0000000000000000FFFF000002X14D0A:1CE9": "", // bad hex
		"0000000000000000FFFF000002014D0A:1CE9": "10.77.1.2:7401",
		"B80D0120000000000000000001000000:0050": "[2001:db8::1]:80",
	} {
		got, err := parseProcAddr(in)
		if want == "" {
			if err == nil {
				t.Errorf("%s: no error", in)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got.String() != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

// TestStalledLinks: a peer is stalled once one of its connections has had
// two retransmission timeouts in a row; then every open connection with it
// is returned, the ones this member dialed and the ones it accepted.
func TestStalledLinks(t *testing.T) {
	socks, err := parseTCPSockets(strings.NewReader(tcpTable))
	if err != nil {
		t.Fatal(err)
	}
	self := netip.MustParseAddrPort("0.0.0.0:7401")
	peer := netip.MustParseAddrPort("10.77.1.2:7401")
	other := netip.MustParseAddrPort("10.0.0.1:7401")

	got := stalledLinks(socks, self, []netip.AddrPort{peer, other})
	if len(got) != 1 || len(got[peer]) != 3 || !got[peer][101] || !got[peer][102] || !got[peer][103] {
		t.Fatalf("got %v, want the peer with inodes 101-103 (not the closed socket, not the listener)", got)
	}

	// One retransmission timeout is not a stall (a single lost packet).
	for i := range socks {
		socks[i].Retransmits = min(socks[i].Retransmits, 1)
	}
	if got := stalledLinks(socks, self, []netip.AddrPort{peer, other}); len(got) != 0 {
		t.Errorf("after one timeout: got %v, want none", got)
	}

	// A full window (zero-window probe timer) is a slow peer, not a lost link.
	socks[1].Retransmits, socks[1].Timer = 5, 4
	if got := stalledLinks(socks, self, []netip.AddrPort{peer}); len(got) != 0 {
		t.Errorf("zero-window probes: got %v, want none", got)
	}
}

// TestShutdownSockets: a socket of this process, found in the kernel's
// table, is shut down so that a blocked read ends; others are left alone.
func TestShutdownSockets(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/self/net/tcp")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial := func() (net.Conn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	}
	victim, _ := dial()
	bystander, _ := dial()

	socks, err := readTCPSockets()
	if err != nil {
		t.Fatal(err)
	}
	inode := func(c net.Conn) uint64 {
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		for _, sk := range socks {
			if sk.Local == netip.AddrPortFrom(local.Addr().Unmap(), local.Port()) && sk.State == tcpEstablished {
				return sk.Inode
			}
		}
		t.Fatalf("%v not in the socket table", local)
		return 0
	}
	n, err := shutdownSockets(map[uint64]bool{inode(victim): true, 1: true})
	if err != nil || n != 1 {
		t.Fatalf("shut down %d sockets (%v), want 1", n, err)
	}
	victim.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := victim.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read from the shut-down socket: %v, want EOF", err)
	}
	bystander.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var ne net.Error
	if _, err := bystander.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read from the other socket: %v, want a timeout", err)
	}
}

// TestReadEvery: the socket table is read often only while a stall is
// likely, and not at all in a healthy cluster.
func TestReadEvery(t *testing.T) {
	all := Health{Voters: 3, Reachable: 3, LeaderID: 1}
	missing := Health{Voters: 3, Reachable: 2, LeaderID: 1}
	for _, tc := range []struct {
		name       string
		leaderless bool
		h          Health
		stalled    bool
		want       time.Duration
	}{
		{"healthy", false, all, false, 0},
		{"never probed", false, Health{}, false, 0},
		{"leaderless", true, all, false, peerLinkInterval},
		{"a voter missed", false, missing, false, peerLinkWatch},
		{"a link stalled", false, all, true, peerLinkWatch},
	} {
		if got := readEvery(tc.leaderless, tc.h, tc.stalled); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestLinkWatch: the socket table is read only when due; a stalled peer is
// tried once at a time, again after a failed try, and not again after a
// successful one until the table is read anew.
func TestLinkWatch(t *testing.T) {
	peer := netip.MustParseAddrPort("10.77.1.2:7401")
	stalled := map[netip.AddrPort]map[uint64]bool{peer: {101: true, 102: true}}
	all := Health{Voters: 3, Reachable: 3, LeaderID: 1}
	missing := Health{Voters: 3, Reachable: 2, LeaderID: 1}

	w := newLinkWatch()
	reads := 0
	table := stalled
	read := func() (map[netip.AddrPort]map[uint64]bool, error) {
		reads++
		return table, nil
	}
	start := time.Now()
	at := func(d time.Duration) time.Time { return start.Add(d) }
	tick := func(d time.Duration, leader bool, h Health) map[netip.AddrPort]map[uint64]bool {
		t.Helper()
		try, err := w.tick(at(d), leader, h, read)
		if err != nil {
			t.Fatal(err)
		}
		return try
	}

	if try := tick(0, true, all); try != nil || reads != 0 {
		t.Fatalf("healthy: read %d times, try %v", reads, try)
	}
	// Leaderless, but not yet for leaderlessFor: an ordinary election.
	if try := tick(100*time.Millisecond, false, all); try != nil || reads != 0 {
		t.Fatalf("leaderless 0 ms: read %d times, try %v", reads, try)
	}
	try := tick(100*time.Millisecond+leaderlessFor, false, all)
	if reads != 1 || len(try) != 1 || len(try[peer]) != 2 {
		t.Fatalf("leaderless %v: read %d times, try %v", leaderlessFor, reads, try)
	}
	// Being tried: not handed out again, though the table is read.
	if try := tick(200*time.Millisecond+leaderlessFor, false, all); try != nil || reads != 2 {
		t.Fatalf("while trying: read %d times, try %v", reads, try)
	}
	// The try failed: tried again.
	w.tried(peer, false)
	if try := tick(300*time.Millisecond+leaderlessFor, false, all); len(try) != 1 {
		t.Fatalf("after a failed try: try %v", try)
	}
	// It answered. The member has its leader back, but the probe still
	// misses a voter: the table is read every peerLinkWatch, and the peer is
	// not tried again before that read.
	w.tried(peer, true)
	base := 400*time.Millisecond + leaderlessFor
	readsBefore := reads
	if try := tick(base, true, missing); try != nil || reads != readsBefore {
		t.Fatalf("after a reset: read %d times, try %v", reads-readsBefore, try)
	}
	// The next read still finds it stalled (say its connections were
	// replaced and stalled again): it is tried again.
	if try := tick(base+peerLinkWatch, true, missing); len(try) != 1 || reads != readsBefore+1 {
		t.Fatalf("next read, still stalled: read %d times, try %v", reads-readsBefore, try)
	}
	w.tried(peer, true)
	table = nil // the reset connections are gone
	if try := tick(base+2*peerLinkWatch, true, missing); try != nil || reads != readsBefore+2 {
		t.Fatalf("next read: read %d times, try %v", reads-readsBefore, try)
	}
	// All voters reachable and the leader known: nothing is read any more.
	if try := tick(base+4*peerLinkWatch, true, all); try != nil || reads != readsBefore+2 {
		t.Fatalf("healthy again: read %d times, try %v", reads-readsBefore, try)
	}
}
