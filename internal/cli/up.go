package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
	"github.com/tandemhq/tandem/internal/scheduler"
	"github.com/tandemhq/tandem/internal/supervisor"
)

// LocalNode is one node of a local cluster, as written to DIR/cluster.json.
type LocalNode struct {
	Name string `json:"name"`
	// PID is the agent's process id while it runs, 0 when it does not.
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
	BasePort int `json:"base_port"`
	Voters   int `json:"voters"`
	// UpPID is the process id of the `tandem up` that runs the cluster, 0
	// when none does.
	UpPID int `json:"up_pid"`
	// Insecure is set for a cluster started with --insecure: plain HTTP
	// API, no tokens, no TLS between nodes.
	Insecure bool        `json:"insecure,omitempty"`
	Nodes    []LocalNode `json:"nodes"`
}

// stopTimeout is how long `up` waits for its agents to stop after SIGTERM
// before it kills them.
const stopTimeout = 15 * time.Second

func newUpCmd(g *globals) *cobra.Command {
	var n, basePort, voters int
	var dir string
	var extra []string
	var insecure, demo bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a local cluster of N agents on 127.0.0.1 until Ctrl-C",
		Long: `Start N agents as child processes on 127.0.0.1 (node i uses base-port + 10*i
for its API, peer, store, DNS and proxy ports), wait until the cluster is
healthy, print its nodes, write DIR/cluster.json, then print cluster events
until Ctrl-C, when every agent stops cleanly. Run again on the same DIR to
restart the same cluster with its data.

The cluster is secure: its API is served over TLS and wants a token. 'up'
copies the cluster CA and the first admin token to DIR/ca.crt and
DIR/admin.token and writes DIR/env: 'source DIR/env' sets TANDEM_ADDR,
TANDEM_CA and TANDEM_TOKEN_FILE for every tandem command. New nodes join
with a join token 'up' creates (DIR/join.token, valid for an hour).
--insecure runs a throwaway cluster with a plain, open API instead.

The agents live and die with 'up': if 'up' ends for any reason (Ctrl-C,
SIGTERM, SIGHUP when its terminal closes, SIGKILL, its output pipe closed),
its agents stop too. 'tandem up restart NAME' (from another terminal)
restarts one node of the running cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 50 {
				return usageError{fmt.Errorf("--nodes %d: give 1 to 50", n)}
			}
			if basePort < 1 || basePort+10*n > 65535 {
				return usageError{fmt.Errorf("--base-port %d: nodes need ports up to base-port + 10*nodes, below 65536", basePort)}
			}
			if voters == 0 {
				voters = 3
				if n < 3 {
					voters = 1
				}
			}
			return runUp(cmd.Context(), g.out, dir, n, basePort, voters, cmd.Flags().Changed("base-port"), insecure, demo, extra)
		},
	}
	cmd.Flags().IntVar(&n, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&dir, "dir", "tandem-local", "directory for the nodes' data, logs and cluster.json")
	cmd.Flags().IntVar(&basePort, "base-port", 7400, "first node's API port; node i uses base-port + 10*i")
	cmd.Flags().IntVar(&voters, "voters", 0, "target store voters (default 3, or 1 below 3 nodes)")
	cmd.Flags().StringSliceVar(&extra, "agent-flag", nil, "extra flag passed to every agent, like --agent-flag=--dead-voter-timeout=5s")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "run the agents with --insecure: plain HTTP API without tokens, for a throwaway cluster")
	cmd.Flags().BoolVar(&demo, "demo", true, "deploy the demo service (tandem demo, 3 instances) on a new cluster")
	cmd.AddCommand(newUpRestartCmd(g))
	return cmd
}

// upCluster is a local cluster run by `tandem up`.
type upCluster struct {
	out   *lockedWriter
	dir   string
	exe   string
	extra []string
	spawn chan<- spawnReq

	mu         sync.Mutex
	lc         LocalCluster
	procs      map[string]*agentProc
	running    bool            // the cluster came up: report agents that exit
	stopping   bool            // stopAll runs
	restarting map[string]bool // nodes being restarted by request: their exit is expected
	// creds secure the API clients of `up` once the bootstrap node has
	// written the CA and the admin token; nil until then, and for
	// --insecure.
	creds *upCredentials
}

// agentProc is one agent process; done closes when it has exited.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func runUp(ctx context.Context, stdout io.Writer, dir string, n, basePort, voters int, basePortGiven, insecure, demo bool, extra []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
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
	// A closed output (`tandem up | head`) stops the cluster instead of
	// killing up with SIGPIPE.
	out := &lockedWriter{w: stdout, broken: cancel}
	watchStdout(ctx, cancel)
	c := &upCluster{out: out, dir: dir, exe: exe, extra: extra, spawn: startSpawner(), procs: map[string]*agentProc{}, restarting: map[string]bool{}}

	c.lc = LocalCluster{BasePort: basePort, Voters: voters, Insecure: insecure}
	restart := false
	if b, err := os.ReadFile(filepath.Join(dir, "cluster.json")); err == nil {
		var saved LocalCluster
		if err := json.Unmarshal(b, &saved); err != nil {
			return fmt.Errorf("%s/cluster.json is damaged (%v); remove the directory to start a new cluster", dir, err)
		}
		c.lc = saved
		restart = true
		if basePortGiven && basePort != c.lc.BasePort {
			return usageError{fmt.Errorf("the cluster in %s uses --base-port %d; it cannot move to %d (start a new cluster elsewhere: tandem up --dir OTHER --base-port %d)", dir, c.lc.BasePort, basePort, basePort)}
		}
		basePort = c.lc.BasePort
		if insecure != c.lc.Insecure {
			if c.lc.Insecure {
				return usageError{fmt.Errorf("the cluster in %s was started with --insecure: give --insecure to restart it (or start a secure cluster elsewhere: tandem up --dir OTHER)", dir)}
			}
			return usageError{fmt.Errorf("the cluster in %s is secure: it cannot restart with --insecure (start a throwaway cluster elsewhere: tandem up --insecure --dir OTHER)", dir)}
		}
	}
	ctl, err := listenControl(dir)
	if err != nil {
		up := c.lc.UpPID
		if up != 0 && processAlive(up) {
			return fmt.Errorf("another 'tandem up' (pid %d) runs the cluster in %s already", up, dir)
		}
		return fmt.Errorf("another 'tandem up' runs the cluster in %s already (%v)", dir, err)
	}
	defer ctl.Close()
	if restart {
		fmt.Fprintf(out, "restarting the cluster in %s\n", dir)
	}
	scheme := "https" // the store's ports use mutual TLS
	if insecure {
		scheme = "http"
	}
	for i := len(c.lc.Nodes); i < n; i++ {
		p := basePort + 10*i
		name := fmt.Sprintf("n%d", i+1)
		c.lc.Nodes = append(c.lc.Nodes, LocalNode{
			Name: name, DataDir: filepath.Join(dir, name), Log: filepath.Join(dir, name+".log"),
			API:     net.JoinHostPort("127.0.0.1", strconv.Itoa(p)),
			PeerURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, p+1), StoreURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, p+2),
			DNS: net.JoinHostPort("127.0.0.1", strconv.Itoa(p+3)), Proxy: net.JoinHostPort("127.0.0.1", strconv.Itoa(p+4)),
		})
	}
	for i := range c.lc.Nodes {
		c.lc.Nodes[i].PID = 0
	}
	c.lc.UpPID = os.Getpid()
	if err := checkPorts(c.lc, restart); err != nil {
		return err
	}
	var addrs []string
	for _, nd := range c.lc.Nodes {
		addrs = append(addrs, nd.API)
	}
	defer c.stopAll()

	// Nodes that have data restart together (they need each other for a
	// quorum); new nodes start one at a time, joining those already up.
	var fresh []int
	for i, nd := range c.lc.Nodes {
		if _, err := os.Stat(filepath.Join(nd.DataDir, "node.json")); err == nil {
			if err := c.start(i, nil); err != nil {
				return err
			}
		} else {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) > 0 && fresh[0] == 0 {
		// A new cluster: copies of an earlier one's CA and tokens in dir
		// would not fit it.
		for _, f := range []string{"ca.crt", "admin.token", "join.token", "env"} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	for i := range c.lc.Nodes {
		if c.proc(c.lc.Nodes[i].Name) != nil {
			if err := c.waitNode(ctx, i); err != nil {
				return err
			}
		}
	}
	joinToken := ""
	for _, i := range fresh {
		var join []string
		for j := range c.lc.Nodes {
			if c.proc(c.lc.Nodes[j].Name) != nil {
				join = append(join, c.lc.Nodes[j].API)
			}
		}
		if len(join) > 0 && !insecure && joinToken == "" {
			if joinToken, err = c.createJoinToken(ctx, join); err != nil {
				return err
			}
		}
		if err := c.start(i, join); err != nil {
			return err
		}
		if err := c.waitNode(ctx, i); err != nil {
			return err
		}
	}
	if err := c.save(); err != nil {
		return err
	}
	envFile, err := c.writeEnv(addrs)
	if err != nil {
		return err
	}
	cl := c.client(addrs)
	if err := c.waitHealthy(ctx, cl); err != nil {
		return err
	}

	var rows [][]string
	for _, nd := range c.snapshot().Nodes {
		rows = append(rows, []string{nd.Name, strconv.Itoa(nd.PID), nd.API, nd.PeerURL, nd.StoreURL, nd.DNS, nd.Proxy})
	}
	g := &globals{out: out}
	g.table([]string{"NAME", "PID", "API", "PEER", "STORE", "DNS", "PROXY"}, rows)
	verb := "started"
	if restart {
		verb = "restarted"
	}
	fmt.Fprintf(out, "\ncluster %s: %d nodes; state in %s/cluster.json\n", verb, len(c.lc.Nodes), dir)
	c.mu.Lock()
	c.running = true // from here an agent that exits is reported
	c.mu.Unlock()
	go c.serveControl(ctx, ctl)
	if demo && !restart {
		if err := c.deployDemo(ctx, cl, min(3, len(c.lc.Nodes))); err != nil {
			fmt.Fprintf(out, "the demo service did not come up: %v (see the nodes' logs)\n", err)
		}
	}
	fmt.Fprintf(out, "to use it from another shell: source %s    (then: tandem status)\n\nevents (Ctrl-C stops the cluster):\n", shellQuote(relToWD(envFile)))
	_, rev, err := cl.Events(ctx, 0)
	if err != nil {
		rev = 0
	}
	// The watch moves between nodes and retries inside; it ends with ctx.
	err = cl.WatchEvents(ctx, rev+1, g.printEvent)
	if ctx.Err() != nil {
		return nil // stopAll (deferred) reports the stop
	}
	return err
}

// startSpawner returns a channel that starts processes from one goroutine
// locked to its OS thread for the life of the process. The agents get
// Pdeathsig, which Linux sends when the *thread* that forked them exits,
// not the process: Go may end an idle thread, so a child forked from an
// arbitrary goroutine could be signalled while `up` still runs. This
// goroutine never returns, so its thread lives exactly as long as `up`.
func startSpawner() chan<- spawnReq {
	ch := make(chan spawnReq)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose (see above)
		for r := range ch {
			r.reply <- r.cmd.Start()
		}
	}()
	return ch
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

// start starts node i's agent, joining through join when it is new.
func (c *upCluster) start(i int, join []string) error {
	c.mu.Lock()
	nd := c.lc.Nodes[i]
	basePort := c.lc.BasePort
	voters := c.lc.Voters
	insecure := c.lc.Insecure
	c.mu.Unlock()
	p := basePort + 10*i
	args := []string{"agent", "--name", nd.Name, "--data-dir", nd.DataDir,
		"--api-port", strconv.Itoa(p), "--peer-port", strconv.Itoa(p + 1), "--store-port", strconv.Itoa(p + 2),
		"--dns-port", strconv.Itoa(p + 3), "--proxy-port", strconv.Itoa(p + 4), "--voters", strconv.Itoa(voters)}
	for _, j := range join {
		args = append(args, "--join", j)
	}
	switch {
	case insecure:
		args = append(args, "--insecure")
	case len(join) > 0:
		args = append(args, "--token-file", filepath.Join(c.dir, "join.token"))
	}
	// A local cluster runs its instances as the user who started it (the
	// demo is this very binary, which may sit where nobody cannot reach).
	if u, err := user.Current(); err == nil {
		args = append(args, "--workload-user", u.Username, "--workload-allow-root")
	}
	args = append(args, c.extra...)

	logf, err := os.OpenFile(nd.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: Ctrl-C reaches only `up`, which then stops the
	// agents itself. Pdeathsig: if `up` dies without stopping them (SIGKILL,
	// a crash), the kernel sends each agent SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	reply := make(chan error, 1)
	c.spawn <- spawnReq{cmd: cmd, reply: reply}
	if err := <-reply; err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", nd.Name, err)
	}
	p0 := &agentProc{cmd: cmd, done: make(chan struct{})}
	c.mu.Lock()
	c.procs[nd.Name] = p0
	c.lc.Nodes[i].PID = cmd.Process.Pid
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.mu.Lock()
		if c.procs[nd.Name] == p0 {
			delete(c.procs, nd.Name)
			c.lc.Nodes[i].PID = 0
		}
		report := c.running && !c.stopping && !c.restarting[nd.Name]
		c.mu.Unlock()
		close(p0.done)
		if report {
			_ = c.save()
			fmt.Fprintf(c.out, "%s  %-15s agent %s exited (%v); restart it with: tandem up restart %s%s\n",
				time.Now().Format("15:04:05.000"), "process-exit", nd.Name, exitText(err), nd.Name, c.dirFlag())
		}
	}()
	return nil
}

// dirFlag is the --dir flag a user needs to reach this cluster from its
// parent directory, empty for the default.
func (c *upCluster) dirFlag() string {
	if wd, err := os.Getwd(); err == nil && filepath.Join(wd, "tandem-local") == c.dir {
		return ""
	}
	return " --dir " + c.dir
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (c *upCluster) proc(name string) *agentProc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[name]
}

func (c *upCluster) snapshot() LocalCluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	lc := c.lc
	lc.Nodes = append([]LocalNode(nil), c.lc.Nodes...)
	return lc
}

// save writes cluster.json (atomically: readers never see half a file).
func (c *upCluster) save() error {
	b, _ := json.MarshalIndent(c.snapshot(), "", "  ")
	tmp := filepath.Join(c.dir, ".cluster.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, "cluster.json"))
}

// waitNode polls node i's health until it answers; it fails at once if the
// agent exits.
func (c *upCluster) waitNode(ctx context.Context, i int) error {
	nd := c.snapshot().Nodes[i]
	p := c.proc(nd.Name)
	if p == nil {
		return fmt.Errorf("node %s is not running; see %s", nd.Name, nd.Log)
	}
	var one *client.Client
	var last error
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		// A new cluster's CA and admin token appear once its first node
		// has bootstrapped.
		if err := c.loadCredentials(); err != nil {
			last = err
		} else {
			if one == nil {
				one = c.client([]string{nd.API})
			}
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			_, last = one.Health(hctx)
			cancel()
			if last == nil {
				return nil
			}
			var terr *client.TLSError
			if errors.As(last, &terr) || client.IsStatus(last, http.StatusUnauthorized) {
				c.forgetCredentials() // read them again: they may have been half written
				one = nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("node %s exited while starting; see %s%s", nd.Name, nd.Log, logHint(nd.Log))
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s did not become ready in 90s (%v); see %s", nd.Name, last, nd.Log)
}

// waitHealthy polls until every node is alive and the voters are at target.
// A node that exits meanwhile ends the wait at once, naming its log.
func (c *upCluster) waitHealthy(ctx context.Context, cl *client.Client) error {
	lc := c.snapshot()
	nodes, voters := len(lc.Nodes), min(lc.Voters, len(lc.Nodes))
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
		for _, nd := range lc.Nodes {
			if p := c.proc(nd.Name); p == nil {
				return fmt.Errorf("node %s exited before the cluster was healthy; see %s%s", nd.Name, nd.Log, logHint(nd.Log))
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("cluster not healthy after 60s: %w", last)
}

// logHint returns the last error line of an agent's log, indented, so
// that the reason shows without opening the file.
func logHint(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i := len(lines) - 1; i >= 0 && i >= len(lines)-20; i-- {
		if strings.HasPrefix(lines[i], "error:") {
			return "\n  " + lines[i]
		}
	}
	return ""
}

// checkPorts fails, before any agent starts, when a port a node needs is
// taken, saying what to do about it.
func checkPorts(lc LocalCluster, restart bool) error {
	kinds := []string{"API", "peer", "store", "DNS", "proxy"}
	for i, nd := range lc.Nodes {
		for k, kind := range kinds {
			port := lc.BasePort + 10*i + k
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			ln, err := net.Listen("tcp", addr)
			if err == nil {
				ln.Close()
			}
			if err == nil && kind == "DNS" {
				var pc net.PacketConn
				if pc, err = net.ListenPacket("udp", addr); err == nil {
					pc.Close()
				}
			}
			if err == nil {
				continue
			}
			why := fmt.Sprintf("port %d (%s's %s port) is taken", port, nd.Name, kind)
			if restart {
				return fmt.Errorf("%s: maybe by an agent of an earlier 'tandem up' of this cluster that still runs (find it: ss -ltnp 'sport = :%d'); stop it and run 'tandem up' again, or start a new cluster on free ports: tandem up --dir OTHER_DIR --base-port N (this cluster keeps --base-port %d)",
					why, port, lc.BasePort)
			}
			return fmt.Errorf("%s (find what holds it: ss -ltnp 'sport = :%d'); pick free ports with --base-port N (nodes use N to N+%d)",
				why, port, 10*len(lc.Nodes)-1)
		}
	}
	return nil
}

// stopAll stops every agent at once: SIGTERM to all, then waits for all of
// them together; those still running after stopTimeout, or after a second
// Ctrl-C, are killed. It says when the cluster has stopped.
func (c *upCluster) stopAll() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	c.mu.Lock()
	c.stopping = true
	procs := make(map[string]*agentProc, len(c.procs))
	for name, p := range c.procs {
		procs[name] = p
	}
	c.mu.Unlock()
	if len(procs) == 0 {
		c.finish()
		return
	}
	start := time.Now()
	fmt.Fprintln(c.out, "\nstopping the cluster...")
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	timeout := time.NewTimer(stopTimeout)
	defer timeout.Stop()
	var killed []string
	kill := func(why string) {
		for name, p := range procs {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Kill()
				killed = append(killed, name)
			}
		}
		if len(killed) > 0 {
			fmt.Fprintf(c.out, "killed %s (%s)\n", strings.Join(killed, ", "), why)
		}
	}
	for name, p := range procs {
		select {
		case <-p.done:
		case <-timeout.C:
			kill(fmt.Sprintf("still running %s after SIGTERM", stopTimeout))
			<-p.done
		case <-sigs:
			kill("stopped at once on a second signal")
			<-p.done
		}
		delete(procs, name)
	}
	c.stopInstances()
	c.finish()
	fmt.Fprintf(c.out, "cluster stopped in %.1fs\n", time.Since(start).Seconds())
}

// stopInstances stops the service instances the agents ran, which outlive
// their agents by design (a restarted agent adopts them): the local
// cluster stops as a whole. A restart of the cluster starts them again.
func (c *upCluster) stopInstances() {
	var live []supervisor.State
	for _, nd := range c.snapshot().Nodes {
		b, err := os.ReadFile(filepath.Join(nd.DataDir, "workloads", "processes.json"))
		if err != nil {
			continue
		}
		var states []supervisor.State
		if json.Unmarshal(b, &states) != nil {
			continue
		}
		for _, st := range states {
			if st.Pgid > 0 && st.Alive() {
				live = append(live, st)
				_ = syscall.Kill(-st.Pgid, syscall.SIGTERM)
			}
		}
	}
	// Until every leader is gone (a zombie counts as gone: its parent,
	// the agent, has exited), SIGKILL after 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for _, st := range live {
		for st.Alive() {
			if time.Now().After(deadline) {
				_ = syscall.Kill(-st.Pgid, syscall.SIGKILL)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// deployDemo runs the demo service (tandem demo) with count instances and
// waits until they answer, then says how to reach it.
func (c *upCluster) deployDemo(ctx context.Context, cl *client.Client, count int) error {
	spec := registry.Service{Name: "demo"}
	spec.Run.Command = []string{c.exe, "demo"}
	spec.Count = count
	spec.Ports = []scheduler.PortSpec{{Name: "http"}}
	spec.Checks = []registry.Check{{Type: registry.CheckHTTP, HTTP: "/healthz", Interval: config.Duration(time.Second)}}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := cl.PutService(rctx, spec)
	cancel()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		d, err := cl.Service(rctx, "demo")
		cancel()
		if err == nil {
			if line, done := deployProgress(d); done {
				proxy := c.snapshot().Nodes[0].Proxy
				fmt.Fprintf(c.out, "demo service: %s; try: curl -H 'Host: demo' http://%s/\n", line, proxy)
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("not all %d instances passing after a minute", count)
			}
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// finish marks the cluster stopped in cluster.json.
func (c *upCluster) finish() {
	c.mu.Lock()
	for i := range c.lc.Nodes {
		c.lc.Nodes[i].PID = 0
	}
	c.lc.UpPID = 0
	c.mu.Unlock()
	_ = c.save()
}

// restart stops node name (if it runs) and starts it again on its data;
// it returns once the node answers.
func (c *upCluster) restart(ctx context.Context, name string, progress func(string)) (int, error) {
	c.mu.Lock()
	i := -1
	for j, nd := range c.lc.Nodes {
		if nd.Name == name {
			i = j
		}
	}
	stopping := c.stopping
	p := c.procs[name]
	var names []string
	for _, nd := range c.lc.Nodes {
		names = append(names, nd.Name)
	}
	c.mu.Unlock()
	if i < 0 {
		return 0, fmt.Errorf("no node %q in this cluster (nodes: %s)", name, strings.Join(names, ", "))
	}
	if stopping {
		return 0, errors.New("the cluster is stopping")
	}
	c.mu.Lock()
	if c.restarting[name] {
		c.mu.Unlock()
		return 0, fmt.Errorf("%s is being restarted already", name)
	}
	c.restarting[name] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.restarting, name)
		c.mu.Unlock()
	}()
	if p != nil {
		progress(fmt.Sprintf("stopping %s (pid %d)", name, p.cmd.Process.Pid))
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	fmt.Fprintf(c.out, "%s  %-15s restarting agent %s\n", time.Now().Format("15:04:05.000"), "process-start", name)
	if err := c.start(i, nil); err != nil {
		return 0, err
	}
	_ = c.save()
	progress(fmt.Sprintf("started %s (pid %d); waiting for it to answer", name, c.snapshot().Nodes[i].PID))
	if err := c.waitNode(ctx, i); err != nil {
		return 0, err
	}
	return c.snapshot().Nodes[i].PID, nil
}

// controlAddr is the abstract unix socket through which `tandem up restart`
// reaches the `up` running the cluster in dir: no file to clean up, no
// path length limit, and a second `up` on the same dir is refused.
func controlAddr(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return "@tandem-up-" + hex.EncodeToString(h[:12])
}

func listenControl(dir string) (net.Listener, error) {
	return net.Listen("unix", controlAddr(dir))
}

// controlMsg is one line of the control protocol: a request from `up
// restart`, then progress lines and a final answer from `up`.
type controlMsg struct {
	Op       string `json:"op,omitempty"`
	Node     string `json:"node,omitempty"`
	Progress string `json:"progress,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Error    string `json:"error,omitempty"`
	Done     bool   `json:"done,omitempty"`
}

func (c *upCluster) serveControl(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			var req controlMsg
			if err := json.NewDecoder(conn).Decode(&req); err != nil {
				return
			}
			enc := json.NewEncoder(conn)
			if req.Op != "restart" {
				_ = enc.Encode(controlMsg{Done: true, Error: fmt.Sprintf("unknown request %q", req.Op)})
				return
			}
			pid, err := c.restart(ctx, req.Node, func(s string) { _ = enc.Encode(controlMsg{Progress: s}) })
			if err != nil {
				_ = enc.Encode(controlMsg{Done: true, Error: err.Error()})
				return
			}
			_ = enc.Encode(controlMsg{Done: true, PID: pid})
		}()
	}
}

func newUpRestartCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Restart one node of the cluster a running 'tandem up' owns",
		Long: `Ask the 'tandem up' running the cluster in DIR to restart node NAME: it stops
the node's agent if it runs, starts it again on its data dir (the node keeps
its name, ports and data), updates DIR/cluster.json and returns once the node
answers. Use it to bring back a node you killed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			conn, err := net.Dial("unix", controlAddr(abs))
			if err != nil {
				return fmt.Errorf("no 'tandem up' runs the cluster in %s (start it with: tandem up --dir %s)", abs, dir)
			}
			defer conn.Close()
			go func() {
				<-cmd.Context().Done()
				conn.Close()
			}()
			if err := json.NewEncoder(conn).Encode(controlMsg{Op: "restart", Node: args[0]}); err != nil {
				return err
			}
			sc := bufio.NewScanner(conn)
			for sc.Scan() {
				var m controlMsg
				if json.Unmarshal(sc.Bytes(), &m) != nil {
					continue
				}
				if m.Progress != "" {
					fmt.Fprintln(g.out, m.Progress)
				}
				if m.Done {
					if m.Error != "" {
						return fmt.Errorf("restart %s: %s", args[0], m.Error)
					}
					fmt.Fprintf(g.out, "%s restarted (pid %d)\n", args[0], m.PID)
					return nil
				}
			}
			if cmd.Context().Err() != nil {
				return cmd.Context().Err()
			}
			return errors.New("'tandem up' ended before the restart finished")
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "tandem-local", "the directory of the cluster (as given to 'tandem up')")
	return cmd
}

// lockedWriter serialises writes from the event watch and the agents'
// waiters; the first failed write (a closed pipe) calls broken.
type lockedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	broken func()
	failed bool
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed {
		return len(p), nil // nobody reads any more; keep going quietly
	}
	n, err := l.w.Write(p)
	if err != nil {
		l.failed = true
		l.broken()
		return len(p), nil
	}
	return n, nil
}

// watchStdout makes a broken standard output (its reader gone, as after
// `tandem up | head`) end `up` cleanly: SIGPIPE no longer kills the
// process (writes fail with EPIPE instead, seen by lockedWriter), and a
// pipe whose reader left is noticed within a second even when `up` has
// nothing to print.
func watchStdout(ctx context.Context, broken func()) {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	var st unix.Stat_t
	if unix.Fstat(1, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	go func() {
		for {
			fds := []unix.PollFd{{Fd: 1, Events: 0}}
			if n, err := unix.Poll(fds, 0); err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
				broken()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
