package clustertest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// This file is the network of a cluster started with Options.Netns, and
// the faults injected into it.
//
// Topology (B is picked per cluster, see newNetwork):
//
//	root namespace (the test and its clients)
//	  tdm<pid><seq>  10.B.0.1/24, route 10.B.0.0/16 via 10.B.0.2
//	        |
//	router namespace tdm-<pid>-<seq>-r (forwarding on, nftables table "faults")
//	  up0 10.B.0.2/24     n1 10.B.1.1/24     n2 10.B.2.1/24   ...
//	                          |                  |
//	node namespaces     tdm-<pid>-<seq>-n1  tdm-<pid>-<seq>-n2  ...
//	                      eth0 10.B.1.2/24   eth0 10.B.2.2/24
//	                      default via .1     default via .1
//
// Every packet between two nodes, or between the test and a node, crosses
// the router namespace's forward hook, where the fault rules drop them.
// Nothing of the root namespace changes but one new veth and the route to
// 10.B.0.0/16 through it: no sysctl, no default route, no other interface.
// Deleting the namespaces removes the veths, the route and the rules.
//
// Names carry the test process's id, so a run never meets the leftovers of
// another; namespaces left by a process that no longer exists (a test
// binary killed before its cleanups ran) are deleted when the next network
// is made.

// NetnsAvailable reports why Options.Netns cannot run here, or nil.
func NetnsAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed or not on PATH (Debian packages iproute2 and nftables; they live in /usr/sbin)", tool)
		}
	}
	return nil
}

// NeedNetns skips a test that needs Options.Netns where this machine cannot
// give it, except in CI (CI=true), which runs as root and must not skip.
func NeedNetns(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts clusters")
	}
	if err := NetnsAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI must run the network namespace tests: %v", err)
		}
		t.Skipf("network namespaces not available: %v", err)
	}
}

// network is the namespaces, links and fault rules of one cluster. Its
// methods may be called from any goroutine.
type network struct {
	prefix string // namespace names: prefix-r, prefix-n1, ...
	router string
	hostIf string // the root namespace's end of the link to the router
	b      int    // the cluster's addresses are 10.b.0.0/16
	lock   *os.File

	mu    sync.Mutex
	nodes map[string]string // IP -> namespace
}

var networkSeq atomic.Int64

// faultsTable is the nftables table the fault rules live in, in the
// router namespace (which belongs to the test, so the name is free).
const faultsTable = "inet faults"

