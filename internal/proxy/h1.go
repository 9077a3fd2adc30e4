package proxy

// The HTTP/1.1 path. A goroutine per client connection reads a request
// with net/http's parser, sends it on a pooled keep-alive connection to an
// instance, reads the answer with the proxy's own strict parser
// (h1resp.go) and writes it back, all in that one goroutine. Compared
// with net/http's Server, Transport and httputil.ReverseProxy this saves
// the goroutine handoffs between a server connection, a transport's read
// and write loops and the handler, and a background read per request; the
// benchmark in bench/proxy showed them to be most of the proxy's CPU time
// (docs/BENCHMARKS.md). Requests are parsed by net/http, so what it
// refuses the proxy refuses, and written out with framing the proxy
// chooses itself (Content-Length or chunked, never both), so no ambiguity
// in a request's framing reaches an instance; an answer framed
// ambiguously is refused. HTTP/2 (h2c, or ALPN "h2" over TLS) goes
// to net/http's server and the ReverseProxy path in http.go.

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

const (
	h2Preface        = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	maxHeaderBytes   = 1 << 20 // as net/http's server
	headerTimeout    = 10 * time.Second
	clientIdle       = 120 * time.Second
	drainLimit       = 256 << 10 // unread request body the proxy reads to keep a connection
	tlsHandshakeTime = 10 * time.Second
)

// h1Server tracks the client connections of the HTTP/1.1 path so that a
// shutdown can close the idle ones and wait for the busy ones.
type h1Server struct {
	p       *Proxy
	tls     *tls.Config
	h2      *handoff // connections for net/http's server (HTTP/2)
	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*clientConn]struct{}
	wg      sync.WaitGroup
}

func (s *h1Server) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond) // out of file descriptors: let some close
				continue
			}
			return err
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

func (s *h1Server) handle(c net.Conn) {
	defer s.wg.Done()
	proto := "http"
	if s.tls != nil {
		tc := tls.Server(c, s.tls)
		_ = tc.SetDeadline(time.Now().Add(tlsHandshakeTime))
		if err := tc.Handshake(); err != nil {
			tc.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			s.h2.give(tc)
			return
		}
		c, proto = tc, "https"
	}
	cc := &clientConn{s: s, p: s.p, c: c, proto: proto}
	cc.lr.R = c
	cc.br = bufio.NewReaderSize(&cc.lr, 4096)
	cc.bw = bufio.NewWriterSize(c, 4096)
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		cc.clientIP = host
	}
	if !s.track(cc) {
		c.Close()
		return
	}
	handedOff := cc.serve()
	s.untrack(cc)
	if !handedOff {
		c.Close()
	}
}

func (s *h1Server) track(cc *clientConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[cc] = struct{}{}
	return true
}

func (s *h1Server) untrack(cc *clientConn) {
	s.mu.Lock()
	delete(s.conns, cc)
	s.mu.Unlock()
}

