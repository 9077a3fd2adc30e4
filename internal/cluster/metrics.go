package cluster

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a node's liveness counters, for alerting on lease churn.
type Metrics struct {
	Registry *prometheus.Registry

	leases       prometheus.Counter
	renewFails   prometheus.Counter
	probesFailed *prometheus.CounterVec
	revocations  *prometheus.CounterVec
}

// NewMetrics registers the liveness metrics in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		leases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_liveness_leases_total", Help: "Liveness leases this node took: 1 at start, one more each time its lease was lost.",
		}),
		renewFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tandem_liveness_renewal_failures_total", Help: "Lease renewals that got no answer in time and were sent again.",
		}),
		probesFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_deathwatch_probes_failed_total", Help: "Probes of another node's API that were refused or got no answer in time, by node and result (refused, silent).",
		}, []string{"node", "result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tandem_deathwatch_revocations_total", Help: "Liveness leases this node revoked because the node's API refused or ignored its probes, by node.",
		}, []string{"node"}),
	}
	m.Registry.MustRegister(m.leases, m.renewFails, m.probesFailed, m.revocations)
	return m
}
