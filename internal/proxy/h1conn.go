package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP/1.1 path. A goroutine per client connection reads a request
// with the proxy's own parser (h1req.go), sends it on a pooled keep-alive connection to an
// instance, reads the answer with the proxy's own strict parser
// (h1resp.go) and writes it back, all in that one goroutine. Compared
// with net/http's Server, Transport and httputil.ReverseProxy this saves
// the goroutine handoffs between a server connection, a transport's read
// and write loops and the handler, and a background read per request; the
// benchmark in bench/proxy showed them to be most of the proxy's CPU time
// (docs/BENCHMARKS.md). What net/http's server refuses the request parser
// refuses too, and a little more (h1req.go says what); requests are
// written out with framing the proxy chooses itself (Content-Length or
// chunked, never both), so no ambiguity in a request's framing reaches an
// instance; an answer framed ambiguously is refused. HTTP/2 (h2c, or ALPN "h2" over TLS) goes
// to net/http's server and the ReverseProxy path in http.go.

const (
	maxHeaderBytes   = 1 << 20   // as net/http's server
	drainLimit       = 256 << 10 // unread request body the proxy reads to keep a connection
	tlsHandshakeTime = 10 * time.Second
)

// clientLimits are how long the proxy waits on a client: for the rest of
// a request's head once it has begun (against slowloris), and for the
// next request on an idle connection. Tests shorten them.
type clientLimits struct{ header, idle time.Duration }

var defaultClientLimits = clientLimits{header: 10 * time.Second, idle: 120 * time.Second}

