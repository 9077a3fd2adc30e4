package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Forwarding on the HTTP/1.1 path: a request to an instance chosen by the
// balancer, sent again by the rule in retry.go, and its answer back to the
// client (or a tunnel, after 101 Switching Protocols).

// handle proxies one request and reports whether the client connection
// can carry another.
func (cc *clientConn) handle(req *reqHead) bool {
	if code, msg := req.check(); code != 0 {
		req.close = true
		cc.plain(code, "tandem proxy: "+msg, req)
		return false
	}
	cc.host = req.routeHost(cc.host[:0])
	host := cc.host
	p := cc.p
	pool := route(p.table.cur.Load(), host, req.path)
	if pool == nil {
		return cc.fail(req, http.StatusNotFound, fmt.Sprintf("no service for host %q: send Host: <service> or <service>.service.%s, or add the host to a service's hosts", host, p.table.domain))
	}
	if len(pool.Backends) == 0 {
		p.metrics.noBackends.WithLabelValues(pool.Service).Inc()
		return cc.fail(req, http.StatusServiceUnavailable, fmt.Sprintf("service %q has no passing instance", pool.Service))
	}
	pool.inflight.Inc()
	defer pool.inflight.Dec()
	if len(req.id) == 0 {
		req.makeID()
	}
	return cc.proxy(req, pool)
}

// proxy sends req to an instance of pool, sending it again when an
// attempt fails by the rule in retry.go (which RoundTrip and the TCP proxy
// share), and writes the answer back.
func (cc *clientConn) proxy(req *reqHead, pool *Pool) bool {
	p := cc.p
	now := time.Now()
	pool.Budget.Request(now)
	a := attempt{
		idempotent: idempotent(string(req.method)),
		hasBody:    req.framing != noBody,
		instances:  len(pool.Backends),
	}
	upgrade := req.upgrade != nil
	key := hashKeyOf(pool, cc.clientIP, req.values)
	// Scratch space of the connection: passed to interfaces, it would
	// escape to the heap once per request if it were local.
	cc.body = guardedBody{r: &cc.reqBody}
	cc.continued = false
	body, tried, buf := &cc.body, cc.tried[:], cc.buf[:]
	clear(tried)
	var lastErr error
	var again *Backend // the instance to send to again on a new connection
	for a.made < maxAttempts {
		b := again
		if b == nil {
			eligible, _ := Eligible(pool.Backends, pool.Outlier, now, buf[:0])
			if b = pool.Balancer.Pick(eligible, tried[:a.made], key, p.cfg.Node); b == nil {
				break
			}
		}
		tried[a.made] = b
		a.made++
		b.Begin()
		start := time.Now()
		u, reused, err := b.get(pool.connectTimeout, pool.idleTimeout, again != nil, !a.idempotent || a.hasBody)
		again = nil
		var resp *respHead
		if err != nil {
			a.failure = connectFailed
		} else {
			resp, a.failure, err = cc.exchange(req, u, body, pool, upgrade)
		}
		a.reused, a.bodyRead = reused, body.read
		if a.failure != 0 {
			b.End()
			if u != nil {
				b.discard(u)
			}
			lastErr = err
			v := retryVerdict(a)
			if !v.same { // a stale connection says nothing about the instance
				p.metrics.requests.WithLabelValues(pool.Service, b.ID, "0").Inc()
				outcome := ServerError
				if a.failure == connectFailed {
					outcome = ConnectFailure
				}
				if b.Report(pool.Outlier, outcome, time.Now()) {
					p.metrics.ejections.WithLabelValues(pool.Service, b.ID).Inc()
				}
			}
			if a.failure == clientGone {
				return false
			}
			if p.retry(pool, v) {
				if v.same {
					again = b
				}
				continue
			}
			break
		}
		p.answered(pool, b, resp.code, start)
		switch resp.code {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			a.failure = gatewayError
			if p.retry(pool, retryVerdict(a)) {
				resp.body(&cc.rbody, u.br)
				if cc.rbody.discard(64<<10) && !resp.close {
					b.put(u)
				} else {
					b.discard(u)
				}
				b.End()
				continue
			}
		}
		if resp.code == http.StatusSwitchingProtocols { // exchange let it through for an upgrade only
			b.End() // an upgraded connection is not a request in flight
			cc.tunnel(req, resp, u, b)
			return false
		}
		keep := cc.respond(req, resp, u, b, body)
		b.End()
		return keep
	}
	code, msg := http.StatusServiceUnavailable, errNoBackend.Error()
	if lastErr != nil {
		msg += ": " + lastErr.Error()
		var ne net.Error
		switch {
		case a.failure == connectFailed:
		case errors.As(lastErr, &ne) && ne.Timeout():
			code, msg = http.StatusGatewayTimeout, lastErr.Error()
		default:
			code, msg = http.StatusBadGateway, lastErr.Error()
		}
	}
	if body.read {
		req.close = true // the rest of the body is not worth reading
	}
	return cc.fail(req, code, msg)
}

