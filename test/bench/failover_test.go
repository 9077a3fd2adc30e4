package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/client"
	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/wire"
)

const (
	// writersPerNode is how many writers hammer each surviving node.
	writersPerNode = 4
	// writeTimeout is the timeout= each failover write gives the API, so a
	// write stuck on the dead leader gives way to a fresh one quickly.
	writeTimeout = 300 * time.Millisecond
	// retryPause keeps a writer whose write failed fast from spinning.
	retryPause = 10 * time.Millisecond
	// failoverLimit is how long a run may wait for its first write.
	failoverLimit = 30 * time.Second
)

// BenchmarkFailover measures how long writes stop when the store leader
// dies: on a 3-node process cluster it kills the leader with SIGKILL and
// times, from just before the kill, until the first write acknowledged by a
// surviving node's HTTP API. The killed node is restarted and the cluster
// is healthy again before the next run. It reports the median, min, max and
// p90 (nearest rank) over -bench.runs runs, in milliseconds.
func BenchmarkFailover(b *testing.B) {
	c := startCluster(b)
	var times []time.Duration
	var perRun []string          // "n1 719ms": the killed leader and its run's time
	failures := map[string]int{} // failed writes during failovers, by kind
	for run := 1; run <= *runs; run++ {
		leader := c.Leader()
		var survivors []*clustertest.Node
		for _, nd := range c.Nodes {
			if nd != leader {
				survivors = append(survivors, nd)
			}
		}

		start := time.Now()
		leader.Kill()
		acked, err := firstAck(survivors, failures)
		if err != nil {
			b.Fatalf("run %d: killed %s: %v", run, leader.Name, err)
		}
		d := acked.Sub(start)
		times = append(times, d)
		perRun = append(perRun, fmt.Sprintf("%s %v", leader.Name, d.Round(time.Millisecond)))

		leader.Restart()
		c.WaitHealthy()
	}

	reportRuns(b, "killed leader and time to the first acknowledged write", perRun, "failed writes during the failovers", failures, times)
}

// reportRuns logs the runs (what, then perRun) and the failed requests by
// kind, and reports the median, min, max and p90 (nearest rank) of times,
// in milliseconds.
func reportRuns(b *testing.B, what string, perRun []string, failedWhat string, failures map[string]int, times []time.Duration) {
	b.Helper()
	// go test keeps only the first 10 lines of a benchmark's log: keep it short.
	b.Logf("%s, per run: %s", what, strings.Join(perRun, ", "))
	for _, k := range slices.Sorted(maps.Keys(failures)) {
		b.Logf("%s: %4d × %s", failedWhat, failures[k], k)
	}
	slices.Sort(times)
	b.ReportMetric(0, "ns/op") // wall time of all runs: meaningless per op
	b.ReportMetric(ms(median(times)), "median_ms")
	b.ReportMetric(ms(times[0]), "min_ms")
	b.ReportMetric(ms(times[len(times)-1]), "max_ms")
	b.ReportMetric(ms(percentile(times, 0.90)), "p90_ms")
}

// firstAck hammers PUTs through every survivor's API, writersPerNode
// writers per node, until one is acknowledged, and returns when. Writers
// start staggered over one writeTimeout so that their timeouts do not line
// up; each failed write is counted in failures by kind.
func firstAck(survivors []*clustertest.Node, failures map[string]int) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), failoverLimit)
	defer cancel()
	var (
		mu    sync.Mutex
		first time.Time
		wg    sync.WaitGroup
	)
	writers := writersPerNode * len(survivors)
	for i := range writers {
		cl := survivors[i%len(survivors)].Client()
		stagger := time.Duration(i) * writeTimeout / time.Duration(writers)
		wg.Go(func() {
			select {
			case <-time.After(stagger):
			case <-ctx.Done():
				return
			}
			const key = "bench/failover"
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, 2*writeTimeout)
				_, err := cl.Put(rctx, key, []byte("x"), client.WriteOptions{Timeout: writeTimeout})
				at := time.Now()
				rcancel()
				mu.Lock()
				switch {
				case err == nil:
					if first.IsZero() || at.Before(first) {
						first = at
					}
					cancel()
				case ctx.Err() == nil:
					failures[failureKind(err)]++
				}
				mu.Unlock()
				if err == nil {
					return
				}
				time.Sleep(retryPause)
			}
		})
	}
	wg.Wait()
	if first.IsZero() {
		return first, fmt.Errorf("no write acknowledged within %s", failoverLimit)
	}
	return first, nil
}

