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
// closing them as service specs change.
type tcpProxies struct {
	p         *Proxy
	mu        sync.Mutex
	listeners map[int]*tcpListener // by port
}

type tcpListener struct {
	service string
	ln      net.Listener
	cancel  context.CancelFunc
}

func newTCPProxies(p *Proxy) *tcpProxies {
	return &tcpProxies{p: p, listeners: map[int]*tcpListener{}}
}

func (t *tcpProxies) run(ctx context.Context) {
	defer t.closeAll()
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
		go t.serve(lctx, ln, svc)
	}
}

func (t *tcpProxies) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for port, l := range t.listeners {
		l.cancel()
		l.ln.Close()
		delete(t.listeners, port)
	}
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
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go t.handle(ctx, c.(*net.TCPConn), svc)
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
	for attempt := 0; attempt < maxAttempts && backend == nil; attempt++ {
		now := time.Now()
		eligible, _ := Eligible(pool.Backends, pool.Outlier, now, buf[:0])
		b = pool.Balancer.Pick(eligible, tried[:attempt], clientIP, t.p.cfg.Node)
		if b == nil {
			break
		}
		tried[attempt] = b
		c, err := (&net.Dialer{Timeout: connect}).DialContext(ctx, "tcp", b.Addr)
		if err != nil {
			if b.Report(pool.Outlier, ConnectFailure, time.Now()) {
				t.p.metrics.ejections.WithLabelValues(svc, b.ID).Inc()
			}
			t.p.metrics.retries.WithLabelValues(svc, "connect").Inc()
			continue
		}
		b.Report(pool.Outlier, Success, time.Now())
		backend = c.(*net.TCPConn)
	}
	if backend == nil {
		t.p.metrics.noBackends.WithLabelValues(svc).Inc()
		return
	}
	defer backend.Close()
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