var (
	// errNotWritten: the request could not be written to the instance.
	errNotWritten = errors.New("connection to the instance broke before the request was sent")
	// errClientBody: reading the request's body from the client failed.
	errClientBody = errors.New("reading the request body from the client failed")
)

// exchange writes req to u and reads the answer's head into cc.resp; a
// 101 Switching Protocols only if the request asked to upgrade. On error
// it says how far the attempt got, for the retry rule.
func (cc *clientConn) exchange(req *reqHead, u *upstream, body *guardedBody, pool *Pool, upgrade bool) (*respHead, failure, error) {
	cc.writeHead(u.bw, req)
	if req.framing != noBody {
		if req.expects > 0 && !cc.continued {
			// The client waits for this before it sends the body; the
			// instance was not asked (Expect is not forwarded).
			cc.continued = true
			cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := cc.bw.Flush(); err != nil {
				return nil, clientGone, errClientBody
			}
		}
		if err := cc.copyBody(u, req, body); err != nil {
			if errors.Is(err, errClientBody) {
				return nil, clientGone, err
			}
			return nil, notWritten, err
		}
	} else if err := u.flushAwait(pool.headerTimeout); err != nil {
		return nil, notWritten, fmt.Errorf("%w: %w", errNotWritten, err)
	}
	_ = u.c.SetReadDeadline(time.Now().Add(pool.headerTimeout))
	// The first byte of the answer: a reused connection that ends here
	// was closed by the instance while idle, before it saw the request.
	if _, err := u.br.Peek(1); err != nil {
		f := noAnswer
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			f = broken // the instance took it and did not answer in time
		}
		return nil, f, fmt.Errorf("reading the instance's response: %w", err)
	}
	resp := &cc.resp
	for {
		if err := resp.read(u.br, string(req.method) == http.MethodHead); err != nil {
			return nil, broken, fmt.Errorf("reading the instance's response: %w", err)
		}
		if resp.code == http.StatusSwitchingProtocols && !upgrade {
			return nil, broken, fmt.Errorf("reading the instance's response: %w: 101 Switching Protocols to a request that asked for no upgrade", errMalformed)
		}
		if resp.code >= 200 || resp.code == http.StatusSwitchingProtocols {
			_ = u.c.SetReadDeadline(time.Time{})
			return resp, 0, nil
		}
		// An informational answer (103 Early Hints): pass it on to a
		// client that understands it, and wait for the final one.
		if resp.code != http.StatusContinue && req.minor >= 1 {
			cc.bw.WriteString("HTTP/1.1 ")
			cc.bw.Write(resp.status)
			cc.bw.WriteString("\r\n")
			resp.writeFields(cc.bw, resp.fields)
			cc.bw.WriteString("\r\n")
			_ = cc.bw.Flush()
		}
	}
}

