package proxy

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemhq/tandem/internal/registry"
)

// Catalog is what the proxy reads; the node's local view implements it.
type Catalog interface {
	Services() []string
	Service(name string) (registry.Service, bool)
	Instances(svc string) []registry.InstanceHealth
	Changed() <-chan struct{}
}

// Pool is one service's routing state: the instances to send to and how.
// A pool is rebuilt when the view changes; Backends keep their counters and
// outlier state across rebuilds.
type Pool struct {
	Service   string
	Spec      registry.Service
	Backends  []*Backend // passing instances (warning ones when none pass)
	Balancer  Balancer
	Outlier   OutlierPolicy
	Transport *http.Transport
	Budget    *RetryBudget
	transKey  registry.ProxyTimeouts
	// The HTTP/1.1 path's timeouts, from the spec or their defaults.
	connectTimeout, headerTimeout, idleTimeout time.Duration
	// Metric handles resolved once per rebuild, not per request.
	inflight prometheus.Gauge
	bm       map[*Backend]*backendMetrics
}

// backendMetrics are one backend's hot-path metric handles.
type backendMetrics struct {
	duration prometheus.Observer
	ok       prometheus.Counter // code 200, the common case
}

// routes is an immutable routing table, swapped whole on every rebuild.
type routes struct {
	byHost   map[string]*Pool
	prefixes []prefixRoute // longest prefix first
	pools    map[string]*Pool
}

type prefixRoute struct {
	host   string // "" matches any host
	prefix string
	pool   *Pool
}

// route finds the pool for a request's host (lowercase, no port) and
// path. The HTTP/1.1 path routes by slices of its buffers, without
// converting them to strings.
func route[T string | []byte](rt *routes, host, path T) *Pool {
	for _, pr := range rt.prefixes {
		if (pr.host == "" || pr.host == string(host)) && len(path) >= len(pr.prefix) && string(path[:len(pr.prefix)]) == pr.prefix {
			return pr.pool
		}
	}
	return rt.byHost[string(host)]
}

// table builds routes from the catalog, reusing the previous table's
// backends, transports and budgets.
type table struct {
	cat     Catalog
	domain  string // "tandem" (no trailing dot)
	metrics *Metrics
	cur     atomic.Pointer[routes]
	gone    leaving // backends dropped with requests maybe still in flight
}

func newTable(cat Catalog, domain string, metrics *Metrics) *table {
	t := &table{cat: cat, domain: strings.TrimSuffix(strings.ToLower(domain), "."), metrics: metrics}
	t.cur.Store(&routes{byHost: map[string]*Pool{}, pools: map[string]*Pool{}})
	return t
}

// run rebuilds the table on every change of the catalog until ctx ends,
// and closes keep-alive connections idle for longer than their service's
// idle timeout. The proxy's Run closes the rest when it stops.
func (t *table) run(ctx context.Context) {
	prune := time.NewTicker(5 * time.Second)
	defer prune.Stop()
	for {
		ch := t.cat.Changed()
		t.rebuild()
		for changed := false; !changed; {
			select {
			case <-ctx.Done():
				return
			case <-prune.C:
				t.pruneIdle()
			case <-ch:
				changed = true
			}
		}
	}
}

func (t *table) pruneIdle() {
	for _, p := range t.cur.Load().pools {
		for _, b := range p.Backends {
			b.pruneIdle(p.idleTimeout)
		}
	}
}

// closeAll closes every connection to every instance, idle or not, and
// keeps none opened later: for a proxy that stopped.
func (t *table) closeAll() {
	for _, p := range t.cur.Load().pools {
		p.Transport.CloseIdleConnections()
		for _, b := range p.Backends {
			b.cut()
		}
	}
}

func backendKey(id, addr string) string { return id + "@" + addr }

