package proxy

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// tcpProxies keeps one listener per service with an lb_port, opening and
// closing them as service specs change. It owns the goroutines it starts
// (one per listener, one per connection, two per connection's copies):
// run returns only after all of them are done.
type tcpProxies struct {
	p         *Proxy
	mu        sync.Mutex
	listeners map[int]*tcpListener  // by port
	conns     map[net.Conn]struct{} // both ends of every proxied connection
	cut       bool                  // stop cut the connections: cut new ones at once
	wg        sync.WaitGroup        // serve and handle goroutines
}

type tcpListener struct {
	service string
	ln      net.Listener
	cancel  context.CancelFunc
}

func newTCPProxies(p *Proxy) *tcpProxies {
	return &tcpProxies{p: p, listeners: map[int]*tcpListener{}, conns: map[net.Conn]struct{}{}}
}

// run keeps the listeners in step with the services until ctx ends. Then
// it closes them, lets the connections in flight go on for grace, cuts
// those left and returns once every goroutine it started has returned.
func (t *tcpProxies) run(ctx context.Context, grace time.Duration) {
	defer t.stop(grace)
	for {
		ch := t.p.table.cat.Changed()
		t.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// sync opens listeners for new lb_ports and closes those no longer wanted.
func (t *tcpProxies) sync(ctx context.Context) {
	want := map[int]string{}
	for name, pool := range t.p.table.cur.Load().pools {
		if pool.Spec.LBPort > 0 {
			want[pool.Spec.LBPort] = name
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for port, l := range t.listeners {
		if want[port] != l.service {
			l.cancel()
			l.ln.Close()
			delete(t.listeners, port)
		}
	}
	for port, svc := range want {
		if _, ok := t.listeners[port]; ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(t.p.cfg.Bind, strconv.Itoa(port)))
		if err != nil {
			t.p.log.Warn("tcp proxy: cannot listen", "service", svc, "port", port, "err", err)
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		t.listeners[port] = &tcpListener{service: svc, ln: ln, cancel: cancel}
		t.wg.Add(1)
		go t.serve(lctx, ln, svc)
	}
}

func (t *tcpProxies) stop(grace time.Duration) {
	t.mu.Lock()
	for port, l := range t.listeners {
		l.cancel()
		l.ln.Close()
		delete(t.listeners, port)
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	t.mu.Lock()
	t.cut = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	<-done
}

// track records connections to cut at shutdown, or cuts them now if the
// shutdown already did.
func (t *tcpProxies) track(cs ...net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range cs {
		if t.cut {
			c.Close()
			continue
		}
		t.conns[c] = struct{}{}
	}
}

func (t *tcpProxies) untrack(cs ...net.Conn) {
	t.mu.Lock()
	for _, c := range cs {
		delete(t.conns, c)
	}
	t.mu.Unlock()
}

// Port returns the address the TCP proxy of svc listens on, if any.
func (p *Proxy) TCPAddr(svc string) string {
	p.tcp.mu.Lock()
	defer p.tcp.mu.Unlock()
	for _, l := range p.tcp.listeners {
		if l.service == svc {
			return l.ln.Addr().String()
		}
	}
	return ""
}

func (t *tcpProxies) serve(ctx context.Context, ln net.Listener, svc string) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.handle(ctx, c.(*net.TCPConn), svc)
		}()
	}
}

// handle connects a client to an instance, trying others when one refuses,
// and copies both ways, passing on each side's half-close.
func (t *tcpProxies) handle(ctx context.Context, client *net.TCPConn, svc string) {
	defer client.Close()
	pool := t.p.table.cur.Load().pools[svc]
	if pool == nil || len(pool.Backends) == 0 {
		t.p.metrics.noBackends.WithLabelValues(svc).Inc()
		return
	}
	connect := pool.Spec.Timeouts.Connect.D()
	if connect <= 0 {
		connect = time.Second
	}
	var tried [maxAttempts]*Backend
	var buf [16]*Backend
	var backend *net.TCPConn
	clientIP, _, _ := net.SplitHostPort(client.RemoteAddr().String()) // hash key: the client's IP
	var b *Backend
	for a := (attempt{failure: connectFailed, instances: len(pool.Backends)}); a.made < maxAttempts; {
		now := time.Now()
		eligible, _ := Eligible(pool.Backends, pool.Outlier, now, buf[:0])
		b = pool.Balancer.Pick(eligible, tried[:a.made], clientIP, t.p.cfg.Node)
		if b == nil {
			break
		}
		tried[a.made] = b
		a.made++
		c, err := (&net.Dialer{Timeout: connect}).DialContext(ctx, "tcp", b.Addr)
		if err == nil {
			b.Report(pool.Outlier, Success, time.Now())
			backend = c.(*net.TCPConn)
			break
		}
		if b.Report(pool.Outlier, ConnectFailure, time.Now()) {
			t.p.metrics.ejections.WithLabelValues(svc, b.ID).Inc()
		}
		if ctx.Err() != nil || !t.p.retry(pool, retryVerdict(a)) {
			break
		}
	}
	if backend == nil {
		t.p.metrics.noBackends.WithLabelValues(svc).Inc()
		return
	}
	defer backend.Close()
	t.track(client, backend)
	defer t.untrack(client, backend)
	b.Begin()
	defer b.End()
	t.p.metrics.requests.WithLabelValues(svc, b.ID, "tcp").Inc()
	var wg sync.WaitGroup
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite() // pass the half-close on
	}
	wg.Add(2)
	go pipe(backend, client)
	go pipe(client, backend)
	wg.Wait()
}
