//go:build linux

package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The epoll fast path for idle keep-alive client connections (Linux).
//
// On the plain path a connection that has sent its answer waits for the
// next request with a read, as Go does it: the read finds nothing
// (EAGAIN), then the goroutine parks in Go's poller until the socket is
// readable, and reads again. The first read is a system call per request
// that finds nothing. On the fast path the goroutine does not try: it
// parks on its connection's fastConn, and one loop (fastPath.run) waits
// on an epoll instance of its own, edge-triggered, in which every such
// connection is registered once; when one becomes readable the loop
// wakes its goroutine, which reads the request that is there.
//
// The loop itself waits as a goroutine: the epoll descriptor is
// registered with Go's poller (an epoll descriptor is readable while it
// has events), so no thread blocks in epoll_wait and one epoll_wait
// (with no wait) fetches every event at once.
//
// Ownership: the connection stays a net.Conn, owned and closed (once) by
// its goroutine as on the plain path; the loop only holds a registration
// of its descriptor, keyed by a number, never by the descriptor, so a
// descriptor closed and reused is never confused with another
// connection. Closing the descriptor removes the registration. Deadlines
// stay the connection's read deadlines: the loop wakes a connection
// whose idle deadline passed, and its read then fails as on the plain
// path. Bytes already read (a pipelined request) are served without
// parking; a wake-up that finds nothing (an event for bytes already read)
// parks again.
//
// What it is worth (docs/BENCHMARKS.md): under load it saves the read
// that finds nothing (4.7 system calls per request instead of 5.5) but
// no measurable CPU; when the proxy is idle between requests each one
// costs an epoll_wait and a second goroutine wake-up more than it saves.
// Hence off by default (Config.FastPath).

// Park states of a fastConn.
const (
	fcBusy   int32 = iota // its goroutine is serving, or about to read
	fcParked              // its goroutine waits on wake
	fcReady               // an event came while busy: try a read before parking
)

// errWouldBlock is a non-blocking read that found nothing.
var errWouldBlock = errors.New("no bytes to read yet")

// errServerClosing ends a parked connection's wait when the server stops.
var errServerClosing = errors.New("the proxy is stopping")

// fastPath is the loop that owns the epoll instance.
type fastPath struct {
	file   *os.File // the epoll descriptor, waited on through Go's poller
	raw    syscall.RawConn
	sweep  time.Duration // how often parked connections' deadlines are checked
	closed atomic.Bool   // no connection may park any more
	done   chan struct{} // run returned

	log *slog.Logger

	mu    sync.Mutex
	conns map[uint64]*fastConn // registered connections, by key
	next  uint64
}

// newFastPath makes an epoll instance; sweep is how often the idle
// deadlines of parked connections are checked (their slack).
func newFastPath(sweep time.Duration, log *slog.Logger) (*fastPath, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll fast path: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("epoll fast path: set non-blocking: %w", err)
	}
	f := &fastPath{file: os.NewFile(uintptr(ep), "epoll"), sweep: sweep, log: log, done: make(chan struct{}), conns: map[uint64]*fastConn{}}
	// A descriptor Go's poller could not take has no deadlines.
	if err := f.file.SetReadDeadline(time.Time{}); err != nil {
		f.file.Close()
		return nil, fmt.Errorf("epoll fast path: Go's poller does not take the epoll descriptor: %w", err)
	}
	if f.raw, err = f.file.SyscallConn(); err != nil {
		f.file.Close()
		return nil, fmt.Errorf("epoll fast path: %w", err)
	}
	return f, nil
}

// run fetches the events and wakes the connections they are for, and
// every sweep wakes the parked connections whose deadline passed, until
// close. If epoll fails, connections go back to the plain path.
func (f *fastPath) run() {
	defer close(f.done)
	events := make([]unix.EpollEvent, 256)
	var werr error
	fetch := func(ep uintptr) bool {
		for {
			n, err := unix.EpollWait(int(ep), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = fmt.Errorf("epoll fast path: epoll_wait: %w", err)
				return true
			}
			for i := range events[:n] {
				f.ready(uint64(uint32(events[i].Fd))|uint64(uint32(events[i].Pad))<<32, events[i].Events)
			}
			if n < len(events) {
				return false // all fetched: wait in Go's poller
			}
		}
	}
	for !f.closed.Load() {
		_ = f.file.SetReadDeadline(time.Now().Add(f.sweep))
		err := f.raw.Read(fetch)
		switch {
		case f.closed.Load():
		case werr != nil:
			f.stop(werr)
		case errors.Is(err, os.ErrDeadlineExceeded):
			f.wakeIdle(time.Now())
		case err != nil:
			f.stop(fmt.Errorf("epoll fast path: wait: %w", err))
		}
	}
}

