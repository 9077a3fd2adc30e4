package store

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// This file reads the kernel's table of this network namespace's TCP
// sockets (/proc/self/net/tcp and tcp6), and shuts down sockets of this
// process found in it. Linux only; elsewhere the table cannot be read and
// peer links are left to TCP (see RunPeerLinks).

// tcpSocket is one row of /proc/net/tcp.
type tcpSocket struct {
	Local, Remote netip.AddrPort
	State         int // the kernel's TCP state, tcpEstablished...
	Timer         int // pending timer: 1 is the retransmission timer
	Retransmits   int // retransmission timeouts in a row, without an ACK of new data
	Inode         uint64
}

// Kernel TCP states and timers, as /proc/net/tcp numbers them.
const (
	tcpEstablished  = 1
	timerRetransmit = 1
)

// readTCPSockets reads the TCP sockets of this process's network namespace.
func readTCPSockets() ([]tcpSocket, error) {
	var all []tcpSocket
	for _, p := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(p)
		if err != nil {
			if os.IsNotExist(err) && p != "/proc/self/net/tcp" {
				continue // no IPv6
			}
			return nil, err
		}
		socks, err := parseTCPSockets(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		all = append(all, socks...)
	}
	return all, nil
}

// parseTCPSockets parses the text of /proc/net/tcp or tcp6:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 01:0000004E 00000002 0 0 12345 ...
func parseTCPSockets(r io.Reader) ([]tcpSocket, error) {
	var out []tcpSocket
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		local, err := parseProcAddr(f[1])
		if err != nil {
			return nil, err
		}
		remote, err := parseProcAddr(f[2])
		if err != nil {
			return nil, err
		}
		state, err := strconv.ParseInt(f[3], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("state %q: %w", f[3], err)
		}
		timer, _, ok := strings.Cut(f[5], ":")
		if !ok {
			return nil, fmt.Errorf("timer %q", f[5])
		}
		tr, err := strconv.ParseInt(timer, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("timer %q: %w", f[5], err)
		}
		retr, err := strconv.ParseInt(f[6], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("retransmits %q: %w", f[6], err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out = append(out, tcpSocket{Local: local, Remote: remote, State: int(state), Timer: int(tr), Retransmits: int(retr), Inode: inode})
	}
	return out, sc.Err()
}

// parseProcAddr parses ADDR:PORT as /proc/net/tcp prints it: the address
// as 32-bit words in hex, each in the machine's byte order; the port in
// hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", s, err)
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// shutdownSockets shuts down, both ways, the sockets of this process whose
// inodes are given, and returns how many it shut down. The process's own
// code sees the next read end (EOF) and the next write fail, as if the
// peer had closed, and closes the connection itself; the descriptors stay
// its own. Each socket is reached through a duplicate of its descriptor,
// checked to be the same socket, so that a descriptor closed and reused
// meanwhile is left alone.
func shutdownSockets(inodes map[uint64]bool) (int, error) {
	dir := "/proc/self/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		if err != nil || !inodes[ino] {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dup, err := syscall.Dup(fd)
		if err != nil {
			continue // closed meanwhile
		}
		var st syscall.Stat_t
		if syscall.Fstat(dup, &st) == nil && st.Ino == ino {
			if syscall.Shutdown(dup, syscall.SHUT_RDWR) == nil {
				n++
			}
		}
		syscall.Close(dup)
	}
	return n, nil
}
