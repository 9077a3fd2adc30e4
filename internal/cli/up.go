package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemhq/tandem/internal/client"
)

// LocalNode is one node of a local cluster, as written to DIR/cluster.json.
type LocalNode struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`
	DataDir  string `json:"data_dir"`
	Log      string `json:"log"`
	API      string `json:"api"`
	PeerURL  string `json:"peer_url"`
	StoreURL string `json:"store_url"`
	DNS      string `json:"dns"`
	Proxy    string `json:"proxy"`
}

// LocalCluster is DIR/cluster.json.
type LocalCluster struct {
	BasePort int         `json:"base_port"`
	Voters   int         `json:"voters"`
	Nodes    []LocalNode `json:"nodes"`
}

func newUpCmd(g *globals) *cobra.Command {
	var n, basePort, voters int
	var dir string
	var extra []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a local cluster of N agents on 127.0.0.1 until Ctrl-C",
		Long: `Start N agents as child processes on 127.0.0.1 (node i uses base-port + 10*i
for its API, peer, store, DNS and proxy ports), wait until the cluster is
healthy, print its nodes, write DIR/cluster.json, then print cluster events
until Ctrl-C, when every agent stops cleanly. Run again on the same DIR to
restart the same cluster with its data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 50 {
				return fmt.Errorf("--nodes %d: give 1 to 50", n)
			}
			if basePort < 1 || basePort+10*n > 65535 {
				return fmt.Errorf("--base-port %d: nodes need ports up to base-port + 10*nodes, below 65536", basePort)
			}
			if voters == 0 {
				voters = 3
				if n < 3 {
					voters = 1
				}
			}
			return runUp(cmd.Context(), g, dir, n, basePort, voters, extra)
		},
	}
	cmd.Flags().IntVar(&n, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&dir, "dir", "tandem-local", "directory for the nodes' data, logs and cluster.json")
	cmd.Flags().IntVar(&basePort, "base-port", 7400, "first node's API port; node i uses base-port + 10*i")
	cmd.Flags().IntVar(&voters, "voters", 0, "target store voters (default 3, or 1 below 3 nodes)")
	cmd.Flags().StringSliceVar(&extra, "agent-flag", nil, "extra flag passed to every agent, like --agent-flag=--dead-voter-timeout=5s")
	return cmd
}