// copyBody streams the request's body to the instance: with its length if
// known, chunked otherwise.
func (cc *clientConn) copyBody(u *upstream, req *reqHead, body *guardedBody) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	var w io.Writer = u.bw
	var cw io.WriteCloser
	if req.framing == chunkedBody {
		cw = chunkedWriter{u.bw}
		w = cw
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("sending the request body: %w", err)
			}
			if cc.br.Buffered() == 0 { // the client's next bytes may be a while
				if err := u.bw.Flush(); err != nil {
					return fmt.Errorf("sending the request body: %w", err)
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return errClientBody
		}
	}
	if cw != nil {
		cw.Close()
		req.writeFields(u.bw, req.trailer)
		u.bw.WriteString("\r\n")
	}
	if err := u.bw.Flush(); err != nil {
		return fmt.Errorf("sending the request body: %w", err)
	}
	return nil
}

// respond writes the instance's answer to the client and puts u back in
// its pool when the answer was read to its end. It reports whether the
// client connection can carry another request.
func (cc *clientConn) respond(req *reqHead, resp *respHead, u *upstream, b *Backend, body *guardedBody) bool {
	bw := cc.bw
	keep := !req.close && !cc.s.closing.Load()
	bodiless := resp.framing == noBody
	chunked := false
	if resp.framing == chunkedBody || resp.framing == eofBody {
		if req.minor >= 1 {
			chunked = true
		} else {
			keep = false // HTTP/1.0: the end of the connection ends the body
		}
	}
	// A request body the instance did not read to its end (it answered
	// early) must be read before the next request.
	if req.framing != noBody && !body.eof && keep {
		keep = cc.discardBody(req)
	}
	bw.WriteString("HTTP/1.1 ")
	bw.Write(resp.status)
	bw.WriteString("\r\n")
	resp.writeFields(bw, resp.fields)
	if resp.length >= 0 { // the body's length, or for HEAD, 204 and 304 the one the instance gave
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(resp.num[:0], resp.length, 10))
		bw.WriteString("\r\n")
	} else if chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("X-Request-Id: ")
	bw.Write(req.id)
	if !keep {
		bw.WriteString("\r\nConnection: close")
	} else if req.minor < 1 {
		bw.WriteString("\r\nConnection: keep-alive")
	}
	bw.WriteString("\r\n\r\n")

	ok := bodiless || cc.copyResponse(resp, u, chunked)
	if ok && !resp.close {
		b.put(u)
	} else {
		b.discard(u)
	}
	return ok && keep
}

// copyResponse streams the answer's body to the client, flushing whenever
// the instance has nothing more buffered, so that a streamed answer
// (server-sent events, a long download) reaches the client as it comes.
func (cc *clientConn) copyResponse(resp *respHead, u *upstream, chunked bool) bool {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	var w io.Writer = cc.bw
	var cw io.WriteCloser
	if chunked {
		cw = chunkedWriter{cc.bw}
		w = cw
	}
	body := &cc.rbody
	resp.body(body, u.br)
	left := int64(-1) // never 0 but after the last byte of a body of known length
	if resp.framing == lengthBody {
		left = resp.length
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return false
			}
			left -= int64(n)
			if u.br.Buffered() == 0 && left != 0 {
				if cc.bw.Flush() != nil {
					return false
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false // the client sees the answer cut short
		}
	}
	if cw != nil {
		cw.Close()
		resp.writeFields(cc.bw, resp.trailer)
		cc.bw.WriteString("\r\n")
	}
	return true
}

// tunnel joins the client and the instance after a 101 Switching
// Protocols (WebSocket) until both sides are done.
func (cc *clientConn) tunnel(req *reqHead, resp *respHead, u *upstream, b *Backend) {
	if cc.fc != nil {
		cc.fc.detach() // a tunnel's traffic is not for the fast path's loop
	}
	bw := cc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.Write(resp.status)
	bw.WriteString("\r\n")
	resp.writeFields(bw, resp.fields)
	bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
	bw.Write(resp.get("Upgrade"))
	bw.WriteString("\r\nX-Request-Id: ")
	bw.Write(req.id)
	bw.WriteString("\r\n\r\n")
	if bw.Flush() != nil {
		b.discard(u)
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = cc.br.WriteTo(u.c) // the client's bytes, buffered ones first
		closeWrite(u.c)
		close(done)
	}()
	_, _ = u.br.WriteTo(cc.c)
	closeWrite(cc.c)
	<-done
	b.discard(u)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