// stop ends the fast path after a failure: every connection goes back
// to the plain path.
func (f *fastPath) stop(err error) {
	f.log.Warn("proxy: the epoll fast path stopped; connections take the plain path", "error", err)
	f.closed.Store(true)
	f.wakeAll()
}

// close stops the loop, wakes every parked connection (a connection
// woken by close goes on with a read, or sees its server closing first),
// closes the epoll instance and waits for the loop to return. Call it
// once, after run started.
func (f *fastPath) close() {
	f.closed.Store(true)
	f.wakeAll()
	f.file.Close() // run's wait ends; the descriptor closes once run is out
	<-f.done
}

// ctl runs EpollCtl on the connection's descriptor, while the epoll
// instance is open.
func (f *fastPath) ctl(raw syscall.RawConn, op int, ev *unix.EpollEvent) error {
	var err error
	ferr := f.raw.Control(func(ep uintptr) {
		cerr := raw.Control(func(fd uintptr) {
			err = unix.EpollCtl(int(ep), op, int(fd), ev)
		})
		err = errors.Join(cerr, err)
	})
	return errors.Join(ferr, err)
}

// ready is an event for the connection of key.
func (f *fastPath) ready(key uint64, events uint32) {
	f.mu.Lock()
	fc := f.conns[key]
	f.mu.Unlock()
	if fc == nil {
		return // closed meanwhile
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		fc.hup.Store(true)
	}
	for {
		switch fc.state.Load() {
		case fcParked:
			if fc.state.CompareAndSwap(fcParked, fcBusy) {
				fc.wake <- struct{}{}
				return
			}
		case fcBusy:
			if fc.state.CompareAndSwap(fcBusy, fcReady) {
				return
			}
		default:
			return
		}
	}
}

// wakeIdle wakes the parked connections whose idle deadline is before
// now: their read fails with the deadline, as on the plain path.
func (f *fastPath) wakeIdle(now time.Time) {
	f.wakeIf(func(fc *fastConn) bool { return fc.until.Load() <= now.UnixNano() })
}

// wakeAll wakes every parked connection.
func (f *fastPath) wakeAll() { f.wakeIf(func(*fastConn) bool { return true }) }

func (f *fastPath) wakeIf(cond func(*fastConn) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fc := range f.conns {
		if fc.state.Load() == fcParked && cond(fc) && fc.state.CompareAndSwap(fcParked, fcBusy) {
			fc.wake <- struct{}{}
		}
	}
}

// parked counts the connections parked now (for tests).
func (f *fastPath) parked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, fc := range f.conns {
		if fc.state.Load() == fcParked {
			n++
		}
	}
	return n
}

// conn returns the fast path's side of a plain TCP client connection, or
// nil if c is not one. Its goroutine reads c through it (it is the
// io.Reader under the connection's bufio.Reader) and calls forget when
// it is done with c.
func (f *fastPath) conn(c net.Conn) *fastConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	fc := &fastConn{f: f, c: c, raw: raw, wake: make(chan struct{}, 1)}
	fc.step = fc.readOnce
	return fc
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	f     *fastPath
	c     net.Conn
	raw   syscall.RawConn
	key   uint64 // its registration, 0 before register
	state atomic.Int32
	until atomic.Int64 // idle deadline (Unix ns) while parked
	wake  chan struct{}
	off   bool // back on the plain path (registering failed, or detached)
	// hup: the client will send nothing more (epoll said so); a read
	// cannot wait, and there is no edge to wait for.
	hup atomic.Bool
	// more: the last read filled its buffer, so bytes may be left in the
	// socket, which came with an edge already reported.
	more bool

	// a non-blocking read's state (made once per connection, so that a
	// read allocates nothing)
	try  bool // the next Read is one non-blocking attempt
	p    []byte
	n    int
	err  error
	step func(fd uintptr) bool
}

