package bench

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

// op is one request of a load: worker w (0..clients-1), its i-th request.
type op func(w, i int) error

// loadResult is what one measured window of a load gave.
type loadResult struct {
	elapsed  time.Duration
	lat      []time.Duration // of successful requests, sorted
	errs     int
	firstErr error
}

// opsPerSec is the rate of successful requests.
func (r loadResult) opsPerSec() float64 { return float64(len(r.lat)) / r.elapsed.Seconds() }

// runLoad runs clients workers, each sending f back to back (closed loop),
// for d, and returns every successful request's latency.
func runLoad(clients int, d time.Duration, f op) loadResult {
	type workerResult struct {
		lat      []time.Duration
		errs     int
		firstErr error
	}
	results := make([]workerResult, clients)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			res := &results[w]
			for i := 0; ; i++ {
				t0 := time.Now()
				if !t0.Before(deadline) {
					return
				}
				if err := f(w, i); err != nil {
					res.errs++
					if res.firstErr == nil {
						res.firstErr = err
					}
					continue
				}
				res.lat = append(res.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	out := loadResult{elapsed: time.Since(start)}
	for _, r := range results {
		out.lat = append(out.lat, r.lat...)
		out.errs += r.errs
		if out.firstErr == nil {
			out.firstErr = r.firstErr
		}
	}
	slices.Sort(out.lat)
	return out
}

// measure warms up with the load, then measures it and reports ops/s,
// p50_ms, p99_ms (and errors, if any) on b.
func measure(b *testing.B, clients int, f op) {
	b.Helper()
	if *warmup > 0 {
		runLoad(clients, *warmup, f)
	}
	r := runLoad(clients, *duration, f)
	if len(r.lat) == 0 {
		b.Fatalf("no request succeeded (%d errors); first: %v", r.errs, r.firstErr)
	}
	if r.errs > 0 {
		b.Logf("%d of %d requests failed; first: %v", r.errs, r.errs+len(r.lat), r.firstErr)
	}
	b.ReportMetric(0, "ns/op") // wall time of the window: meaningless per op
	b.ReportMetric(r.opsPerSec(), "ops/s")
	b.ReportMetric(ms(percentile(r.lat, 0.50)), "p50_ms")
	b.ReportMetric(ms(percentile(r.lat, 0.99)), "p99_ms")
	b.ReportMetric(float64(r.errs), "errors")
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted d.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

// median returns the median of sorted d (the mean of the two middle values
// when there is an even number).
func median(d []time.Duration) time.Duration {
	n := len(d)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return d[n/2]
	}
	return (d[n/2-1] + d[n/2]) / 2
}

// ms converts a duration to float milliseconds for ReportMetric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
