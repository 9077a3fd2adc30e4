package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config tunes a node's proxy.
type Config struct {
	Addr   string // host:port of the HTTP proxy
	Bind   string // IP the TCP proxies listen on
	Domain string // DNS domain, like "tandem."
	Node   string // this node's name (for locality)
	// TLSCert and TLSKey (PEM files), TLSDir or TLSStore, when set, make
	// the HTTP proxy serve TLS with HTTP/2 and HTTP/1.1 by ALPN, with a
	// certificate chosen per connection by SNI (CertSet). TLSCert is the
	// one served for a name no other certificate names.
	TLSCert, TLSKey string
	// TLSDir holds NAME.crt and NAME.key pairs, reloaded as they change.
	TLSDir string
	// TLSStore turns TLS on with only the store's certificates.
	TLSStore bool
	// Store, if set, is read for the service certificates kept in the
	// store (PUT /v1/certs/NAME) whenever TLS is on.
	Store func() *clientv3.Client
	// FastPath makes idle plain HTTP/1.1 keep-alive client connections
	// wait for their next request in an epoll loop of the proxy's own
	// instead of Go's poller, which saves a system call per request
	// (Linux only, and not with TLS; fastpath_linux.go). The environment
	// variable TANDEM_PROXY_FASTPATH=on or off overrides it, for
	// benchmarks that compare both paths with one binary.
	FastPath bool
}

// fastPathEnv is the environment variable that overrides
// Config.FastPath.
const fastPathEnv = "TANDEM_PROXY_FASTPATH"

// fastPathOn reports whether the fast path is asked for: by cfg, unless
// the environment says otherwise.
func fastPathOn(cfg Config) bool {
	switch os.Getenv(fastPathEnv) {
	case "on", "1", "true":
		return true
	case "off", "0", "false":
		return false
	}
	return cfg.FastPath
}

// Proxy is a node's HTTP and TCP load balancer.
type Proxy struct {
	cfg     Config
	table   *table
	metrics *Metrics
	log     *slog.Logger
	rp      *httputil.ReverseProxy
	tcp     *tcpProxies
	limits  clientLimits

	mu   sync.Mutex
	addr string
	h1   *h1Server // while Run runs (for tests)
}

type poolKey struct{}

// shutdownGrace is how long requests in flight may go on when the proxy
// stops.
const shutdownGrace = 5 * time.Second

// maxAttempts bounds how many instances one request may be sent to.
const maxAttempts = 4

var errNoBackend = errors.New("no instance of the service can take the request")

// New returns the proxy of a node reading from cat.
func New(cfg Config, cat Catalog, metrics *Metrics, logger *slog.Logger) *Proxy {
	p := &Proxy{cfg: cfg, table: newTable(cat, cfg.Domain, metrics), metrics: metrics, log: logger, limits: defaultClientLimits}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: p,
		ModifyResponse: func(r *http.Response) error {
			r.Header.Set("X-Request-Id", r.Request.Header.Get("X-Request-Id"))
			return nil
		},
		ErrorHandler: p.errorHandler,
		ErrorLog:     log.New(io.Discard, "", 0),
		BufferPool:   bufferPool{},
	}
	p.tcp = newTCPProxies(p)
	return p
}

