package system

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/supervisor"
	"github.com/tandemhq/tandem/internal/wire"
)

// tandem runs the CLI and returns its standard output.
func tandem(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(clustertest.Binary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "TANDEM_ADDR=")
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("tandem %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// cliEnv points the CLI runs of this test at c's credentials (its CA and
// admin token, or --insecure).
func cliEnv(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	for _, kv := range c.CLIEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// upEnv points the CLI runs of this test at the credentials `tandem up
// --dir dir` wrote (the files its DIR/env names).
func upEnv(t *testing.T, dir string) {
	t.Helper()
	t.Setenv("TANDEM_CA", filepath.Join(dir, "ca.crt"))
	t.Setenv("TANDEM_TOKEN_FILE", filepath.Join(dir, "admin.token"))
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil || !strings.Contains(string(env), "TANDEM_CA=") {
		t.Fatalf("up's env file: %v %s", err, env)
	}
}

func mustTandem(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tandem(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCLIFailsOverBetweenAddresses gives the CLI a dead address first: every
// command moves on to a live node.
func TestCLIFailsOverBetweenAddresses(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	cliEnv(t, c)
	dead := c.Nodes[0]
	dead.Kill()
	addr := "--addr=" + dead.API + "," + c.Nodes[1].API + "," + c.Nodes[2].API

	// The killed node may have been the leader: a write during the
	// election is refused (503, outcome unknown), so wait for one to pass.
	c.Eventually(15*time.Second, "put through the live addresses", func() error {
		out, err := tandem(t, "kv", "put", addr, "cli/key", "hello")
		if err == nil && !strings.HasPrefix(out, "OK revision") {
			t.Fatalf("put: %q", out)
		}
		return err
	})
	if out := mustTandem(t, "kv", "get", addr, "cli/key"); out != "hello\n" {
		t.Fatalf("get: %q", out)
	}
	var got wire.GetResult
	if err := json.Unmarshal([]byte(mustTandem(t, "kv", "get", addr, "--stale", "--json", "cli/key")), &got); err != nil {
		t.Fatal(err)
	}
	if got.Value != "hello" || got.Consistency != "stale" || got.LastContactMs == nil {
		t.Fatalf("stale get --json: %+v", got)
	}
	if out := mustTandem(t, "kv", "ls", addr, "cli/"); !strings.Contains(out, "KEY") || !strings.Contains(out, "cli/key") {
		t.Fatalf("ls: %q", out)
	}
	members := mustTandem(t, "members", addr)
	if !strings.Contains(members, "NAME") || !strings.Contains(members, dead.Name) {
		t.Fatalf("members: %q", members)
	}
	c.Eventually(15*time.Second, "members shows the killed node dead", func() error {
		for _, line := range strings.Split(mustTandem(t, "members", addr), "\n") {
			if strings.HasPrefix(line, dead.Name+" ") && strings.Contains(line, "dead") {
				return nil
			}
		}
		return fmt.Errorf("%s not shown dead", dead.Name)
	})
	status := mustTandem(t, "status", addr)
	for _, want := range []string{"fault tolerance:", "store leader:", "autopilot:", "2 alive of 3"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	if out := mustTandem(t, "kv", "del", addr, "cli/key"); !strings.HasPrefix(out, "deleted 1") {
		t.Fatalf("del: %q", out)
	}
	if _, err := tandem(t, "kv", "get", addr, "cli/key"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := tandem(t, "kv", "get", "--addr=127.0.0.1:1", "x"); err == nil || !strings.Contains(err.Error(), "no node answered") {
		t.Fatalf("no live address: want a clear error, got %v", err)
	}
}

// TestLeaveAndRemove: a voter leaves cleanly and autopilot promotes the
// client node; a killed node is removed by the operator.
func TestLeaveAndRemove(t *testing.T) {
	c := clustertest.Start(t, 4, clustertest.Options{Mode: clustertest.Processes})
	cliEnv(t, c)
	leaver := c.Leader()
	mustTandem(t, "leave", "--addr="+leaver.API)
	c.Eventually(30*time.Second, leaver.Name+" exits after leaving", func() error {
		if leaver.Running() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	c.Eventually(60*time.Second, "a client node is promoted to keep 3 voters", func() error {
		st, err := c.Status()
		if err != nil {
			return err
		}
		if st.Voters != 3 || st.VotersAlive != 3 || st.FaultTolerance != 1 || st.Nodes != 3 {
			return fmt.Errorf("%d voters, %d alive, tolerance %d, %d nodes", st.Voters, st.VotersAlive, st.FaultTolerance, st.Nodes)
		}
		return nil
	})

	var victim *clustertest.Node
	for _, nd := range c.Nodes {
		if nd.Running() && nd != c.Leader() {
			victim = nd
			break
		}
	}
	addr := "--addr=" + c.Leader().API
	if _, err := tandem(t, "node", "remove", addr, victim.Name); err == nil || !strings.Contains(err.Error(), "alive") {
		t.Fatalf("removing a live node must be refused, got %v", err)
	}
	victim.Kill()
	c.Eventually(15*time.Second, "remove the dead node", func() error {
		_, err := tandem(t, "node", "remove", addr, victim.Name)
		return err
	})
	out := mustTandem(t, "members", addr)
	if strings.Contains(out, victim.Name+" ") {
		t.Fatalf("removed node still listed:\n%s", out)
	}
}

// freeBase finds a base port with the 10 ports of each of n nodes free, in
// the range where nothing takes ports behind our back while `up` restarts
// its nodes on the same ports (clustertest.StaticPortRange).
func freeBase(t *testing.T, n int) int {
	lo, hi := clustertest.StaticPortRange()
	for range 50 {
		base := lo + 10*rand.IntN((hi-lo-10*n)/10)
		ok := true
		var lns []net.Listener
		for p := base; p < base+10*n; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestUp runs `tandem up` as a user would: it starts five agents (three
// voters, two client nodes), prints them, writes cluster.json, stops them
// all on Ctrl-C, and restarts the same cluster with its data.
func TestUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "local")
	base := freeBase(t, 5)
	addr := fmt.Sprintf("--addr=127.0.0.1:%d,127.0.0.1:%d", base, base+10)

	run := func(wantLine string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(clustertest.Binary(t), "up", "--nodes", "5", "--dir", dir, "--base-port", fmt.Sprint(base))
		pr, pw, _ := os.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		out := &bytes.Buffer{}
		seen := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(pr)
			closed := false
			for sc.Scan() {
				out.WriteString(sc.Text() + "\n")
				if !closed && strings.Contains(sc.Text(), wantLine) {
					close(seen)
					closed = true
				}
			}
			if !closed {
				close(seen)
			}
		}()
		select {
		case <-seen:
		case <-time.After(2 * time.Minute):
			t.Fatalf("up did not print %q in 2 minutes", wantLine)
		}
		if !strings.Contains(out.String(), wantLine) {
			t.Fatalf("up exited without %q:\n%s%s", wantLine, out, nodeLogs(dir))
		}
		return cmd, out
	}
	stop := func(cmd *exec.Cmd, out *bytes.Buffer) []int {
		var lc struct {
			Nodes []struct {
				PID int `json:"pid"`
			} `json:"nodes"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &lc); err != nil || len(lc.Nodes) != 5 {
			t.Fatalf("cluster.json: %v %s", err, b)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("up after Ctrl-C: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("up did not stop within a minute of Ctrl-C")
		}
		if err := clustertest.Poll(5*time.Second, func() error {
			if !strings.Contains(out.String(), "cluster stopped in") {
				return errors.New("no 'cluster stopped' line")
			}
			return nil
		}); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		var pids []int
		for _, nd := range lc.Nodes {
			pids = append(pids, nd.PID)
			if syscall.Kill(nd.PID, 0) == nil {
				t.Errorf("agent %d still runs after up stopped", nd.PID)
			}
		}
		return pids
	}

	cmd, out := run("cluster started")
	upEnv(t, dir)
	for _, want := range []string{"NAME", "n1", "n2", "n3", "n5", fmt.Sprintf("127.0.0.1:%d", base+40)} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("up output lacks %q:\n%s", want, out)
		}
	}
	mustTandem(t, "kv", "put", addr, "up/key", "kept")
	// up deploys the demo service: three instances, answering through
	// every node's proxy.
	demoAnswers := func() {
		t.Helper()
		for i := range 5 {
			proxy := fmt.Sprintf("127.0.0.1:%d", base+10*i+4)
			if err := clustertest.Poll(time.Minute, func() error {
				req, _ := http.NewRequest("GET", "http://"+proxy+"/", nil)
				req.Host = "demo"
				resp, err := proxyClient().Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !strings.Contains(string(b), "demo instance") {
					return fmt.Errorf("%d %s", resp.StatusCode, b)
				}
				return nil
			}); err != nil {
				t.Fatalf("the demo through %s: %v\n%s", proxy, err, out)
			}
		}
	}
	demoAnswers()
	if err := clustertest.Poll(time.Minute, func() error {
		if !strings.Contains(out.String(), "demo service: 3/3 running, 3 passing") {
			return errors.New("no demo line")
		}
		return nil
	}); err != nil {
		t.Fatalf("up's output: %v\n%s", err, out)
	}
	stop(cmd, out)
	for i := range 5 {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d", i+1), "workloads", "processes.json"))
		var states []supervisor.State
		_ = json.Unmarshal(b, &states)
		for _, st := range states {
			if st.Alive() {
				t.Errorf("instance %s (pid %d) still runs after up stopped", st.Task.ID, st.Pid)
			}
		}
	}

	cmd, out = run("cluster restarted")
	if got := mustTandem(t, "kv", "get", addr, "up/key"); got != "kept\n" {
		t.Fatalf("after restart: %q", got)
	}
	demoAnswers()
	stop(cmd, out)
}

// TestUpReportsTakenPort restarts a `tandem up` cluster while another
// process holds one of n3's ports: up must fail at once, naming the node
// and its log, and the log must say which flag picks another port.
func TestUpReportsTakenPort(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "local")
	base := freeBase(t, 3)
	up := func() (*exec.Cmd, *syncBuffer, chan error) {
		cmd := exec.Command(clustertest.Binary(t), "up", "--nodes", "3", "--dir", dir, "--base-port", fmt.Sprint(base))
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return cmd, out, done
	}
	cmd, out, done := up()
	if err := clustertest.Poll(2*time.Minute, func() error {
		select {
		case err := <-done:
			t.Fatalf("up exited: %v\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "cluster started") {
			return errors.New("not started yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("up did not start the cluster: %v\n%s", err, out)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up after Ctrl-C: %v\n%s", err, out)
		}
	case <-time.After(time.Minute):
		t.Fatal("up did not stop within a minute of Ctrl-C")
	}

	proxyPort := base + 20 + 4 // n3's proxy port
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", proxyPort))
	if err != nil {
		t.Fatalf("hold n3's proxy port: %v", err)
	}
	defer ln.Close()
	_, out, done = up()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("up succeeded with n3's proxy port taken:\n%s", out)
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("up still runs 45 s after a restart with n3's proxy port taken:\n%s", out)
	}
	// up checks the ports before starting anything: its error names the
	// port, the node and what to do (--base-port), and cluster.json says
	// nothing runs.
	for _, want := range []string{fmt.Sprintf("port %d (n3's proxy port) is taken", proxyPort), "--base-port"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("up's error lacks %q:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer that a process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// nodeLogs returns the last lines of every node log `up` wrote in dir.
func nodeLogs(dir string) string {
	logs, _ := filepath.Glob(filepath.Join(dir, "n*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "\n--- last lines of %s:\n%s\n", filepath.Base(l), strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}

// TestServiceCLI registers from a YAML file through the CLI and inspects
// the result with ls and show; a file with one bad instance registers
// nothing.
func TestServiceCLI(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1, Mode: clustertest.Processes})
	cliEnv(t, c)
	addr := "--addr=" + c.Nodes[0].API
	dir := t.TempDir()
	good := filepath.Join(dir, "web.yaml")
	if err := os.WriteFile(good, []byte(`services:
  - name: web
    checks: [{type: tcp, interval: 200ms}]
    instances:
      - {id: web-1, address: 127.0.0.1, port: `+strings.Split(c.Nodes[0].API, ":")[1]+`}
      - {id: web-2, address: 127.0.0.1, port: 1}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("services:\n  - name: other\n    instances:\n      - {id: a, address: 127.0.0.1, port: 80}\n      - {id: b, address: 127.0.0.1, port: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tandem(t, "service", "register", addr, "-f", bad); err == nil || !strings.Contains(err.Error(), "nothing was registered") {
		t.Fatalf("bad file: %v", err)
	}
	out := mustTandem(t, "service", "register", addr, "-f", good)
	if !strings.Contains(out, "registered web/web-1 on n1") || !strings.Contains(out, "registered web/web-2 on n1") {
		t.Fatalf("register: %q", out)
	}
	c.Eventually(15*time.Second, "web-1 passing, web-2 critical", func() error {
		out, err := tandem(t, "service", "ls", addr)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 5 && f[0] == "web" && f[1] == "2" && f[2] == "1" && f[3] == "0" && f[4] == "1" {
				return nil
			}
		}
		return fmt.Errorf("ls:\n%s", out)
	})
	if out := mustTandem(t, "service", "ls", addr); strings.Contains(out, "other") {
		t.Fatalf("the bad file registered something:\n%s", out)
	}
	show := mustTandem(t, "service", "show", addr, "web")
	for _, want := range []string{"web-1", "passing", "web-2", "critical", "connection refused", "n1"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
	mustTandem(t, "service", "deregister", addr, "web", "web-2")
	if out := mustTandem(t, "service", "show", addr, "web"); strings.Contains(out, "web-2") {
		t.Fatalf("after deregister:\n%s", out)
	}
}

// TestUpRestartAndDeath kills a node of a running `tandem up`, brings it
// back with `tandem up restart`, then SIGKILLs up itself: its agents must
// die with it (Pdeathsig), and cluster.json follows every step.
func TestUpRestartAndDeath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "local")
	base := freeBase(t, 3)
	cmd := exec.Command(clustertest.Binary(t), "up", "--nodes", "3", "--dir", dir, "--base-port", fmt.Sprint(base))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var lc struct {
		UpPID int `json:"up_pid"`
		Nodes []struct {
			Name string `json:"name"`
			PID  int    `json:"pid"`
		} `json:"nodes"`
	}
	read := func() {
		b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
		if err == nil {
			err = json.Unmarshal(b, &lc)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for _, nd := range lc.Nodes {
			if nd.PID != 0 {
				_ = syscall.Kill(nd.PID, syscall.SIGKILL)
			}
		}
	})
	if err := clustertest.Poll(2*time.Minute, func() error {
		select {
		case err := <-done:
			t.Fatalf("up exited: %v\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "cluster started") {
			return errors.New("not started yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("up did not start the cluster: %v\n%s", err, out)
	}
	read()
	if lc.UpPID != cmd.Process.Pid {
		t.Fatalf("cluster.json up_pid %d, want %d", lc.UpPID, cmd.Process.Pid)
	}
	old := lc.Nodes[0].PID
	_ = syscall.Kill(old, syscall.SIGKILL)
	if err := clustertest.Poll(30*time.Second, func() error {
		read()
		if lc.Nodes[0].PID != 0 || !strings.Contains(out.String(), "tandem up restart n1") {
			return errors.New("n1's exit not recorded yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := mustTandem(t, "up", "restart", "n1", "--dir", dir)
	if !strings.Contains(got, "n1 restarted") {
		t.Fatalf("up restart: %q", got)
	}
	read()
	if lc.Nodes[0].PID == 0 || lc.Nodes[0].PID == old || syscall.Kill(lc.Nodes[0].PID, 0) != nil {
		t.Fatalf("cluster.json after restart: %+v", lc)
	}
	if _, err := tandem(t, "up", "restart", "n9", "--dir", dir); err == nil || !strings.Contains(err.Error(), `no node "n9"`) {
		t.Fatalf("restart of an unknown node: %v", err)
	}

	_ = cmd.Process.Kill()
	<-done
	if err := clustertest.Poll(30*time.Second, func() error {
		for _, nd := range lc.Nodes {
			if syscall.Kill(nd.PID, 0) == nil {
				return fmt.Errorf("agent %s (pid %d) still runs after up was killed", nd.Name, nd.PID)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