func (t *table) rebuild() {
	old := t.cur.Load()
	next := &routes{byHost: map[string]*Pool{}, pools: map[string]*Pool{}}
	for _, name := range t.cat.Services() {
		spec, _ := t.cat.Service(name)
		spec.Name = name
		prev := old.pools[name]
		p := &Pool{Service: name, Spec: spec, Outlier: OutlierPolicy{
			ConsecutiveErrors:  spec.Outlier.ConsecutiveErrors,
			BaseEjection:       spec.Outlier.BaseEjection.D(),
			MaxEjectionPercent: spec.Outlier.MaxEjectionPercent,
		}}
		var err error
		if p.Balancer, err = NewBalancer(spec.Balance); err != nil {
			p.Balancer, _ = NewBalancer("")
		}
		if prev != nil && prev.Spec.Balance == spec.Balance && prev.Balancer != nil {
			p.Balancer = prev.Balancer // keeps round-robin position
		}
		if prev != nil && prev.transKey == spec.Timeouts {
			p.Transport, p.Budget = prev.Transport, prev.Budget
		} else {
			if prev != nil {
				prev.Transport.CloseIdleConnections()
			}
			p.Transport, p.Budget = newTransport(spec.Timeouts), NewRetryBudget(0.2, 3)
		}
		p.transKey = spec.Timeouts
		p.connectTimeout, p.headerTimeout, p.idleTimeout = timeouts(spec.Timeouts)
		reuse := map[string]*Backend{}
		if prev != nil {
			for _, b := range prev.Backends {
				reuse[backendKey(b.ID, b.Addr)] = b
			}
		}
		ins := t.cat.Instances(name)
		served := registry.Passing
		if !slices.ContainsFunc(ins, func(in registry.InstanceHealth) bool { return in.Status == registry.Passing }) {
			served = registry.Warning
		}
		for _, in := range ins {
			if in.Status != served {
				continue
			}
			addr := net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
			b := reuse[backendKey(in.ID, addr)]
			if b == nil || b.Weight != max(in.Weight, 1) || b.Node != in.Node {
				b = NewBackend(in.ID, name, addr, in.Node, max(in.Weight, 1))
			}
			p.Backends = append(p.Backends, b)
		}
		p.inflight = t.metrics.inflight.WithLabelValues(name)
		p.bm = make(map[*Backend]*backendMetrics, len(p.Backends))
		for _, b := range p.Backends {
			p.bm[b] = &backendMetrics{
				duration: t.metrics.duration.WithLabelValues(name, b.ID),
				ok:       t.metrics.requests.WithLabelValues(name, b.ID, "200"),
			}
		}
		next.pools[name] = p
		next.byHost[name] = p
		next.byHost[name+".service."+t.domain] = p
		for _, h := range spec.Hosts {
			next.byHost[strings.ToLower(h)] = p
		}
		for _, pre := range spec.PathPrefixes {
			if len(spec.Hosts) == 0 {
				next.prefixes = append(next.prefixes, prefixRoute{prefix: pre, pool: p})
			}
			for _, h := range spec.Hosts {
				next.prefixes = append(next.prefixes, prefixRoute{host: strings.ToLower(h), prefix: pre, pool: p})
			}
		}
	}
	slices.SortStableFunc(next.prefixes, func(a, b prefixRoute) int { return len(b.prefix) - len(a.prefix) })
	t.cur.Store(next)
	// Pools of services that are gone: let their idle connections go.
	for name, p := range old.pools {
		if _, ok := next.pools[name]; !ok {
			p.Transport.CloseIdleConnections()
		}
	}
	// Instances that left: their requests in flight finish (draining),
	// their idle connections close.
	kept := map[*Backend]bool{}
	for _, p := range next.pools {
		for _, b := range p.Backends {
			kept[b] = true
		}
	}
	var dropped []*Backend
	for _, p := range old.pools {
		for _, b := range p.Backends {
			if !kept[b] {
				b.drain(p.headerTimeout)
				dropped = append(dropped, b)
			}
		}
	}
	t.gone.add(dropped)
}

// timeouts are a service's proxy timeouts, defaults filled in.
func timeouts(to registry.ProxyTimeouts) (connect, header, idle time.Duration) {
	connect, header, idle = to.Connect.D(), to.ResponseHeader.D(), to.Idle.D()
	if connect <= 0 {
		connect = time.Second
	}
	if header <= 0 {
		header = 30 * time.Second
	}
	if idle <= 0 {
		idle = 90 * time.Second
	}
	return connect, header, idle
}

// newTransport is the keep-alive pool to one service's instances.
func newTransport(to registry.ProxyTimeouts) *http.Transport {
	connect, header, idle := timeouts(to)
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       idle,
		ResponseHeaderTimeout: header,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}