// Addr is the HTTP proxy's address once it listens.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Run serves the HTTP proxy and the TCP proxies until ctx ends.
func (p *Proxy) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", p.cfg.Addr, err)
	}
	tlsConfig, certs, err := p.serverTLS()
	if err != nil {
		ln.Close()
		return err
	}
	p.mu.Lock()
	p.addr = ln.Addr().String()
	p.mu.Unlock()
	p.table.rebuild()
	// Every goroutine started here is waited for before Run returns.
	var wg sync.WaitGroup
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { p.table.run(rctx) })
	wg.Go(func() { p.tcp.run(rctx, shutdownGrace) })
	if certs != nil {
		wg.Go(func() { certs.run(rctx) })
		certs.waitLoaded(rctx, 5*time.Second)
	}
	// HTTP/1.1 is served by the path in h1conn.go; HTTP/2 connections
	// (h2c, or "h2" by ALPN) go on to net/http's server and the
	// ReverseProxy.
	h2 := newHandoff(ln.Addr())
	h1 := &h1Server{p: p, limits: p.limits, tls: tlsConfig, h2: h2, conns: map[*clientConn]struct{}{}}
	if tlsConfig == nil && fastPathOn(p.cfg) {
		// The loop checks parked connections' idle deadlines this often:
		// they may close that much later than the limit.
		fast, err := newFastPath(min(max(idleSlack(p.limits.idle), 10*time.Millisecond), time.Second), p.log)
		if err != nil {
			p.log.Warn("proxy: the epoll fast path is off", "error", err)
		} else {
			h1.fast = fast
			wg.Go(fast.run)
		}
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: p.limits.header,
		IdleTimeout:       p.limits.idle,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		srv.Protocols.SetHTTP2(true)
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true) // h2c
	}
	p.mu.Lock()
	p.h1 = h1
	p.mu.Unlock()
	wg.Go(func() { _ = srv.Serve(h2) })
	errc := make(chan error, 1)
	wg.Go(func() { errc <- h1.serve(ln) })
	var runErr error
	grace := shutdownGrace
	select {
	case <-ctx.Done():
	case err := <-errc:
		runErr, grace = fmt.Errorf("proxy: %w", err), 0
	}
	// Stop: no new connections; requests in flight may go on for grace,
	// then their connections are cut.
	h1.closing.Store(true)
	ln.Close()
	stop()
	wg.Go(func() {
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	})
	h1.shutdown(grace)
	h2.Close()
	wg.Wait()
	p.table.closeAll()
	return runErr
}

// ServeHTTP routes a request to its service's pool and proxies it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	pool := route(p.table.cur.Load(), host, r.URL.Path)
	if pool == nil {
		http.Error(w, fmt.Sprintf("tandem proxy: no service for host %q: send Host: <service> or <service>.service.%s, or add the host to a service's hosts", host, p.table.domain), http.StatusNotFound)
		return
	}
	if len(pool.Backends) == 0 {
		p.metrics.noBackends.WithLabelValues(pool.Service).Inc()
		http.Error(w, fmt.Sprintf("tandem proxy: service %q has no passing instance", pool.Service), http.StatusServiceUnavailable)
		return
	}
	pool.inflight.Inc()
	defer pool.inflight.Dec()
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), poolKey{}, pool)))
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = "instance" // set per attempt in RoundTrip
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
	if pr.In.Header.Get("X-Request-Id") == "" {
		pr.Out.Header.Set("X-Request-Id", newRequestID())
	}
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	var ne net.Error
	switch {
	case errors.Is(err, errNoBackend):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.Canceled):
		return // the client went away
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	http.Error(w, "tandem proxy: "+err.Error(), code)
}

// idempotent methods may be sent again after a 502/503/504 (RFC 9110).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// neverSent reports whether err means the request never reached the
// instance: the connection could not be opened.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// RoundTrip sends one proxied request to an instance of its pool, sending
// it again when an attempt fails by the rule in retry.go, which the
// HTTP/1.1 path and the TCP proxy share. (The transport itself sends a
// replayable request again when a reused connection turns out closed.)
func (p *Proxy) RoundTrip(req *http.Request) (*http.Response, error) {
	pool := req.Context().Value(poolKey{}).(*Pool)
	now := time.Now()
	pool.Budget.Request(now)
	a := attempt{
		idempotent: idempotent(req.Method),
		hasBody:    req.Body != nil && req.Body != http.NoBody,
		instances:  len(pool.Backends),
	}
	// The transport closes a request's body even when it could not connect;
	// hand it a guard instead, so a body not yet read can go to the next
	// instance. The real body is closed here, once.
	var guard *guardedBody
	if a.hasBody {
		guard = &guardedBody{r: req.Body}
		defer req.Body.Close()
	}
	key := hashKey(req, pool)
	var tried [maxAttempts]*Backend
	var buf [16]*Backend
	var lastErr error
	for a.made < maxAttempts {
		eligible, _ := Eligible(pool.Backends, pool.Outlier, now, buf[:0])
		b := pool.Balancer.Pick(eligible, tried[:a.made], key, p.cfg.Node)
		if b == nil {
			break
		}
		tried[a.made] = b
		a.made++
		out := *req
		u := *req.URL
		u.Host = b.Addr
		out.URL = &u
		if guard != nil {
			out.Body = guard
		}
		b.Begin()
		start := time.Now()
		resp, err := pool.Transport.RoundTrip(&out)
		if err != nil {
			b.End()
			p.metrics.requests.WithLabelValues(pool.Service, b.ID, "0").Inc()
			a.failure = broken
			outcome := ServerError
			switch {
			case neverSent(err):
				a.failure, outcome = connectFailed, ConnectFailure
			case req.Context().Err() != nil:
				a.failure = clientGone
			}
			a.bodyRead = guard != nil && guard.read
			if b.Report(pool.Outlier, outcome, time.Now()) {
				p.metrics.ejections.WithLabelValues(pool.Service, b.ID).Inc()
			}
			lastErr = err
			if p.retry(pool, retryVerdict(a)) {
				continue
			}
			return nil, err
		}
		p.answered(pool, b, resp.StatusCode, start)
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			a.failure = gatewayError
			a.bodyRead = guard != nil && guard.read
			if p.retry(pool, retryVerdict(a)) {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				b.End()
				continue
			}
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			b.End() // an upgraded connection is not a request in flight
			return resp, nil
		}
		resp.Body = &trackedBody{ReadCloser: resp.Body, b: b}
		return resp, nil
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w: %w", errNoBackend, lastErr)
	}
	return nil, errNoBackend
}