// shutdown stops new requests: connections waiting for a request close
// now, the others after their request, and after timeout all close.
func (s *h1Server) shutdown(timeout time.Duration) {
	s.closing.Store(true)
	s.mu.Lock()
	for cc := range s.conns {
		if cc.idle.Load() {
			_ = cc.c.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.mu.Lock()
		for cc := range s.conns {
			cc.c.Close()
		}
		s.mu.Unlock()
	}
}

// clientConn is one client connection on the HTTP/1.1 path.
type clientConn struct {
	s        *h1Server
	p        *Proxy
	c        net.Conn
	lr       io.LimitedReader // bounds a request's head
	br       *bufio.Reader
	bw       *bufio.Writer
	clientIP string
	proto    string // "http" or "https"
	idle     atomic.Bool

	// per-request scratch space (see proxy)
	body  guardedBody
	tried [maxAttempts]*Backend
	buf   [16]*Backend
	resp  respHead // the instance's answer
	rbody respBody // and its body
}

// serve answers requests until the connection closes or must close. It
// reports whether it handed the connection to net/http's server.
func (cc *clientConn) serve() (handedOff bool) {
	for first := true; ; first = false {
		cc.idle.Store(true)
		if cc.s.closing.Load() {
			return false
		}
		cc.lr.N = maxHeaderBytes + 4096
		_ = cc.c.SetReadDeadline(time.Now().Add(clientIdle))
		if _, err := cc.br.Peek(1); err != nil {
			return false
		}
		cc.idle.Store(false)
		_ = cc.c.SetReadDeadline(time.Now().Add(headerTimeout))
		if first && cc.proto == "http" && cc.isH2Preface() {
			_ = cc.c.SetReadDeadline(time.Time{})
			cc.s.h2.give(&bufferedConn{Conn: cc.c, r: cc.br})
			return true
		}
		req, err := http.ReadRequest(cc.br)
		if err != nil {
			cc.refuse(err)
			return false
		}
		cc.lr.N = math.MaxInt64
		_ = cc.c.SetReadDeadline(time.Time{})
		keep := cc.handle(req)
		if !keep || cc.br.Buffered() == 0 { // no request pipelined behind this one
			if cc.bw.Flush() != nil {
				return false
			}
		}
		if !keep {
			return false
		}
	}
}

// isH2Preface reports whether the connection starts with HTTP/2's client
// preface (h2c with prior knowledge). Only a prefix of the preface makes
// it wait for more bytes, and no HTTP/1 request starts like that.
func (cc *clientConn) isH2Preface() bool {
	for n := 1; n <= len(h2Preface); n++ {
		b, err := cc.br.Peek(n)
		if err != nil || b[n-1] != h2Preface[n-1] {
			return false
		}
	}
	return true
}

// refuse answers a request that could not be read, if it is worth an
// answer: not for a closed connection or a client that sent nothing in
// time.
func (cc *clientConn) refuse(err error) {
	var ne net.Error
	switch {
	case cc.lr.N <= 0:
		cc.plain(http.StatusRequestHeaderFieldsTooLarge, "request head larger than 1 MiB", nil)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	case errors.As(err, &ne) && ne.Timeout():
		return
	default:
		cc.plain(http.StatusBadRequest, "malformed HTTP request: "+err.Error(), nil)
	}
	_ = cc.bw.Flush()
}

// plain writes a short text answer from the proxy itself. With req nil
// or closing, it asks the client to close the connection.
func (cc *clientConn) plain(code int, msg string, req *http.Request) {
	msg += "\n"
	bw := cc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(msg)))
	if req != nil {
		if id := req.Header.Get("X-Request-Id"); id != "" && httpguts.ValidHeaderFieldValue(id) {
			bw.WriteString("\r\nX-Request-Id: ")
			bw.WriteString(id)
		}
	}
	if req == nil || req.Close {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	if req == nil || req.Method != http.MethodHead {
		bw.WriteString(msg)
	}
}

// fail answers req from the proxy itself and reports whether the
// connection can go on: only if the request's body, if any, was read (or
// is small enough to read now).
func (cc *clientConn) fail(req *http.Request, code int, msg string) bool {
	keep := !req.Close && cc.discardBody(req)
	if !keep {
		req.Close = true
	}
	cc.plain(code, "tandem proxy: "+msg, req)
	return keep
}

// discardBody reads what is left of a request's body, if little is left.
func (cc *clientConn) discardBody(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	n, err := io.Copy(io.Discard, io.LimitReader(req.Body, drainLimit+1))
	return err == nil && n <= drainLimit
}

// check applies the rules net/http's server applies to a request before
// its handler sees it, beyond those http.ReadRequest applies.
func check(req *http.Request) (int, string) {
	switch {
	case req.ProtoMajor != 1:
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version " + req.Proto
	case req.Method == http.MethodConnect:
		return http.StatusMethodNotAllowed, "CONNECT is not supported"
	case req.Host == "" && req.ProtoAtLeast(1, 1):
		return http.StatusBadRequest, "missing required Host header"
	case !httpguts.ValidHostHeader(req.Host):
		return http.StatusBadRequest, "malformed Host header"
	}
	// Field names and values need no check here: http.ReadRequest's
	// header reader (net/textproto) refuses invalid ones already.
	if e := req.Header["Expect"]; len(e) > 0 && !(len(e) == 1 && strings.EqualFold(e[0], "100-continue")) {
		return http.StatusExpectationFailed, "unsupported Expect header"
	}
	return 0, ""
}