// h1Server tracks the client connections of the HTTP/1.1 path so that a
// shutdown can close the idle ones and wait for the busy ones.
type h1Server struct {
	p       *Proxy
	limits  clientLimits
	tls     *tls.Config
	h2      *handoff  // connections for net/http's server (HTTP/2)
	fast    *fastPath // nil: every connection on the plain path
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
	var rd io.Reader = c
	if s.fast != nil && proto == "http" {
		if cc.fc = s.fast.conn(c); cc.fc != nil {
			rd = cc.fc
		}
	}
	cc.br = bufio.NewReaderSize(rd, 4096)
	cc.bw = bufio.NewWriterSize(c, 4096)
	if host, _, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
		cc.clientIP = host
	}
	if !s.track(cc) {
		c.Close()
		return
	}
	handedOff := cc.serve()
	if cc.fc != nil {
		cc.fc.forget()
	}
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
// now, the others after their request, and after timeout all close, with
// their connections to instances. It returns when every connection's
// goroutine has.
func (s *h1Server) shutdown(timeout time.Duration) {
	s.closing.Store(true)
	s.mu.Lock()
	for cc := range s.conns {
		if cc.idle.Load() {
			_ = cc.c.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	if s.fast != nil {
		s.fast.close() // wakes the parked connections, which see closing
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	s.mu.Lock()
	for cc := range s.conns {
		cc.c.Close()
	}
	s.mu.Unlock()
	s.p.table.closeAll() // a request waiting on an instance ends too
	<-done
}

// clientConn is one client connection on the HTTP/1.1 path.
type clientConn struct {
	s        *h1Server
	p        *Proxy
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	clientIP string
	proto    string // "http" or "https"
	idle     atomic.Bool
	fc       *fastConn // nil on the plain path
	// deadline is the read deadline serve last set on c, zero for none.
	deadline time.Time

	// per-request scratch space (see proxy)
	req       reqHead // the client's request
	reqBody   msgBody // and its body
	host      []byte  // the host that routes match
	body      guardedBody
	continued bool // 100 Continue went to the client
	tried     [maxAttempts]*Backend
	buf       [16]*Backend
	resp      respHead // the instance's answer
	rbody     msgBody  // and its body
}

// serve answers requests until the connection closes or must close. It
// reports whether it handed the connection to net/http's server.
//
// Read deadlines: waiting for a request may last limits.idle, and a head
// that has begun must arrive within limits.header; a body (or a tunnel)
// has none. They are set once per request at most, not per read: a head
// already in the buffer needs no deadline at all, and the idle deadline
// is moved only when it has come closer than idleSlack, so a busy
// keep-alive connection sets it about once a second, not per request.
func (cc *clientConn) serve() (handedOff bool) {
	for first := true; ; first = false {
		cc.idle.Store(true)
		if cc.s.closing.Load() {
			return false
		}
		if cc.br.Buffered() == 0 {
			cc.idleDeadline()
			var err error
			if cc.fc != nil && !first { // a first request may be HTTP/2's preface: not parked
				err = cc.fc.wait(cc.br, cc.deadline, &cc.s.closing)
			} else {
				_, err = cc.br.Peek(1)
			}
			if err != nil {
				return false
			}
		}
		cc.idle.Store(false)
		if first || headLen(cc.bufferedBytes()) < 0 {
			// On the first request also because isH2Preface may wait for
			// more bytes.
			cc.setDeadline(time.Now().Add(cc.s.limits.header))
		}
		if first && cc.proto == "http" && cc.isH2Preface() {
			cc.setDeadline(time.Time{})
			cc.s.h2.give(&bufferedConn{Conn: cc.c, r: cc.br})
			return true
		}
		req := &cc.req
		if err := req.read(cc.br); err != nil {
			cc.refuse(err)
			return false
		}
		cc.reqBody.reset(&req.msgHead, req.framing, req.length, cc.br)
		if req.framing != noBody || req.upgrade != nil {
			cc.setDeadline(time.Time{}) // the body or the tunnel reads the client for as long as it takes
		}
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

// idleSlack is how much sooner than after the idle limit an idle
// connection may be closed, for not moving its deadline on every request:
// a 128th of the limit (0.94 s of 120 s).
func idleSlack(idle time.Duration) time.Duration { return idle / 128 }

// idleDeadline makes the wait for the next request end after the idle
// limit (less at most idleSlack).
func (cc *clientConn) idleDeadline() {
	now, idle := time.Now(), cc.s.limits.idle
	if d := cc.deadline.Sub(now); cc.deadline.IsZero() || d < idle-idleSlack(idle) || d > idle {
		cc.setDeadline(now.Add(idle))
	}
}

func (cc *clientConn) setDeadline(t time.Time) {
	cc.deadline = t
	_ = cc.c.SetReadDeadline(t)
}

// bufferedBytes returns what the client sent that serve has not read.
func (cc *clientConn) bufferedBytes() []byte {
	b, _ := cc.br.Peek(cc.br.Buffered())
	return b
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
	case errors.Is(err, errRequestTooLarge):
		cc.plain(http.StatusRequestHeaderFieldsTooLarge, err.Error(), nil)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	case errors.As(err, &ne) && ne.Timeout():
		return
	case errors.Is(err, errTransferCoding):
		cc.plain(http.StatusNotImplemented, err.Error(), nil)
	case errors.Is(err, errBadRequest):
		cc.plain(http.StatusBadRequest, err.Error(), nil)
	default: // reading from the client failed
		return
	}
	_ = cc.bw.Flush()
}

// plain writes a short text answer from the proxy itself. With req nil
// or closing, it asks the client to close the connection.
func (cc *clientConn) plain(code int, msg string, req *reqHead) {
	bw := cc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(msg) + 1))
	if req != nil && len(req.id) > 0 {
		bw.WriteString("\r\nX-Request-Id: ")
		bw.Write(req.id)
	}
	if req == nil || req.close {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	if req == nil || string(req.method) != http.MethodHead {
		bw.WriteString(msg)
		bw.WriteByte('\n')
	}
}

// fail answers req from the proxy itself and reports whether the
// connection can go on: only if the request's body, if any, was read (or
// is small enough to read now).
func (cc *clientConn) fail(req *reqHead, code int, msg string) bool {
	keep := !req.close && cc.discardBody(req)
	if !keep {
		req.close = true
	}
	cc.plain(code, "tandem proxy: "+msg, req)
	return keep
}

// discardBody reads what is left of a request's body, if little is left.
func (cc *clientConn) discardBody(req *reqHead) bool {
	if req.framing == noBody {
		return true
	}
	return cc.reqBody.discard(drainLimit + 1)
}
