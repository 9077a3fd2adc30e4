package robustness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
)

// webSpec is the service under test. Its checks and timeouts are short so
// that a dead or hung instance is found fast: a check every 200 ms, two
// failures to turn critical, and a 500 ms bound on a response's headers so
// the proxy gives up on a frozen instance (504, and a GET goes to another).
var webSpec = registry.Service{
	Name: "web",
	Checks: []registry.Check{{
		Type: registry.CheckHTTP, HTTP: "/healthz",
		Interval: config.Duration(200 * time.Millisecond),
		Timeout:  config.Duration(500 * time.Millisecond),
	}},
	Timeouts: registry.ProxyTimeouts{ResponseHeader: config.Duration(500 * time.Millisecond)},
}

// The fault timeline, measured from the start of the traffic.
const (
	killBackendAt    = 3 * time.Second
	restartBackendAt = 7 * time.Second
	stopBackendAt    = 10 * time.Second
	contBackendAt    = 14 * time.Second
	killNodeAt       = 17 * time.Second
	restartNodeAt    = 23 * time.Second
	stopLeaderAt     = 26 * time.Second
	contLeaderAt     = 30 * time.Second
	trafficFor       = 34 * time.Second
)

// TestAvailabilityUnderFaults sends GETs and POSTs through every node's
// proxy of a three-node cluster to a service with two instances on every
// node, each a process of its own, while a timeline of faults runs: kill -9
// an instance and start it again; SIGSTOP another and SIGCONT it; kill -9
// the node holding store leadership together with its two instances, then
// start them all again. It requires 99.9% of GETs to succeed, and no POST
// to reach a backend twice, and logs the figures of every phase.
func TestAvailabilityUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Client().PutService(ctx, webSpec); err != nil {
		t.Fatalf("store the service: %v", err)
	}
	backends := map[*clustertest.Node][]*backend{}
	var all []*backend
	for _, nd := range c.Nodes {
		for _, s := range []string{"a", "b"} {
			b := startBackend(t, "web-"+nd.Name+s)
			if _, err := nd.Client().Register(ctx, registry.Instance{Service: webSpec.Name, ID: b.name, Address: "127.0.0.1", Port: b.port}); err != nil {
				t.Fatalf("register %s on %s: %v", b.name, nd.Name, err)
			}
			backends[nd] = append(backends[nd], b)
			all = append(all, b)
		}
	}
	d, err := waitViews(c.Nodes, all, true, 30*time.Second)
	if err != nil {
		t.Fatalf("the instances did not all pass in every view: %v", err)
	}
	t.Logf("all %d instances passing in every node's view %s after registration", len(all), roundMS(d))

	var proxies []string
	for _, nd := range c.Nodes {
		proxies = append(proxies, nd.Proxy)
	}
	tr := Traffic{Proxies: proxies, Service: webSpec.Name}.withDefaults()
	start := time.Now()
	tctx, stop := context.WithCancel(context.Background())
	defer stop()
	type result struct {
		reqs []Request
		err  error
	}
	done := make(chan result, 1)
	go func() {
		reqs, err := tr.Run(tctx, start)
		done <- result{reqs, err}
	}()

	// The timeline is a schedule: sleeping until its next point is what it
	// means. What the faults do to the views is measured by polling.
	var (
		events   []Event
		problems []string
	)
	until := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	// mark notes an event just before it is injected, so that requests
	// invoked while it happens count in its phase.
	mark := func(what string) {
		ev := Event{At: time.Since(start), What: what}
		events = append(events, ev)
		t.Logf("%6.2fs %s", ev.At.Seconds(), what)
	}
	measure := func(nodes []*clustertest.Node, bs []*backend, passing bool, what string) {
		d, err := waitViews(nodes, bs, passing, 15*time.Second)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: not within 15s: %v", what, err))
			return
		}
		t.Logf("        %s %s later", what, roundMS(d))
	}

	leader := c.Leader()
	var others []*clustertest.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	killed, frozen := backends[others[0]][0], backends[others[1]][0]

	until(killBackendAt)
	mark("kill -9 instance " + killed.name)
	killed.kill()
	measure(c.Nodes, []*backend{killed}, false, killed.name+" out of every view")
	until(restartBackendAt)
	mark("restart " + killed.name)
	killed.start()
	measure(c.Nodes, []*backend{killed}, true, killed.name+" passing in every view")

	until(stopBackendAt)
	mark("SIGSTOP instance " + frozen.name)
	frozen.signal(syscall.SIGSTOP)
	measure(c.Nodes, []*backend{frozen}, false, frozen.name+" out of every view")
	until(contBackendAt)
	mark("SIGCONT " + frozen.name)
	frozen.signal(syscall.SIGCONT)
	measure(c.Nodes, []*backend{frozen}, true, frozen.name+" passing in every view")

	victim := c.Leader() // asked ahead: the answer can take a while
	var survivors []*clustertest.Node
	for _, nd := range c.Nodes {
		if nd != victim {
			survivors = append(survivors, nd)
		}
	}
	until(killNodeAt)
	mark(fmt.Sprintf("kill -9 node %s (store leader) and instances %s, %s", victim.Name, backends[victim][0].name, backends[victim][1].name))
	victim.Kill()
	for _, b := range backends[victim] {
		b.kill()
	}
	measure(survivors, backends[victim], false, "its instances out of the other nodes' views")
	until(restartNodeAt)
	mark("restart node " + victim.Name + " and its instances")
	for _, b := range backends[victim] {
		b.start()
	}
	victim.Restart()
	measure(c.Nodes, all, true, "all instances passing in every view")

	// Freeze the (new) store leader's agent for twice the lease TTL; its
	// instances keep running. When it resumes, etcd's lessor on it still
	// believes it leads and revokes every lease it thinks expired: every
	// node's (etcd issue 15247; its guard does not see a paused process).
	// Each node takes a new lease the moment its alive key goes.
	frozenNode := c.Leader()
	until(stopLeaderAt)
	mark("SIGSTOP node " + frozenNode.Name + " (store leader)")
	frozenNode.Stop()
	until(contLeaderAt)
	mark("SIGCONT node " + frozenNode.Name)
	frozenNode.Cont()
	measure(c.Nodes, all, true, "all instances passing in every view")

	until(trafficFor)
	stop()
	res := <-done
	end := time.Since(start)
	if res.err != nil {
		t.Fatal(res.err)
	}

	var logs []string
	for _, b := range all {
		logs = append(logs, b.postLog)
	}
	delivered, err := Deliveries(logs)
	if err != nil {
		t.Fatalf("read the backends' post logs: %v", err)
	}
	a, posts := Summarize(res.reqs, events, end), CheckPosts(res.reqs, delivered)
	logAvailability(t, tr, a, posts, events, end)

	if n := len(posts.Twice); n > 0 {
		problems = append(problems, fmt.Sprintf("%d POSTs reached a backend twice; first: %s (%d times)", n, posts.Twice[0], delivered[posts.Twice[0].ID]))
	}
	if n := len(posts.Lost); n > 0 {
		problems = append(problems, fmt.Sprintf("%d acknowledged POSTs are in no backend's log; first: %s", n, posts.Lost[0]))
	}
	if a.Gets < 1000 {
		problems = append(problems, fmt.Sprintf("only %d GETs were sent: too few to measure a 99.9%% success rate (is the machine overloaded?)", a.Gets))
	}
	if a.GetRate() < 0.999 {
		problems = append(problems, fmt.Sprintf("GET success %.3f%% is below the goal of 99.9%% (%d of %d failed; causes above)", 100*a.GetRate(), a.Gets-a.GetsOK, a.Gets))
	}
	if len(problems) > 0 {
		dir := keepAvailabilityEvidence(t, c, all, res.reqs, problems)
		t.Fatalf("%s\nevidence (failed requests, node and backend logs) in %s", strings.Join(problems, "\n"), dir)
	}
}