// handle proxies one request and reports whether the client connection
// can carry another.
func (cc *clientConn) handle(req *http.Request) bool {
	if code, msg := check(req); code != 0 {
		req.Close = true
		cc.plain(code, "tandem proxy: "+msg, req)
		return false
	}
	host := strings.ToLower(req.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	p := cc.p
	pool := p.table.cur.Load().route(host, req.URL.Path)
	if pool == nil {
		return cc.fail(req, http.StatusNotFound, fmt.Sprintf("no service for host %q: send Host: <service> or <service>.service.%s, or add the host to a service's hosts", host, p.table.domain))
	}
	if len(pool.Backends) == 0 {
		p.metrics.noBackends.WithLabelValues(pool.Service).Inc()
		return cc.fail(req, http.StatusServiceUnavailable, fmt.Sprintf("service %q has no passing instance", pool.Service))
	}
	pool.inflight.Inc()
	defer pool.inflight.Dec()
	if req.Header.Get("X-Request-Id") == "" {
		req.Header["X-Request-Id"] = []string{newRequestID()}
	}
	return cc.proxy(req, pool)
}

// proxy sends req to an instance of pool, moving to another when the first
// cannot take it, by the same rules as RoundTrip in http.go, and writes
// the answer back.
func (cc *clientConn) proxy(req *http.Request, pool *Pool) bool {
	p := cc.p
	now := time.Now()
	pool.Budget.Request(now)
	hasBody := req.Body != nil && req.Body != http.NoBody
	canRetry5xx := idempotent(req.Method) && !hasBody
	upgrade := isUpgrade(req.Header)
	key := hashKeyOf(req, pool, cc.clientIP)
	// Scratch space of the connection: passed to interfaces, it would
	// escape to the heap once per request if it were local.
	cc.body = guardedBody{r: req.Body}
	body, tried, buf := &cc.body, cc.tried[:], cc.buf[:]
	clear(tried)
	var lastErr error
	lastConnect := false // lastErr is a connect failure
	for attempt := 0; attempt < maxAttempts; attempt++ {
		eligible, _ := Eligible(pool.Backends, pool.Outlier, now, buf[:0])
		b := pool.Balancer.Pick(eligible, tried[:attempt], key, p.cfg.Node)
		if b == nil || body.read {
			break // none left, or part of the body went to an instance: it cannot be sent again
		}
		tried[attempt] = b
		b.Begin()
		start := time.Now()
		u, reused, err := b.get(pool.connectTimeout, pool.idleTimeout)
		if err != nil {
			b.End()
			p.metrics.requests.WithLabelValues(pool.Service, b.ID, "0").Inc()
			if b.Report(pool.Outlier, ConnectFailure, time.Now()) {
				p.metrics.ejections.WithLabelValues(pool.Service, b.ID).Inc()
			}
			p.metrics.retries.WithLabelValues(pool.Service, "connect").Inc()
			lastErr, lastConnect = err, true
			continue
		}
		resp, err := cc.exchange(req, u, body, pool, upgrade)
		if err != nil {
			b.End()
			b.discard(u)
			p.metrics.requests.WithLabelValues(pool.Service, b.ID, "0").Inc()
			if b.Report(pool.Outlier, ServerError, time.Now()) {
				p.metrics.ejections.WithLabelValues(pool.Service, b.ID).Inc()
			}
			lastErr, lastConnect = err, false
			if errors.Is(err, errClientBody) {
				return false // the client broke off its own request
			}
			// The instance died mid-request (reset, EOF) or did not
			// answer in time: an idempotent request is as safe to send
			// again as after a 502. So is any request that found a
			// reused connection closed before it was written.
			if (canRetry5xx || (reused && !body.read && errors.Is(err, errNotWritten))) && pool.Budget.TryRetry(time.Now()) {
				p.metrics.retries.WithLabelValues(pool.Service, "reset").Inc()
				continue
			}
			break
		}
		p.answered(pool, b, resp.code, start)
		switch resp.code {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			if canRetry5xx && attempt+1 < min(maxAttempts, len(pool.Backends)) && pool.Budget.TryRetry(time.Now()) {
				cc.rbody.reset(resp, u.br)
				if cc.rbody.discard(64<<10) && !resp.close {
					b.put(u)
				} else {
					b.discard(u)
				}
				b.End()
				p.metrics.retries.WithLabelValues(pool.Service, "5xx").Inc()
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
		case lastConnect:
		case errors.As(lastErr, &ne) && ne.Timeout():
			code, msg = http.StatusGatewayTimeout, lastErr.Error()
		default:
			code, msg = http.StatusBadGateway, lastErr.Error()
		}
	}
	if body.read {
		req.Close = true // the rest of the body is not worth reading
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
// 101 Switching Protocols only if the request asked to upgrade.
func (cc *clientConn) exchange(req *http.Request, u *upstream, body *guardedBody, pool *Pool, upgrade bool) (*respHead, error) {
	cc.writeHead(u.bw, req)
	if req.Body != nil && req.Body != http.NoBody {
		if _, ok := req.Header["Expect"]; ok {
			// The client waits for this before it sends the body; the
			// instance was not asked (Expect is not forwarded).
			cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := cc.bw.Flush(); err != nil {
				return nil, errClientBody
			}
		}
		if err := cc.copyBody(u, req, body); err != nil {
			return nil, err
		}
	} else if err := u.bw.Flush(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotWritten, err)
	}
	_ = u.c.SetReadDeadline(time.Now().Add(pool.headerTimeout))
	resp := &cc.resp
	for {
		if err := resp.read(u.br, req.Method == http.MethodHead); err != nil {
			return nil, fmt.Errorf("reading the instance's response: %w", err)
		}
		if resp.code == http.StatusSwitchingProtocols && !upgrade {
			return nil, fmt.Errorf("reading the instance's response: %w: 101 Switching Protocols to a request that asked for no upgrade", errMalformed)
		}
		if resp.code >= 200 || resp.code == http.StatusSwitchingProtocols {
			_ = u.c.SetReadDeadline(time.Time{})
			return resp, nil
		}
		// An informational answer (103 Early Hints): pass it on to a
		// client that understands it, and wait for the final one.
		if resp.code != http.StatusContinue && req.ProtoAtLeast(1, 1) {
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
func (cc *clientConn) copyBody(u *upstream, req *http.Request, body *guardedBody) error {
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	var w io.Writer = u.bw
	var cw io.WriteCloser
	if req.ContentLength < 0 {
		cw = httputil.NewChunkedWriter(u.bw)
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
		writeHeader(u.bw, req.Trailer, nil, nil)
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
func (cc *clientConn) respond(req *http.Request, resp *respHead, u *upstream, b *Backend, body *guardedBody) bool {
	bw := cc.bw
	keep := !req.Close && !cc.s.closing.Load()
	bodiless := resp.framing == noBody
	chunked := false
	if resp.framing == chunkedBody || resp.framing == eofBody {
		if req.ProtoAtLeast(1, 1) {
			chunked = true
		} else {
			keep = false // HTTP/1.0: the end of the connection ends the body
		}
	}
	// A request body the instance did not read to its end (it answered
	// early) must be read before the next request.
	if req.Body != nil && req.Body != http.NoBody && !body.eof && keep {
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
	bw.WriteString(req.Header.Get("X-Request-Id"))
	if !keep {
		bw.WriteString("\r\nConnection: close")
	} else if !req.ProtoAtLeast(1, 1) {
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
		cw = httputil.NewChunkedWriter(cc.bw)
		w = cw
	}
	body := &cc.rbody
	body.reset(resp, u.br)
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
func (cc *clientConn) tunnel(req *http.Request, resp *respHead, u *upstream, b *Backend) {
	bw := cc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.Write(resp.status)
	bw.WriteString("\r\n")
	resp.writeFields(bw, resp.fields)
	bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
	bw.Write(resp.get("Upgrade"))
	bw.WriteString("\r\nX-Request-Id: ")
	bw.WriteString(req.Header.Get("X-Request-Id"))
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

// hopHeaders are meaningful for one connection only and are not
// forwarded (RFC 9110, section 7.6.1). Forwarded and X-Forwarded-* from a
// client are not trusted: the proxy sets its own.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Expect": true, "Host": true,
}

var forwardedHeaders = map[string]bool{
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// writeHeader writes h's fields but the hop-by-hop ones, those the
// Connection field lists, and those in skip.
func writeHeader(bw *bufio.Writer, h http.Header, connection []string, skip map[string]bool) {
	for k, vv := range h {
		if hopHeaders[k] || skip[k] || (len(connection) > 0 && listed(connection, k)) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

// writeHead writes the request line and head of req as the proxy sends it
// on; its body's framing is the proxy's own.
func (cc *clientConn) writeHead(bw *bufio.Writer, req *http.Request) {
	uri := req.RequestURI
	if uri == "" || (uri[0] != '/' && uri != "*") {
		uri = req.URL.RequestURI() // absolute form: send the path only
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	writeHeader(bw, req.Header, req.Header["Connection"], forwardedHeaders)
	if te := req.Header["Te"]; len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers") {
		bw.WriteString("Te: trailers\r\n") // gRPC-style clients need it end to end
	}
	if isUpgrade(req.Header) {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(req.Header.Get("Upgrade"))
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-For: ")
	bw.WriteString(cc.clientIP)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\nX-Forwarded-Proto: ")
	bw.WriteString(cc.proto)
	bw.WriteString("\r\n")
	switch {
	case req.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		bw.WriteString("\r\n")
	case req.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

// listed reports whether the Connection field values name header k.
func listed(connection []string, k string) bool {
	for _, v := range connection {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), k) {
				return true
			}
		}
	}
	return false
}

// isUpgrade reports whether a request asks to switch protocols.
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// Request ids: a random per-process prefix and a counter, unique without a
// system call per request.
var (
	idPrefix  = func() string { var b [6]byte; _, _ = rand.Read(b[:]); return hex.EncodeToString(b[:]) }()
	idCounter atomic.Uint64
)

func newRequestID() string {
	return idPrefix + strconv.FormatUint(idCounter.Add(1), 16)
}

// handoff is a listener whose connections the HTTP/1.1 path gives to
// net/http's server.
type handoff struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) give(c net.Conn) {
	select {
	case h.ch <- c:
	case <-h.done:
		c.Close()
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
