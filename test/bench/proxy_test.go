package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
)

// TestMain lets the test binary double as an instance process
// (clustertest.StartBackend), so a benchmark can kill -9 a real instance.
func TestMain(m *testing.M) {
	clustertest.ServeBackendIfAsked()
	os.Exit(m.Run())
}

// BenchmarkProxyFailover measures what a client sees when an instance dies
// under load: on a 3-node process cluster with one backend process per
// node (service "pf", HTTP check every second), 8 clients send GETs
// through all three nodes' proxies while one backend is killed with
// SIGKILL, -bench.runs times (a different backend each run, restarted
// between runs). Reported: failed GETs (goal 0), the time from the kill
// until no node's proxy sends the dead instance another request (the last
// change of any node's tandem_proxy_requests_total for it, polled every
// 10 ms), and until every node's view has dropped it.
func BenchmarkProxyFailover(b *testing.B) {
	c := startCluster(b)
	ctx := context.Background()
	var ports []int
	var backends []*clustertest.Backend
	for i, nd := range c.Nodes {
		bp := clustertest.StartBackend(b, fmt.Sprintf("pf-%d", i+1))
		backends, ports = append(backends, bp), append(ports, bp.Port)
		if _, err := nd.Client().Register(ctx, registry.Instance{Service: "pf", ID: bp.Name, Address: "127.0.0.1", Port: bp.Port,
			Checks: []registry.Check{{Type: registry.CheckHTTP, HTTP: "/", Interval: config.Duration(time.Second)}}}); err != nil {
			b.Fatal(err)
		}
	}
	waitInView := func(want []int) {
		err := clustertest.Poll(30*time.Second, func() error {
			for _, nd := range c.Nodes {
				got, err := srvPorts(nd.DNS, "pf")
				slices.Sort(got)
				if err != nil || !slices.Equal(got, want) {
					return fmt.Errorf("%s serves %v, want %v (%v)", nd.Name, got, want, err)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	all := slices.Sorted(slices.Values(ports))

	// The load: 8 clients, each on its own keep-alive connection pool,
	// spread over the nodes' proxies.
	var sent, failed atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			nd := c.Nodes[w%3]
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+nd.Proxy+"/", nil)
				req.Host = "pf"
				sent.Add(1)
				resp, err := hc.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					lastErr.Store(err.Error())
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	var lastSent, gone []time.Duration
	for run := range *runs {
		waitInView(all)
		victim := backends[run%3]
		before := failed.Load()
		prev := map[string]float64{}
		for _, nd := range c.Nodes {
			n, err := requestsTo(c, nd, victim.Name)
			if err != nil {
				b.Fatal(err)
			}
			prev[nd.Name] = n
		}
		t0 := time.Now()
		victim.Kill()
		last := t0
		viewGone := time.Duration(0)
		for time.Since(t0) < 30*time.Second {
			for _, nd := range c.Nodes {
				n, err := requestsTo(c, nd, victim.Name)
				if err != nil {
					b.Fatal(err)
				}
				// The change happened before this answer: its time is
				// an upper bound of the last request's.
				if n != prev[nd.Name] {
					prev[nd.Name], last = n, time.Now()
				}
			}
			if viewGone == 0 && notServed(c.Nodes, victim.Port) {
				viewGone = time.Since(t0)
			}
			// Done once every view dropped it and no counter moved for
			// a second after that.
			if viewGone > 0 && time.Since(last) > time.Second && time.Since(t0) > viewGone+time.Second {
				break
			}
			time.Sleep(10 * time.Millisecond) // the polling period of the measurement
		}
		if viewGone == 0 {
			b.Fatalf("run %d: %s never left the views", run, victim.Name)
		}
		lastSent = append(lastSent, last.Sub(t0))
		gone = append(gone, viewGone)
		b.Logf("run %d: killed %s; last request to it %s after the kill, out of every view after %s, failed GETs %d",
			run, victim.Name, last.Sub(t0).Round(time.Millisecond), viewGone.Round(time.Millisecond), failed.Load()-before)
		victim.Restart()
	}
	if e := lastErr.Load(); e != nil {
		b.Logf("last failure: %s", e)
	}
	slices.Sort(lastSent)
	slices.Sort(gone)
	b.Logf("GETs sent %d, failed %d", sent.Load(), failed.Load())
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(failed.Load()), "failed_gets")
	b.ReportMetric(float64(sent.Load()), "gets")
	b.ReportMetric(ms(median(lastSent)), "last_sent_median_ms")
	b.ReportMetric(ms(lastSent[len(lastSent)-1]), "last_sent_max_ms")
	b.ReportMetric(ms(median(gone)), "view_drop_median_ms")
}

// notServed reports whether no node's DNS (its view) lists port for "pf".
func notServed(nodes []*clustertest.Node, port int) bool {
	for _, nd := range nodes {
		got, err := srvPorts(nd.DNS, "pf")
		if err != nil || slices.Contains(got, port) {
			return false
		}
	}
	return true
}

// requestsTo sums a node's tandem_proxy_requests_total for one instance,
// over every answer code.
func requestsTo(c *clustertest.Cluster, nd *clustertest.Node, instance string) (float64, error) {
	resp, err := c.HTTP().Get(nd.URL("/metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	label := `instance="` + instance + `"`
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tandem_proxy_requests_total{") || !strings.Contains(line, label) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}