// logAvailability logs the figures of a run.
func logAvailability(t *testing.T, tr Traffic, a Availability, posts Posts, events []Event, end time.Duration) {
	t.Logf("%d requests in %.1fs through %d proxies by %d clients; %d client failovers to another proxy", a.Requests, end.Seconds(), len(tr.Proxies), tr.Clients, a.Failovers)
	t.Logf("GETs: %s succeeded", successRate(a.GetsOK, a.Gets))
	t.Logf("POSTs: %d sent, %d acknowledged, %d failed (%d reached no proxy, %d reached a backend once); delivered twice: %d; acknowledged but not delivered: %d",
		a.Posts, a.PostsOK, a.Posts-a.PostsOK, a.PostsNotSent, len(posts.FailedDelivered), len(posts.Twice), len(posts.Lost))
	for _, c := range slices.Sorted(maps.Keys(a.Failed)) {
		t.Logf("failed: %d × %s", a.Failed[c], c)
	}
	for _, p := range a.Phases {
		t.Logf("%6.2fs-%6.2fs %-60s GETs %s, p50 %s p99 %s max %s; POSTs %d/%d; failovers %d",
			p.From.Seconds(), p.To.Seconds(), p.Name, p.Rate(), roundMS(p.GetP50), roundMS(p.GetP99), roundMS(p.GetMax), p.PostsOK, p.Posts, p.Failovers)
		for _, f := range []struct{ what, r string }{{"failed GET", p.FirstFailedGet}, {"failed POST", p.FirstFailedPost}, {"failover", p.FirstFailover}} {
			if f.r != "" {
				t.Logf("        first %s: %s", f.what, f.r)
			}
		}
	}
	for i, ev := range events {
		if d := a.Recovery[i]; d == 0 {
			t.Logf("after %s: no GET failed", ev.What)
		} else {
			t.Logf("after %s: GETs succeed again %s later", ev.What, roundMS(d))
		}
	}
}

