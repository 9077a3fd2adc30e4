package proxy

import (
	"bufio"
	"net"
	"sync"
)

// HTTP/2 hand-off: the HTTP/1.1 path accepts every connection and gives
// those that speak HTTP/2 (the h2c preface, or ALPN "h2") to net/http's
// server, which proxies them through the ReverseProxy path in http.go.

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

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