// newNetwork makes the router namespace and its link to the root
// namespace. B is the first of 10.77 to 10.126 that no route of the root
// namespace overlaps and no other test process holds (a lock file, which
// the kernel releases when its process dies).
func newNetwork() (nw *network, err error) {
	removeStaleNamespaces()
	seq := networkSeq.Add(1)
	pid := os.Getpid()
	nw = &network{
		prefix: fmt.Sprintf("tdm-%d-%d", pid, seq),
		hostIf: fmt.Sprintf("tdm%s-%d", strconv.FormatInt(int64(pid), 36), seq),
		nodes:  map[string]string{},
	}
	nw.router = nw.prefix + "-r"
	if len(nw.hostIf) > 15 {
		return nil, fmt.Errorf("interface name %q is too long", nw.hostIf)
	}
	if nw.b, nw.lock, err = claimSubnet(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = nw.close()
		}
	}()
	b := nw.b
	steps := [][]string{
		{"ip", "netns", "add", nw.router},
		{"ip", "-n", nw.router, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", nw.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		// Made in the router namespace, the other end moved to ours: a
		// name clash in the root namespace fails here, touching nothing.
		{"ip", "-n", nw.router, "link", "add", "up0", "type", "veth", "peer", "name", nw.hostIf, "netns", strconv.Itoa(pid)},
		{"ip", "-n", nw.router, "addr", "add", fmt.Sprintf("10.%d.0.2/24", b), "dev", "up0"},
		{"ip", "-n", nw.router, "link", "set", "up0", "up"},
		{"ip", "addr", "add", fmt.Sprintf("10.%d.0.1/24", b), "dev", nw.hostIf},
		{"ip", "link", "set", nw.hostIf, "up"},
		{"ip", "route", "add", fmt.Sprintf("10.%d.0.0/16", b), "via", fmt.Sprintf("10.%d.0.2", b), "dev", nw.hostIf, "src", fmt.Sprintf("10.%d.0.1", b)},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	if err := nw.nft("add table " + faultsTable + "\n" +
		"add chain " + faultsTable + " forward { type filter hook forward priority 0; policy accept; }\n"); err != nil {
		return nil, err
	}
	return nw, nil
}

// addNode makes node i's namespace (i from 1) and its link to the router,
// and returns the namespace and the node's IP.
func (nw *network) addNode(i int) (ns, ip string, err error) {
	if i < 1 || i > 250 {
		return "", "", fmt.Errorf("node %d: a network holds nodes 1 to 250", i)
	}
	ns = fmt.Sprintf("%s-n%d", nw.prefix, i)
	ip = fmt.Sprintf("10.%d.%d.2", nw.b, i)
	gw := fmt.Sprintf("10.%d.%d.1", nw.b, i)
	rif := fmt.Sprintf("n%d", i)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", nw.router, "link", "add", rif, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", nw.router, "addr", "add", gw + "/24", "dev", rif},
		{"ip", "-n", nw.router, "link", "set", rif, "up"},
		{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", gw},
	}
	nw.mu.Lock()
	nw.nodes[ip] = ns
	nw.mu.Unlock()
	for _, s := range steps {
		if err := run(s...); err != nil {
			return "", "", err
		}
	}
	return ns, ip, nil
}

// close deletes every namespace of the network, which removes the veths,
// the root namespace's route and the rules with them, and frees B.
func (nw *network) close() error {
	var errs []error
	nw.mu.Lock()
	names := []string{nw.router}
	for _, ns := range nw.nodes {
		names = append(names, ns)
	}
	nw.mu.Unlock()
	for _, ns := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			continue // never made
		}
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if nw.lock != nil {
		nw.lock.Close()
	}
	return errors.Join(errs...)
}

// nft runs an nft script in the router namespace.
func (nw *network) nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", nw.router, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f - (%s): %v: %s", strings.TrimSpace(script), err, bytes.TrimSpace(out))
	}
	return nil
}