func roundMS(d time.Duration) string { return d.Round(time.Millisecond).String() }

// waitViews polls the views of nodes until every instance of bs is passing
// there (or, when passing is false, is not) and returns how long it took.
func waitViews(nodes []*clustertest.Node, bs []*backend, passing bool, timeout time.Duration) (time.Duration, error) {
	begin := time.Now()
	err := clustertest.Poll(timeout, func() error {
		for _, nd := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			d, err := nd.Client().Service(ctx, webSpec.Name)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", nd.Name, err)
			}
			status := map[string]string{}
			for _, in := range d.Instances {
				status[in.ID] = in.Status
			}
			for _, b := range bs {
				if (status[b.name] == registry.Passing) != passing {
					return fmt.Errorf("%s sees %s %q", nd.Name, b.name, status[b.name])
				}
			}
		}
		return nil
	})
	return time.Since(begin), err
}

// keepAvailabilityEvidence writes the problems, every request that did not
// succeed, and copies of the node and backend logs to a new folder, and
// returns its path.
func keepAvailabilityEvidence(t *testing.T, c *clustertest.Cluster, bs []*backend, reqs []Request, problems []string) string {
	t.Helper()
	dir, err := evidenceDir(t.Name())
	if err != nil {
		var paths []string
		for _, nd := range c.Nodes {
			paths = append(paths, nd.Log)
		}
		return fmt.Sprintf("(none kept: %v; node logs: %s)", err, strings.Join(paths, " "))
	}
	writeFile(t, filepath.Join(dir, "problems.txt"), strings.Join(problems, "\n")+"\n")
	var b strings.Builder
	for _, r := range reqs {
		if !r.OK() {
			fmt.Fprintln(&b, r)
		}
	}
	writeFile(t, filepath.Join(dir, "failed-requests.txt"), b.String())
	var files []string
	for _, nd := range c.Nodes {
		files = append(files, nd.Log)
	}
	for _, be := range bs {
		files = append(files, be.postLog, be.stderr)
	}
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil {
			writeFile(t, filepath.Join(dir, filepath.Base(f)), string(data))
		}
	}
	return dir
}

// backendEnv, set in a copy of the test binary, makes it serve as an
// instance (TestAvailabilityBackend) instead of running tests.
const backendEnv = "TANDEM_AVAILABILITY_BACKEND"

