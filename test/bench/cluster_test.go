package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tandemhq/tandem/internal/clustertest"
)

var (
	duration = flag.Duration("bench.duration", 5*time.Second, "measured window of each KV sub-benchmark")
	warmup   = flag.Duration("bench.warmup", time.Second, "unmeasured warm-up before each KV window")
	runs     = flag.Int("bench.runs", 10, "failover runs")
	// For A/B runs of agent settings, like -bench.agent-flags=--node-probe-interval=0.
	agentFlags = flag.String("bench.agent-flags", "", "extra flags, space-separated, for every agent of the benchmark clusters")
)

// Workload sizes, the same for the API and for direct etcd.
const (
	keyBytes   = 16
	valueBytes = 100
	// readKeys is how many keys the read benchmarks fill and read at random.
	readKeys = 1000
	// kvPrefix is where the API keeps user keys in the store
	// (keys.KVPrefix), so direct etcd writes land in the same place.
	kvPrefix = "/kv/"
)

// value is the 100-byte value every write stores (ASCII, so the API keeps
// it as text and no base64 is involved).
var value = strings.Repeat("v", valueBytes)

// benchKey returns the 16-byte key for worker w and sequence number i.
func benchKey(w, i int) string {
	return fmt.Sprintf("w%03d-%011d", w, i%100_000_000_000)
}

// startCluster starts a three-node cluster of agent processes and waits
// until it is healthy.
func startCluster(b *testing.B) *clustertest.Cluster {
	b.Helper()
	return clustertest.Start(b, 3, clustertest.Options{Mode: clustertest.Processes, Flags: strings.Fields(*agentFlags)})
}

// storeURLs returns the etcd client URL of every node, in node order, as
// GET /v1/members gives them.
func storeURLs(b *testing.B, c *clustertest.Cluster) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := c.Client().Members(ctx)
	if err != nil {
		b.Fatalf("members: %v", err)
	}
	byName := map[string]string{}
	for _, m := range ms.Members {
		byName[m.Name] = m.StoreURL
	}
	var urls []string
	for _, nd := range c.Nodes {
		u := byName[nd.Name]
		if u == "" {
			b.Fatalf("no store_url for %s in %+v", nd.Name, ms.Members)
		}
		urls = append(urls, u)
	}
	return urls
}

// etcdClients returns one clientv3 client per URL, each bound to that
// endpoint alone, closed when the benchmark ends.
func etcdClients(b *testing.B, c *clustertest.Cluster, urls []string) []*clientv3.Client {
	b.Helper()
	var cs []*clientv3.Client
	for _, u := range urls {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{u},
			TLS:         c.Nodes[0].StoreTLS(), // a node's certificate: the store ports take nothing else
			DialTimeout: 2 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			b.Fatalf("etcd client for %s: %v", u, err)
		}
		b.Cleanup(func() { cli.Close() })
		cs = append(cs, cli)
	}
	return cs
}

// apiClient talks to the nodes' HTTP APIs with a transport that keeps a
// connection per concurrent client open (the default keeps only 2 idle
// connections per host, so 64 clients would redial all the time). It reads
// status and body and decodes nothing, so client-side cost stays small on a
// machine the cluster shares.
type apiClient struct {
	addrs  []string
	scheme string
	token  string
	http   *http.Client
}

// newAPIClient makes the client for c's nodes at addrs, with the cluster's
// CA and admin token when it is secure.
func newAPIClient(b *testing.B, c *clustertest.Cluster, addrs []string) *apiClient {
	tr := &http.Transport{
		TLSClientConfig:     c.TLSConfig(),
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	b.Cleanup(tr.CloseIdleConnections)
	scheme := "http://"
	if c.Secure() {
		scheme = "https://"
	}
	return &apiClient{addrs: addrs, scheme: scheme, token: c.AdminToken(), http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// do sends one request to node n (spread by the caller) and fails unless
// the answer is 200 OK.
func (c *apiClient) do(n int, method, key, query string, body string) error {
	u := c.scheme + c.addrs[n%len(c.addrs)] + "/v1/kv/" + key
	if query != "" {
		u += "?" + query
	}
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return nil
}

func (c *apiClient) put(n int, key, val string) error {
	return c.do(n, http.MethodPut, key, "", val)
}

func (c *apiClient) get(n int, key string, stale bool) error {
	q := ""
	if stale {
		q = "consistency=stale"
	}
	return c.do(n, http.MethodGet, key, q, "")
}

// apiAddrs lists the nodes' API addresses in node order.
func apiAddrs(c *clustertest.Cluster) []string {
	var addrs []string
	for _, nd := range c.Nodes {
		addrs = append(addrs, nd.API)
	}
	return addrs
}
