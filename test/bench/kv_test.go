package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemhq/tandem/internal/clustertest"
)

// concurrency is the number of closed-loop clients of each KV sub-benchmark.
var concurrency = []int{1, 64}

// BenchmarkKVWrite measures PUT throughput and latency through the HTTP API
// and directly against the embedded etcd members of the same cluster, in
// the same run, with the same keys and values. Client w talks to node w%3
// on both paths.
func BenchmarkKVWrite(b *testing.B) {
	c := startCluster(b)
	api := newAPIClient(b, c, apiAddrs(c))
	etcd := etcdClients(b, c, storeURLs(b, c))

	for _, n := range concurrency {
		b.Run(fmt.Sprintf("api/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, i int) error {
				return api.put(w, benchKey(w, i), value)
			})
		})
		b.Run(fmt.Sprintf("etcd/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, i int) error {
				_, err := etcdPut(etcd[w%len(etcd)], kvPrefix+benchKey(w, i), value)
				return err
			})
		})
	}
}

// BenchmarkKVRead measures GET latency and throughput of random keys among
// readKeys: through the HTTP API stale (the answering node's copy) and
// linearizable (the default), and directly against etcd serializable and
// linearizable for comparison. Client w talks to node w%3.
func BenchmarkKVRead(b *testing.B) {
	c := startCluster(b)
	api := newAPIClient(b, c, apiAddrs(c))
	etcd := etcdClients(b, c, storeURLs(b, c))
	fill(b, etcd)

	randKey := func() string { return benchKey(0, rand.IntN(readKeys)) }
	etcdGet := func(w int, opts ...clientv3.OpOption) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := etcd[w%len(etcd)].Get(ctx, kvPrefix+randKey(), opts...)
		if err == nil && len(resp.Kvs) != 1 {
			err = fmt.Errorf("got %d keys, want 1", len(resp.Kvs))
		}
		return err
	}
	for _, n := range concurrency {
		b.Run(fmt.Sprintf("api/stale/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, _ int) error { return api.get(w, randKey(), true) })
		})
		b.Run(fmt.Sprintf("api/linearizable/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, _ int) error { return api.get(w, randKey(), false) })
		})
		b.Run(fmt.Sprintf("etcd/serializable/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, _ int) error { return etcdGet(w, clientv3.WithSerializable()) })
		})
		b.Run(fmt.Sprintf("etcd/linearizable/c=%d", n), func(b *testing.B) {
			measure(b, n, func(w, _ int) error { return etcdGet(w) })
		})
	}
}

// fill writes the readKeys keys the read benchmark reads through the first
// member, then waits until every member has applied them, so stale and
// serializable reads find them too.
func fill(b *testing.B, etcd []*clientv3.Client) {
	b.Helper()
	for i := range readKeys {
		if _, err := etcdPut(etcd[0], kvPrefix+benchKey(0, i), value); err != nil {
			b.Fatalf("fill: %v", err)
		}
	}
	last := kvPrefix + benchKey(0, readKeys-1)
	for _, cli := range etcd {
		err := clustertest.Poll(10*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			resp, err := cli.Get(ctx, last, clientv3.WithSerializable())
			if err == nil && len(resp.Kvs) == 0 {
				err = fmt.Errorf("%s has not applied %s yet", cli.Endpoints()[0], last)
			}
			return err
		})
		if err != nil {
			b.Fatalf("fill: %v", err)
		}
	}
}

// etcdPut writes one key with a generous timeout (timeouts are failures).
func etcdPut(cli *clientv3.Client, key, val string) (*clientv3.PutResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cli.Put(ctx, key, val)
}