// TestAvailabilityBackend is not a test: TestAvailabilityUnderFaults runs
// the test binary again with this test selected to get instances that are
// processes of their own, which kill -9 and SIGSTOP can hit. It listens on
// $TANDEM_AVAILABILITY_BACKEND (host:port; port 0 picks one), prints
// "listening host:port", and serves until its stdin closes (the test is
// gone) or it is killed.
func TestAvailabilityBackend(t *testing.T) {
	addr := os.Getenv(backendEnv)
	if addr == "" {
		t.Skip("a helper process of TestAvailabilityUnderFaults")
	}
	var ln net.Listener
	// A restart takes the same port again; wait out whoever holds it.
	err := clustertest.Poll(5*time.Second, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(2)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := ServeBackend(ctx, ln, os.Getenv(backendEnv+"_NAME"), os.Getenv(backendEnv+"_POSTLOG")); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// backend is an instance process of the service under test.
type backend struct {
	t       *testing.T
	name    string
	port    int    // 0 until the first start
	postLog string // ids of the POSTs it received, one a line, across restarts
	stderr  string
	cmd     *exec.Cmd
	stdin   io.Closer
	done    chan struct{}
}

// startBackend starts an instance process on a port of its choosing; the
// test kills it when it ends.
func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	dir := t.TempDir()
	b := &backend{t: t, name: name, postLog: filepath.Join(dir, name+".posts"), stderr: filepath.Join(dir, name+".log")}
	b.start()
	t.Cleanup(func() {
		if b.running() {
			b.signal(syscall.SIGCONT)
			b.kill()
		}
	})
	return b
}

// start starts the process (again, on the same port) and waits until it
// listens.
func (b *backend) start() {
	b.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAvailabilityBackend$")
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("%s=127.0.0.1:%d", backendEnv, b.port),
		backendEnv+"_NAME="+b.name,
		backendEnv+"_POSTLOG="+b.postLog)
	errf, err := os.OpenFile(b.stderr, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stderr = errf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start backend %s: %v", b.name, err)
	}
	b.cmd, b.stdin, b.done = cmd, stdin, make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(b.done)
	}()
	select {
	case a := <-addr:
		tcp, err := net.ResolveTCPAddr("tcp", a)
		if err != nil {
			b.t.Fatalf("backend %s: %v", b.name, err)
		}
		b.port = tcp.Port
	case <-b.done:
		b.t.Fatalf("backend %s exited before it listened: %s", b.name, fileTail(b.stderr))
	case <-time.After(30 * time.Second):
		b.kill()
		b.t.Fatalf("backend %s did not listen within 30s: %s", b.name, fileTail(b.stderr))
	}
}

func (b *backend) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// kill kills the process with SIGKILL and waits for it.
func (b *backend) kill() {
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
	b.stdin.Close()
}

func (b *backend) signal(sig syscall.Signal) {
	if err := b.cmd.Process.Signal(sig); err != nil {
		b.t.Errorf("signal %s: %v", b.name, err)
	}
}

func fileTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data[max(len(data)-2000, 0):])
}