func runUp(ctx context.Context, g *globals, dir string, n, basePort, voters int, extra []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lc := LocalCluster{BasePort: basePort, Voters: voters}
	restart := false
	if b, err := os.ReadFile(filepath.Join(dir, "cluster.json")); err == nil {
		if err := json.Unmarshal(b, &lc); err != nil {
			return fmt.Errorf("%s/cluster.json is damaged (%v); remove the directory to start a new cluster", dir, err)
		}
		restart = true
		basePort = lc.BasePort
		fmt.Fprintf(g.out, "restarting the cluster in %s\n", dir)
	}
	for i := len(lc.Nodes); i < n; i++ {
		p := basePort + 10*i
		name := fmt.Sprintf("n%d", i+1)
		lc.Nodes = append(lc.Nodes, LocalNode{
			Name: name, DataDir: filepath.Join(dir, name), Log: filepath.Join(dir, name+".log"),
			API:     net.JoinHostPort("127.0.0.1", strconv.Itoa(p)),
			PeerURL: fmt.Sprintf("http://127.0.0.1:%d", p+1), StoreURL: fmt.Sprintf("http://127.0.0.1:%d", p+2),
			DNS: net.JoinHostPort("127.0.0.1", strconv.Itoa(p+3)), Proxy: net.JoinHostPort("127.0.0.1", strconv.Itoa(p+4)),
		})
	}
	var addrs []string
	for _, nd := range lc.Nodes {
		addrs = append(addrs, nd.API)
	}
	cl := client.New(addrs)

	procs := &children{}
	defer procs.stopAll(g)
	exited := make(chan string, len(lc.Nodes))

	start := func(i int, join []string) error {
		nd := &lc.Nodes[i]
		p := basePort + 10*i
		args := []string{"agent", "--name", nd.Name, "--data-dir", nd.DataDir,
			"--api-port", strconv.Itoa(p), "--peer-port", strconv.Itoa(p + 1), "--store-port", strconv.Itoa(p + 2),
			"--dns-port", strconv.Itoa(p + 3), "--proxy-port", strconv.Itoa(p + 4), "--voters", strconv.Itoa(lc.Voters)}
		for _, j := range join {
			args = append(args, "--join", j)
		}
		args = append(args, extra...)
		pid, err := procs.start(exe, args, nd.Log, nd.Name, exited)
		nd.PID = pid
		return err
	}
	waitNode := func(i int) error {
		one := client.New([]string{lc.Nodes[i].API})
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := one.Health(hctx)
			cancel()
			if err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case name := <-exited:
				return fmt.Errorf("node %s exited while starting; see %s", name, lc.Nodes[i].Log)
			case <-time.After(200 * time.Millisecond):
			}
		}
		return fmt.Errorf("node %s did not become ready in 90s; see %s", lc.Nodes[i].Name, lc.Nodes[i].Log)
	}

	// Nodes that have data restart together (they need each other for a
	// quorum); new nodes start one at a time, joining those already up.
	var fresh []int
	for i, nd := range lc.Nodes {
		if _, err := os.Stat(filepath.Join(nd.DataDir, "node.json")); err == nil {
			if err := start(i, nil); err != nil {
				return err
			}
		} else {
			fresh = append(fresh, i)
		}
	}
	for i := range lc.Nodes {
		if lc.Nodes[i].PID != 0 {
			if err := waitNode(i); err != nil {
				return err
			}
		}
	}
	for _, i := range fresh {
		var join []string
		for j := range lc.Nodes {
			if lc.Nodes[j].PID != 0 {
				join = append(join, lc.Nodes[j].API)
			}
		}
		if err := start(i, join); err != nil {
			return err
		}
		if err := waitNode(i); err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(lc, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "cluster.json"), b, 0o644); err != nil {
		return err
	}
	if err := waitHealthy(ctx, cl, len(lc.Nodes), min(lc.Voters, len(lc.Nodes)), exited, logs(lc)); err != nil {
		return err
	}

	var rows [][]string
	for _, nd := range lc.Nodes {
		rows = append(rows, []string{nd.Name, strconv.Itoa(nd.PID), nd.API, nd.PeerURL, nd.StoreURL, nd.DNS, nd.Proxy})
	}
	g.table([]string{"NAME", "PID", "API", "PEER", "STORE", "DNS", "PROXY"}, rows)
	verb := "started"
	if restart {
		verb = "restarted"
	}
	fmt.Fprintf(g.out, "\ncluster %s: %d nodes; state in %s/cluster.json\n", verb, len(lc.Nodes), dir)
	fmt.Fprintf(g.out, "try: TANDEM_ADDR=%s tandem status\n\nevents (Ctrl-C stops the cluster):\n", strings.Join(addrs, ","))

	evCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-evCtx.Done():
				return
			case name := <-exited:
				fmt.Fprintf(g.out, "%s  %-15s %s\n", time.Now().Format("15:04:05.000"), "process-exit", "agent "+name+" exited")
			}
		}
	}()
	_, rev, err := cl.Events(ctx, 0)
	if err != nil {
		rev = 0
	}
	err = cl.WatchEvents(evCtx, rev+1, g.printEvent)
	if ctx.Err() != nil {
		fmt.Fprintln(g.out, "\nstopping the cluster...")
		return nil
	}
	return err
}

// logs maps node names to their log files.
func logs(lc LocalCluster) map[string]string {
	m := make(map[string]string, len(lc.Nodes))
	for _, nd := range lc.Nodes {
		m[nd.Name] = nd.Log
	}
	return m
}

// waitHealthy polls until every node is alive and the voters are at target.
// A node that exits meanwhile ends the wait at once, naming its log.
func waitHealthy(ctx context.Context, cl *client.Client, nodes, voters int, exited <-chan string, logs map[string]string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := cl.Status(sctx)
		cancel()
		if err == nil && st.NodesAlive == nodes && st.Voters == voters && st.VotersAlive == voters && st.Leader != "" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d of %d nodes alive, %d of %d voters alive, leader %q", st.NodesAlive, nodes, st.VotersAlive, voters, st.Leader)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case name := <-exited:
			return fmt.Errorf("node %s exited before the cluster was healthy; see %s", name, logs[name])
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("cluster not healthy after 60s: %w", last)
}

// children are the agent processes of a local cluster.
type children struct {
	mu    sync.Mutex
	procs []*exec.Cmd
	names []string
}

func (c *children) start(exe string, args []string, logPath, name string, exited chan<- string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: Ctrl-C reaches only `up`, which then stops the
	// agents in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, cmd)
	c.names = append(c.names, name)
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		logf.Close()
		select {
		case exited <- name:
		default:
		}
	}()
	return cmd.Process.Pid, nil
}

// stopAll sends SIGTERM to every agent and waits up to 15 s for them, then
// kills what is left.
func (c *children) stopAll(g *globals) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(15 * time.Second)
	for i, p := range c.procs {
		for processAlive(p.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(p.Process.Pid) {
			fmt.Fprintf(g.out, "%s did not stop in time; killing it\n", c.names[i])
			_ = p.Process.Kill()
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