// failureKind names a failed write for the failure counts: the HTTP status
// and the start of the message, or the transport error.
func failureKind(err error) string {
	var apiErr *client.Error
	msg := err.Error()
	if errors.As(err, &apiErr) {
		msg = fmt.Sprintf("HTTP %d: %s", apiErr.Status, apiErr.Body.Error)
	}
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}

// BenchmarkFailoverSequential is BenchmarkFailover with one sequential
// client, as a script calling the CLI would be: one write at a time through
// the survivors' APIs, the CLI's default timeouts (no timeout=, so the
// node's 3 s; a 10 s client deadline), the next write sent at once after a
// failed one. The write in flight at the kill must be answered before the
// client can try again, so this measures how soon a request caught by the
// leader change is answered, not only how soon a new write can succeed.
func BenchmarkFailoverSequential(b *testing.B) { failoverSequential(b, false) }

// BenchmarkFailoverSequentialIdempotent is BenchmarkFailoverSequential with
// each write sent with an Idempotency-Key, as the CLI sends them (one id
// per write, kept across its repeats): the API may then repeat the write in
// flight at the kill on the new leader instead of answering 503, and the
// client may move it to the other survivor mid-request.
func BenchmarkFailoverSequentialIdempotent(b *testing.B) { failoverSequential(b, true) }

func failoverSequential(b *testing.B, idempotent bool) {
	c := startCluster(b)
	var times, inflight, retried []time.Duration
	var perRun, vsElection []string
	failures := map[string]int{}
	for run := 1; run <= *runs; run++ {
		leader := c.Leader()
		var addrs []string
		for _, nd := range c.Nodes {
			if nd != leader {
				addrs = append(addrs, nd.API)
			}
		}
		cl := c.ClientFor(addrs...)
		start := time.Now()
		leader.Kill()
		var answered, acked time.Time
		var o client.WriteOptions
		if idempotent {
			o.RequestID = fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), run)
		}
		for time.Since(start) < failoverLimit {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := cl.Put(ctx, "bench/failover", []byte("x"), o)
			cancel()
			if answered.IsZero() {
				answered = time.Now()
			}
			if err == nil {
				acked = time.Now()
				break
			}
			failures[failureKind(err)]++
		}
		if acked.IsZero() {
			b.Fatalf("run %d: killed %s: no write acknowledged within %s", run, leader.Name, failoverLimit)
		}
		d := acked.Sub(start)
		times = append(times, d)
		perRun = append(perRun, fmt.Sprintf("%s %v", leader.Name, d.Round(time.Millisecond)))
		elected := electedAfter(b, cl, start)
		inflight = append(inflight, answered.Sub(elected))
		retried = append(retried, acked.Sub(elected))
		vsElection = append(vsElection, fmt.Sprintf("%+d/%+d", answered.Sub(elected).Milliseconds(), acked.Sub(elected).Milliseconds()))
		leader.Restart()
		c.WaitHealthy()
	}
	b.Logf("relative to the new leader's election, the write in flight at the kill answered / the first write acknowledged, ms per run: %s", strings.Join(vsElection, ", "))
	slices.Sort(inflight)
	slices.Sort(retried)
	b.ReportMetric(ms(inflight[len(inflight)-1]), "inflight_max_ms")
	b.ReportMetric(ms(median(retried)), "ack_election_median_ms")
	b.ReportMetric(ms(retried[len(retried)-1]), "ack_election_max_ms")
	reportRuns(b, "killed leader and time to the first acknowledged write", perRun, "failed writes during the failovers", failures, times)
}

// electedAfter returns when a store leader was elected after t, as the
// time of the first leader-change event after t: the new leader's agent
// stamps it when its member becomes leader, so it is at most a few
// milliseconds after the election itself.
func electedAfter(b *testing.B, cl *client.Client, t time.Time) time.Time {
	b.Helper()
	var elected time.Time
	err := clustertest.Poll(10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		evs, _, err := cl.Events(ctx, 100)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.Type == wire.EventLeader && e.Time.After(t) {
				elected = e.Time
				return nil
			}
		}
		return errors.New("no leader-change event yet")
	})
	if err != nil {
		b.Fatalf("the new leader's election: %v", err)
	}
	return elected
}