// Read reads from the connection, as net.Conn's Read does, or while
// fc.try, with one non-blocking read that returns errWouldBlock if
// nothing is there.
func (fc *fastConn) Read(p []byte) (int, error) {
	if !fc.try {
		n, err := fc.c.Read(p)
		fc.more = n == len(p)
		return n, err
	}
	fc.p, fc.n, fc.err = p, 0, nil
	err := fc.raw.Read(fc.step) // fails for a deadline passed or a closed connection
	fc.p = nil
	switch {
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: fc.c.LocalAddr(), Addr: fc.c.RemoteAddr(), Err: err}
	case fc.err == unix.EAGAIN:
		fc.more = false
		return 0, errWouldBlock
	case fc.err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: fc.c.LocalAddr(), Addr: fc.c.RemoteAddr(), Err: os.NewSyscallError("read", fc.err)}
	case fc.n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	fc.more = fc.n == len(p)
	return fc.n, nil
}

func (fc *fastConn) readOnce(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), fc.p)
		if err == unix.EINTR {
			continue
		}
		fc.n, fc.err = max(n, 0), err
		return true
	}
}

// register adds the connection to the epoll instance, edge-triggered.
// If an event is due already (bytes came before), epoll reports it.
func (fc *fastConn) register() error {
	f := fc.f
	f.mu.Lock()
	f.next++
	key := f.next
	f.conns[key] = fc
	f.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
	if err := f.ctl(fc.raw, unix.EPOLL_CTL_ADD, &ev); err != nil {
		f.mu.Lock()
		delete(f.conns, key)
		f.mu.Unlock()
		return err
	}
	fc.key = key
	return nil
}

// forget is called by the connection's goroutine once it is done with
// the connection, before closing it (closing removes the registration
// from epoll; an event fetched before that finds no connection).
func (fc *fastConn) forget() {
	if fc.key == 0 {
		return
	}
	fc.f.mu.Lock()
	delete(fc.f.conns, fc.key)
	fc.f.mu.Unlock()
	fc.key = 0
}

// detach takes a connection that goes on as something else (a tunnel)
// out of epoll, so that its traffic does not wake the loop.
func (fc *fastConn) detach() {
	if fc.key != 0 {
		_ = fc.f.ctl(fc.raw, unix.EPOLL_CTL_DEL, nil)
	}
	fc.forget()
	fc.off = true
}

// wait returns once br holds at least one byte the client sent, or with
// the error that reading met (io.EOF, a deadline passed), as br.Peek(1)
// would, but without a read that finds nothing first: it parks the
// goroutine until epoll reports the connection readable. until is the
// connection's read deadline; closing is the server's. It returns
// errServerClosing if closing was set while parked.
//
// Edge-triggered epoll reports bytes once, when they come; bytes that
// came with an edge already reported and are still in the socket get no
// other: wait parks only when the socket is known to hold none, that is
// when the last read did not fill its buffer (a TCP read takes all there
// is) or found nothing, and the client has not shut its side (the end
// of its stream is not an edge either).
func (fc *fastConn) wait(br *bufio.Reader, until time.Time, closing *atomic.Bool) error {
	if br.Buffered() > 0 {
		return nil
	}
	if closing.Load() {
		return errServerClosing
	}
	if fc.key == 0 && !fc.off {
		if fc.f.closed.Load() || fc.register() != nil {
			fc.off = true
		}
	}
	for !fc.off && !fc.f.closed.Load() && !fc.hup.Load() {
		switch st := fc.state.Load(); {
		case st == fcReady:
			if !fc.state.CompareAndSwap(fcReady, fcBusy) {
				continue
			}
		case fc.more: // bytes may be left: try before parking
		default:
			fc.until.Store(until.UnixNano())
			if !fc.state.CompareAndSwap(fcBusy, fcParked) {
				continue // an event came: fcReady
			}
			// Whoever stops parking sets its flag first and then wakes
			// the parked: either it sees this connection parked, or
			// this sees the flag.
			if closing.Load() || fc.f.closed.Load() {
				if !fc.state.CompareAndSwap(fcParked, fcBusy) {
					<-fc.wake
				}
			} else {
				<-fc.wake
			}
			if closing.Load() {
				return errServerClosing
			}
		}
		// Readable, or woken for a deadline or a shutdown (the read
		// reports those), or an event for bytes read already.
		fc.try = true
		_, err := br.Peek(1)
		fc.try = false
		if err != errWouldBlock {
			return err
		}
	}
	_, err := br.Peek(1)
	return err
}
