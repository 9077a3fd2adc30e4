package proxy

import (
	"context"
	"encoding/json"
	"math"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Window is one node's traffic to one service over the last stats window:
// counts and the latency histogram's bucket counts, so that windows of
// several nodes can be added up before quantiles are taken.
type Window struct {
	Seconds  float64   `json:"seconds"`
	Requests float64   `json:"requests"`
	Errors   float64   `json:"errors"` // answered 5xx or not at all
	Bounds   []float64 `json:"bounds"` // histogram upper bounds, seconds
	Counts   []float64 `json:"counts"` // requests per bucket (not cumulative)
}

// totals are cumulative counters per service, read from the registry.
type totals struct {
	requests, errors float64
	bounds           []float64
	cumulative       []float64
}

func (m *Metrics) totals() map[string]*totals {
	out := map[string]*totals{}
	get := func(svc string) *totals {
		if out[svc] == nil {
			out[svc] = &totals{}
		}
		return out[svc]
	}
	families, err := m.Registry.Gather()
	if err != nil {
		return out
	}
	label := func(mt *dto.Metric, name string) string {
		for _, l := range mt.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	for _, f := range families {
		switch f.GetName() {
		case "tandem_proxy_requests_total":
			for _, mt := range f.GetMetric() {
				t := get(label(mt, "service"))
				v := mt.GetCounter().GetValue()
				code := label(mt, "code")
				if code == "tcp" {
					continue
				}
				t.requests += v
				if code == "0" || (len(code) == 3 && code[0] == '5') {
					t.errors += v
				}
			}
		case "tandem_proxy_request_duration_seconds":
			for _, mt := range f.GetMetric() {
				t := get(label(mt, "service"))
				bs := mt.GetHistogram().GetBucket()
				if t.bounds == nil {
					t.bounds = make([]float64, len(bs))
					t.cumulative = make([]float64, len(bs))
					for i, b := range bs {
						t.bounds[i] = b.GetUpperBound()
					}
				}
				for i, b := range bs {
					if i < len(t.cumulative) {
						t.cumulative[i] += float64(b.GetCumulativeCount())
					}
				}
			}
		}
	}
	return out
}

// RunStats calls publish every interval with this node's windows per
// service (the difference of the counters since the last call).
func (m *Metrics) RunStats(ctx context.Context, interval time.Duration, publish func(context.Context, map[string]Window) error) error {
	prev := m.totals()
	last := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, now := m.totals(), time.Now()
		out := map[string]Window{}
		for svc, c := range cur {
			p := prev[svc]
			if p == nil {
				p = &totals{}
			}
			w := Window{Seconds: now.Sub(last).Seconds(), Requests: c.requests - p.requests, Errors: c.errors - p.errors, Bounds: c.bounds}
			prevD := 0.0
			for i := range c.cumulative {
				d := c.cumulative[i] - prevCumAt(p, i) // cumulative count this window
				w.Counts = append(w.Counts, d-prevD)
				prevD = d
			}
			out[svc] = w
		}
		prev, last = cur, now
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = publish(pctx, out)
		cancel()
	}
}

func prevCumAt(p *totals, i int) float64 {
	if i < len(p.cumulative) {
		return p.cumulative[i]
	}
	return 0
}

// ServiceLoad is a service's traffic across the cluster's proxies.
type ServiceLoad struct {
	Service       string  `json:"service"`
	Nodes         int     `json:"nodes"` // nodes that reported
	RequestsPerS  float64 `json:"requests_per_second"`
	ErrorsPerS    float64 `json:"errors_per_second"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	WindowSeconds float64 `json:"window_seconds"`
}

// Merge adds up the windows of several nodes for one service.
func Merge(svc string, windows []Window) ServiceLoad {
	out := ServiceLoad{Service: svc, Nodes: len(windows)}
	var bounds, counts []float64
	for _, w := range windows {
		if w.Seconds <= 0 {
			continue
		}
		out.RequestsPerS += w.Requests / w.Seconds
		out.ErrorsPerS += w.Errors / w.Seconds
		out.WindowSeconds = math.Max(out.WindowSeconds, w.Seconds)
		if bounds == nil {
			bounds, counts = w.Bounds, make([]float64, len(w.Bounds))
		}
		for i := range w.Counts {
			if i < len(counts) {
				counts[i] += w.Counts[i]
			}
		}
	}
	out.P50Ms = quantile(bounds, counts, 0.5) * 1000
	out.P99Ms = quantile(bounds, counts, 0.99) * 1000
	return out
}

// quantile estimates a quantile from bucket counts: the upper bound of the
// bucket it falls in (a conservative estimate).
func quantile(bounds, counts []float64, q float64) float64 {
	total := 0.0
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * total
	acc := 0.0
	for i, c := range counts {
		acc += c
		if acc >= rank {
			return bounds[i]
		}
	}
	return bounds[len(bounds)-1]
}

// EncodeWindows and DecodeWindows give the stored form.
func EncodeWindows(w map[string]Window) []byte { b, _ := json.Marshal(w); return b }

// DecodeWindows reads a node's stored windows.
func DecodeWindows(b []byte) (map[string]Window, error) {
	var w map[string]Window
	err := json.Unmarshal(b, &w)
	return w, err
}