// retry reports whether a verdict lets a request (or a TCP connection) go
// again, spending the service's retry budget if it must, and counts the
// retry.
func (p *Proxy) retry(pool *Pool, v verdict) bool {
	if !v.retry || (v.budget && !pool.Budget.TryRetry(time.Now())) {
		return false
	}
	p.metrics.retries.WithLabelValues(pool.Service, v.reason).Inc()
	return true
}

// answered records an instance's answer: metrics, and its outcome for
// outlier detection.
func (p *Proxy) answered(pool *Pool, b *Backend, code int, start time.Time) {
	if bm := pool.bm[b]; bm != nil && code == http.StatusOK {
		bm.duration.Observe(time.Since(start).Seconds())
		bm.ok.Inc()
	} else {
		p.metrics.duration.WithLabelValues(pool.Service, b.ID).Observe(time.Since(start).Seconds())
		p.metrics.requests.WithLabelValues(pool.Service, b.ID, codeLabel(code)).Inc()
	}
	outcome := Success
	if code >= 500 {
		outcome = ServerError
	}
	if b.Report(pool.Outlier, outcome, time.Now()) {
		p.metrics.ejections.WithLabelValues(pool.Service, b.ID).Inc()
	}
}

// guardedBody passes reads through, remembers whether any happened, and
// ignores Close.
type guardedBody struct {
	r    io.Reader
	read bool // a Read happened
	eof  bool // a Read returned io.EOF
}

func (g *guardedBody) Read(p []byte) (int, error) {
	g.read = true
	n, err := g.r.Read(p)
	if err == io.EOF {
		g.eof = true
	}
	return n, err
}

func (g *guardedBody) Close() error { return nil }

// trackedBody ends the backend's in-flight request when the body is closed.
type trackedBody struct {
	io.ReadCloser
	b    *Backend
	once sync.Once
}

func (t *trackedBody) Close() error {
	err := t.ReadCloser.Close()
	t.once.Do(t.b.End)
	return err
}

// hashKey is the consistent-hashing key of an outbound request of the
// ReverseProxy path for balance "hash".
func hashKey(req *http.Request, pool *Pool) string {
	if pool.Spec.Balance != "hash" {
		return ""
	}
	// The outbound request carries the client in X-Forwarded-For.
	xff := req.Header.Get("X-Forwarded-For")
	if i := strings.LastIndex(xff, ","); i >= 0 {
		xff = xff[i+1:]
	}
	return hashKeyOf(pool, strings.TrimSpace(xff), req.Header.Values)
}

// hashKeyOf is the consistent-hashing key of a request from clientIP for
// balance "hash", and "" for other balancers; values returns the values of
// the request's header fields of a name.
func hashKeyOf(pool *Pool, clientIP string, values func(name string) []string) string {
	if pool.Spec.Balance != "hash" {
		return ""
	}
	on := pool.Spec.HashOn
	switch {
	case strings.HasPrefix(on, "header:"):
		if v := values(on[len("header:"):]); len(v) > 0 {
			return v[0]
		}
		return ""
	case strings.HasPrefix(on, "cookie:"):
		r := http.Request{Header: http.Header{"Cookie": values("Cookie")}}
		if c, err := r.Cookie(on[len("cookie:"):]); err == nil {
			return c.Value
		}
		return ""
	default:
		return clientIP
	}
}

// bufferPool recycles the proxy's copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