// drop adds one rule per pair dropping forwarded packets from src to dst
// (either may be "" for any address).
func (nw *network) drop(pairs [][2]string) error {
	var sb strings.Builder
	for _, p := range pairs {
		sb.WriteString("add rule " + faultsTable + " forward")
		if p[0] != "" {
			sb.WriteString(" ip saddr " + p[0])
		}
		if p[1] != "" {
			sb.WriteString(" ip daddr " + p[1])
		}
		sb.WriteString(" counter drop\n")
	}
	return nw.nft(sb.String())
}

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes`)

// dropped sums the packets the rules in place have dropped.
func (nw *network) dropped() (int64, error) {
	out, err := exec.Command("ip", "netns", "exec", nw.router, "nft", "list", "chain", "inet", "faults", "forward").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("nft list chain: %v: %s", err, bytes.TrimSpace(out))
	}
	var n int64
	for _, m := range counterRE.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseInt(string(m[1]), 10, 64)
		n += v
	}
	return n, nil
}

// claimSubnet picks B (see newNetwork) and returns it with its lock.
func claimSubnet() (int, *os.File, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		return 0, nil, fmt.Errorf("ip route show: %v: %s", err, bytes.TrimSpace(out))
	}
	var routes []*net.IPNet
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "default" {
			continue
		}
		if len(f) > 1 && (dst == "local" || dst == "broadcast" || dst == "unicast" || dst == "blackhole" || dst == "unreachable" || dst == "prohibit" || dst == "throw" || dst == "multicast") {
			dst = f[1]
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, n, err := net.ParseCIDR(dst); err == nil {
			routes = append(routes, n)
		}
	}
	dir := filepath.Join(os.TempDir(), "tandem-clustertest-netns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, nil, err
	}
	for b := 77; b <= 126; b++ {
		_, mine, _ := net.ParseCIDR(fmt.Sprintf("10.%d.0.0/16", b))
		taken := false
		for _, r := range routes {
			if r.Contains(mine.IP) || mine.Contains(r.IP) {
				taken = true
				break
			}
		}
		if taken {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("10.%d.lock", b)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return 0, nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		return b, f, nil
	}
	return 0, nil, errors.New("no free 10.B.0.0/16 for B in 77-126: routes of this machine or other tests hold them all")
}

var staleRE = regexp.MustCompile(`^tdm-(\d+)-\d+-(r|n\d+)$`)

// removeStaleNamespaces deletes the namespaces of test processes that no
// longer run. Their nodes died with them (Pdeathsig).
func removeStaleNamespaces() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := staleRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", m[1])); err == nil || pid <= 0 {
			continue // still running (or a reused pid: leave it, the names differ)
		}
		_ = run("ip", "netns", "del", e.Name())
	}
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Network faults. They need Options.Netns; each adds rules to those in
// place, and Heal removes them all. Packets are dropped silently, as a
// broken link or a firewall would: no reset, no ICMP error, so TCP
// connections hang and retransmit rather than fail.

// Isolate cuts nd off from every other node, both ways. The test's own
// clients (in the root namespace) still reach it, so what a minority node
// answers can be watched.
func (c *Cluster) Isolate(nd *Node) {
	c.t.Helper()
	var pairs [][2]string
	for _, o := range c.Nodes {
		if o != nd {
			pairs = append(pairs, [2]string{nd.Bind, o.Bind}, [2]string{o.Bind, nd.Bind})
		}
	}
	c.fault("isolate "+nd.Name, pairs)
}

// PartitionOneWay drops every packet from `from` to `to`; packets from
// `to` to `from` still pass. A TCP connection between them then carries
// nothing either way (its data or its acknowledgements are lost), but what
// matters is which side can still deliver a message: a UDP datagram or the
// first segments of a write from `to` arrive, nothing from `from` does.
func (c *Cluster) PartitionOneWay(from, to *Node) {
	c.t.Helper()
	c.fault("drop "+from.Name+" -> "+to.Name, [][2]string{{from.Bind, to.Bind}})
}

// Blackhole drops every packet to or from nd, including the test's own
// clients': connections to it time out instead of being refused.
func (c *Cluster) Blackhole(nd *Node) {
	c.t.Helper()
	c.fault("blackhole "+nd.Name, [][2]string{{nd.Bind, ""}, {"", nd.Bind}})
}

// RejectAPI makes nd's API port answer every other node's connection
// attempts with a TCP reset, as a firewall's reject rule would, while
// everything else between the nodes (Raft, the store) still flows, and
// the test's own clients still reach the API.
func (c *Cluster) RejectAPI(nd *Node) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("RejectAPI: network faults need Options.Netns")
	}
	var sb strings.Builder
	for _, o := range c.Nodes {
		if o != nd {
			fmt.Fprintf(&sb, "add rule %s forward ip saddr %s ip daddr %s tcp dport %d counter reject with tcp reset\n", faultsTable, o.Bind, nd.Bind, nd.apiPort)
		}
	}
	if err := c.net.nft(sb.String()); err != nil {
		c.t.Fatalf("reject %s's API: %v", nd.Name, err)
	}
}

// Heal removes every network fault.
func (c *Cluster) Heal() {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("clustertest: network faults need Options.Netns")
	}
	if err := c.net.nft("flush chain " + faultsTable + " forward\n"); err != nil {
		c.t.Fatalf("heal: %v", err)
	}
}

// Dropped returns how many packets the faults in place have dropped so far
// (Heal resets it).
func (c *Cluster) Dropped() int64 {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("clustertest: network faults need Options.Netns")
	}
	n, err := c.net.dropped()
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *Cluster) fault(what string, pairs [][2]string) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatalf("%s: network faults need Options.Netns", what)
	}
	if err := c.net.drop(pairs); err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}
