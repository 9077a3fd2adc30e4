package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's Prometheus metrics. They live in their own
// registry, which the node's /metrics endpoint gathers.
type Metrics struct {
	Registry   *prometheus.Registry
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	inflight   *prometheus.GaugeVec
	ejections  *prometheus.CounterVec
	retries    *prometheus.CounterVec
	noBackends *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_proxy_requests_total", Help: "Requests the proxy sent to instances, by answer code (0: no answer).",
		}, []string{"service", "instance", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tandem_proxy_request_duration_seconds", Help: "Time to an instance's response headers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service", "instance"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tandem_proxy_inflight_requests", Help: "Requests in flight, by service.",
		}, []string{"service"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_proxy_ejections_total", Help: "Instances ejected by passive outlier detection.",
		}, []string{"service", "instance"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_proxy_retries_total", Help: "Requests sent again to another instance, by reason.",
		}, []string{"service", "reason"}),
		noBackends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_proxy_unavailable_total", Help: "Requests answered 503 because no instance could take them.",
		}, []string{"service"}),
	}
	m.Registry.MustRegister(m.requests, m.duration, m.inflight, m.ejections, m.retries, m.noBackends)
	return m
}

func codeLabel(code int) string { return strconv.Itoa(code) }
