package proxy

import (
	"bufio"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// probeAfter: a pooled connection idle for longer is probed (one
// MSG_PEEK) before reuse; one idle for less is used as is by a replayable
// request (idempotent, no body), which goes again on a new connection if
// the instance closed it meanwhile (retry.go). Other requests always
// probe, so that a POST is not lost to a connection closed a moment ago. Under load
// connections are reused within milliseconds, so the common case costs no
// system call.
const probeAfter = time.Second

// maxIdlePerBackend bounds the keep-alive connections a node keeps open to
// one instance.
const maxIdlePerBackend = 256

// upstream is one keep-alive connection to an instance, used by one request
// at a time.
type upstream struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer // writes to w
	w      *awaitWriter
	idleAt time.Time
	// stillOpen's parts, made once per connection, not per request
	raw  syscall.RawConn
	peek func(fd uintptr) bool
	open bool
}

func newUpstream(c net.Conn) *upstream {
	u := &upstream{c: c, br: bufio.NewReaderSize(c, 4096)}
	if sc, ok := c.(syscall.Conn); ok {
		u.raw, _ = sc.SyscallConn()
	}
	u.w = newAwaitWriter(c, u.raw)
	u.bw = bufio.NewWriterSize(u.w, 4096)
	var b [1]byte
	u.peek = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		u.open = err == syscall.EAGAIN
		return true
	}
	return u
}

func (u *upstream) close() { _ = u.c.Close() }

// connPool holds a backend's idle keep-alive connections, newest last,
// and knows those in use, to cut them when a drain runs out of time.
type connPool struct {
	mu     sync.Mutex
	idle   []*upstream
	active map[*upstream]struct{}
	closed bool
}

// get returns an idle connection to b that is still open and was idle for
// less than maxIdle, or dials a new one within connect (always, with
// fresh). reused reports which: a reused connection may have been closed
// by the instance a moment ago, a fresh one cannot have been.
//
// A connection idle for less than probeAfter is probed only for a request
// that could not be sent again (probe): one whose method is not idempotent
// or that has a body.
func (b *Backend) get(connect, maxIdle time.Duration, fresh, probe bool) (u *upstream, reused bool, err error) {
	now := time.Now()
	for !fresh {
		b.conns.mu.Lock()
		n := len(b.conns.idle)
		if n == 0 {
			b.conns.mu.Unlock()
			break
		}
		u = b.conns.idle[n-1]
		b.conns.idle[n-1] = nil
		b.conns.idle = b.conns.idle[:n-1]
		b.conns.mu.Unlock()
		idle := now.Sub(u.idleAt)
		if idle < maxIdle && ((idle < probeAfter && !probe) || u.stillOpen()) {
			b.activate(u)
			return u, true, nil
		}
		u.close()
	}
	c, err := net.DialTimeout("tcp", b.Addr, connect)
	if err != nil {
		return nil, false, err
	}
	u = newUpstream(c)
	b.activate(u)
	return u, false, nil
}

func (b *Backend) activate(u *upstream) {
	b.conns.mu.Lock()
	if b.conns.active == nil {
		b.conns.active = map[*upstream]struct{}{}
	}
	b.conns.active[u] = struct{}{}
	b.conns.mu.Unlock()
}

// discard closes a connection that cannot carry another request.
func (b *Backend) discard(u *upstream) {
	b.conns.mu.Lock()
	delete(b.conns.active, u)
	b.conns.mu.Unlock()
	u.close()
}

// put returns a connection whose last response was read to its end.
func (b *Backend) put(u *upstream) {
	u.idleAt = time.Now()
	b.conns.mu.Lock()
	delete(b.conns.active, u)
	if b.conns.closed || len(b.conns.idle) >= maxIdlePerBackend {
		b.conns.mu.Unlock()
		u.close()
		return
	}
	b.conns.idle = append(b.conns.idle, u)
	b.conns.mu.Unlock()
}

// closeIdle closes b's idle connections.
func (b *Backend) closeIdle() {
	b.conns.mu.Lock()
	idle := b.conns.idle
	b.conns.idle = nil
	b.conns.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}

// drain is for a backend that left its pool: its idle connections close
// now, the others when their request ends, and those still busy after
// timeout are cut.
func (b *Backend) drain(timeout time.Duration) {
	b.conns.mu.Lock()
	b.conns.closed = true
	b.conns.mu.Unlock()
	b.closeIdle()
	time.AfterFunc(timeout, func() {
		b.conns.mu.Lock()
		var busy []*upstream
		for u := range b.conns.active {
			busy = append(busy, u)
		}
		b.conns.mu.Unlock()
		for _, u := range busy {
			u.close() // the request fails; its goroutine discards u
		}
	})
}