// TestTrafficMovesBetweenProxies checks the workload's client rules with
// fake proxies: a refused connection moves any request on, a broken one
// moves only a GET on, and an answer is final.
func TestTrafficMovesBetweenProxies(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{} // request id -> times the good proxy saw it
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get(TestIDHeader)]++
		mu.Unlock()
		io.WriteString(w, "web-1\n")
	}))
	defer good.Close()
	reset := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}
	}))
	defer reset.Close()
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no passing instance", http.StatusServiceUnavailable)
	}))
	defer unavailable.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

	tests := []struct {
		name    string
		proxies []string
		post    bool
		status  int
		moved   bool // the client moved on to another proxy (or tried again)
		sent    bool
		reached int // times the good proxy saw the request
	}{
		{"refused GET moves on", []string{refused, addr(good)}, false, 200, true, true, 1},
		{"refused POST moves on", []string{refused, addr(good)}, true, 200, true, true, 1},
		{"broken GET moves on", []string{addr(reset), addr(good)}, false, 200, true, true, 1},
		{"broken POST is not sent again", []string{addr(reset), addr(good)}, true, 0, false, true, 0},
		{"an answer is final", []string{addr(unavailable), addr(good)}, false, 503, false, true, 0},
		{"nothing reached", []string{refused}, true, 0, true, false, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := Traffic{Proxies: tt.proxies, Service: "web", Deadline: 300 * time.Millisecond}.withDefaults()
			hc := &http.Client{Transport: &http.Transport{}}
			defer hc.CloseIdleConnections()
			id := fmt.Sprintf("t%d", i)
			r := tr.send(hc, time.Now(), 0, tt.post, id)
			mu.Lock()
			reached := got[id]
			mu.Unlock()
			if r.Status != tt.status || (r.Failovers > 0) != tt.moved || r.Sent != tt.sent || reached != tt.reached {
				t.Errorf("got %s (sent %v), the good proxy saw it %d times; want status %d, moved on %v, sent %v, seen %d times",
					r, r.Sent, reached, tt.status, tt.moved, tt.sent, tt.reached)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := time.Second
	get := func(call, ret time.Duration, status int) Request {
		return Request{Call: call, Return: ret, Status: status}
	}
	reqs := []Request{
		get(0, s/10, 200),
		{Post: true, ID: "p1", Call: s / 2, Return: s, Status: 200},
		get(s, 2*s, 200),
		get(2*s, 2*s+s/10, 502), // in the fault's window
		get(3*s, 3*s+s/10, 200), // recovered
		get(4*s, 4*s+s/10, 0),   // after the heal: no proxy answered
		get(4*s+s/2, 5*s, 200),  // recovered
		{Post: true, ID: "p2", Call: 5 * s, Return: 5*s + s/10, Status: 504},
	}
	events := []Event{{At: 2 * s, What: "fault"}, {At: 4 * s, What: "heal"}}
	a := Summarize(reqs, events, 6*s)
	if a.Gets != 6 || a.GetsOK != 4 || a.Posts != 2 || a.PostsOK != 1 {
		t.Errorf("totals %+v", a)
	}
	want := []struct{ gets, ok int }{{2, 2}, {2, 1}, {2, 1}}
	for i, w := range want {
		if p := a.Phases[i]; p.Gets != w.gets || p.GetsOK != w.ok {
			t.Errorf("phase %d %q: %d/%d GETs, want %d/%d", i, p.Name, p.GetsOK, p.Gets, w.ok, w.gets)
		}
	}
	if len(a.Recovery) != 2 || a.Recovery[0] != s+s/10 || a.Recovery[1] != s {
		t.Errorf("recovery %v, want [1.1s 1s]", a.Recovery)
	}
	if a.Failed["GET 502"] != 1 || a.Failed["GET no answer:"] != 1 || a.Failed["POST 504"] != 1 {
		t.Errorf("causes %v", a.Failed)
	}
	posts := CheckPosts(reqs, map[string]int{"p1": 2, "p2": 1})
	if len(posts.Twice) != 1 || posts.Twice[0].ID != "p1" || len(posts.Lost) != 0 || len(posts.FailedDelivered) != 1 {
		t.Errorf("posts %+v", posts)
	}
	if posts := CheckPosts(reqs, map[string]int{}); len(posts.Lost) != 1 || posts.Lost[0].ID != "p1" {
		t.Errorf("an acknowledged POST in no log: got %+v", posts)
	}
}

// TestServeBackendRecordsPosts checks that a backend records each POST's id
// before it answers, and Deliveries counts them.
func TestServeBackendRecordsPosts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "web-1.posts")
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeBackend(ctx, ln, "web-1", log) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	send := func(method, id string) string {
		req, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", strings.NewReader("x"))
		req.Header.Set(TestIDHeader, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	for _, s := range []struct{ method, id string }{{"POST", "a"}, {"GET", "b"}, {"POST", "a"}, {"POST", "c"}} {
		if got := send(s.method, s.id); got != "200 web-1" {
			t.Fatalf("%s %s: got %q, want 200 web-1", s.method, s.id, got)
		}
	}
	n, err := Deliveries([]string{log})
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 2 || n["a"] != 2 || n["c"] != 1 {
		t.Errorf("deliveries %v, want a twice and c once", n)
	}
}