// cut closes all of b's connections, idle or in use, and keeps none
// returned later.
func (b *Backend) cut() {
	b.conns.mu.Lock()
	b.conns.closed = true
	all := b.conns.idle
	b.conns.idle = nil
	for u := range b.conns.active {
		all = append(all, u)
	}
	b.conns.mu.Unlock()
	for _, u := range all {
		u.close()
	}
}

// pruneIdle closes connections idle for maxIdle or longer.
func (b *Backend) pruneIdle(maxIdle time.Duration) {
	cutoff := time.Now().Add(-maxIdle)
	b.conns.mu.Lock()
	var old []*upstream
	keep := b.conns.idle[:0]
	for _, u := range b.conns.idle {
		if u.idleAt.Before(cutoff) {
			old = append(old, u)
		} else {
			keep = append(keep, u)
		}
	}
	clear(b.conns.idle[len(keep):])
	b.conns.idle = keep
	b.conns.mu.Unlock()
	for _, u := range old {
		u.close()
	}
}

// stillOpen reports whether an idle connection can carry a request: the
// instance has neither closed it nor sent anything unasked (an idle
// connection with data waiting is out of step). It peeks without blocking:
// one system call, much cheaper than a request lost on a dead connection.
func (u *upstream) stillOpen() bool {
	if u.raw == nil {
		return true
	}
	u.open = false
	return u.raw.Read(u.peek) == nil && u.open
}

// awaitLimit bounds flushAwait's wait. An answer slower than that is
// waited for as any read is (a read that finds nothing, then the poller),
// which costs one wake-up more but is rare and slow anyway. The bound is
// for a connection that the instance half-closed (FIN, still reading)
// after its last answer and within probeAfter: the poller reported that
// before flushAwait armed it, so no new event comes, and the read after
// the bound finds the end of the stream and the request goes again on a
// new connection, as before, awaitLimit later. A connection closed
// outright answers the request with a reset, which ends the wait at once.
const awaitLimit = 100 * time.Millisecond

// flushAwait sends what u.bw holds, the end of a request, and returns
// once the instance's answer can be read, or after min(awaitLimit, limit),
// or when the connection failed (the read that follows reports it). Go's
// poller tries a read before it waits, and right after a request that
// read finds nothing (EAGAIN): waiting first saves that system call on
// nearly every request. It leaves a read deadline set: set yours after.
func (u *upstream) flushAwait(limit time.Duration) error {
	_ = u.c.SetReadDeadline(time.Now().Add(min(limit, awaitLimit)))
	u.w.await = true
	err := u.bw.Flush()
	u.w.await = false
	return err
}

// awaitWriter is the writer under an upstream's bufio.Writer. It writes
// to the connection; armed by flushAwait, it writes and then waits until
// the connection is readable, with no read attempt in between.
type awaitWriter struct {
	c     net.Conn
	raw   syscall.RawConn
	await bool
	// the armed write's state, for step (made once per connection, so
	// that a write allocates nothing)
	p      []byte
	n      int
	err    error
	called bool
	step   func(fd uintptr) bool
}

func newAwaitWriter(c net.Conn, raw syscall.RawConn) *awaitWriter {
	w := &awaitWriter{c: c, raw: raw}
	w.step = w.writeThenWait
	return w
}

func (w *awaitWriter) Write(p []byte) (int, error) {
	if !w.await || w.raw == nil {
		return w.c.Write(p)
	}
	w.await = false
	w.p, w.n, w.err, w.called = p, 0, nil, false
	// RawConn.Read arms the poller for reading before it calls step, so
	// an answer that comes as soon as the request is out is not missed. A
	// deadline passed or a closed connection while waiting shows on the
	// read that follows.
	_ = w.raw.Read(w.step)
	n, err := w.n, w.err
	w.p = nil
	if err != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: os.NewSyscallError("write", err)}
	}
	if n < len(p) { // not armed (closed, deadline passed) or the socket's buffer was full
		m, err := w.c.Write(p[n:])
		return n + m, err
	}
	return n, nil
}

// writeThenWait writes on its first call and asks RawConn.Read to wait
// for readability (false); called again once readable, it stops.
func (w *awaitWriter) writeThenWait(fd uintptr) bool {
	if w.called {
		return true
	}
	w.called = true
	for w.n < len(w.p) {
		m, err := syscall.Write(int(fd), w.p[w.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN: // buffer full: Write sends the rest
			return true
		case err != nil:
			w.err = err
			return true
		}
		w.n += m
	}
	return false
}
