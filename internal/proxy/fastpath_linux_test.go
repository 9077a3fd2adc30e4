//go:build linux

package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemhq/tandem/internal/registry"
)

// fastProxy is a proxy with the fast path on, in front of an instance
// that answers each request with its path, and a way to stop it.
type fastProxy struct {
	*Proxy
	stop func() error // ends Run and returns its error
}

func startFastProxy(t *testing.T, limits clientLimits) *fastProxy {
	t.Helper()
	t.Setenv(fastPathEnv, "")
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	t.Cleanup(be.Close)
	host, port, _ := net.SplitHostPort(backendAddr(be))
	pn, _ := strconv.Atoi(port)
	cat := &staticCatalog{instances: map[string][]registry.InstanceHealth{"svc": {{
		Instance: registry.Instance{Service: "svc", ID: "svc-1", Address: host, Port: pn},
		Status:   registry.Passing,
	}}}, ch: make(chan struct{})}
	p := New(Config{Addr: "127.0.0.1:0", Bind: "127.0.0.1", Domain: "tandem.", Node: "n1", FastPath: true}, cat, NewMetrics(), slog.New(slog.DiscardHandler))
	p.limits = limits
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var runErr error
	fp := &fastProxy{Proxy: p, stop: func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}}
	t.Cleanup(func() {
		if err := fp.stop(); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "the proxy listens with the fast path on", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.addr != "" && p.h1 != nil && p.h1.fast != nil
	})
	return fp
}

// parked is how many client connections wait in the fast path's loop.
func (p *fastProxy) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.h1.fast.parked()
}

// conns is how many client connections the HTTP/1.1 path serves.
func (p *fastProxy) conns() int {
	p.mu.Lock()
	h1 := p.h1
	p.mu.Unlock()
	h1.mu.Lock()
	defer h1.mu.Unlock()
	return len(h1.conns)
}

// waitFor polls cond until it holds, for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// client is one keep-alive client connection.
type client struct {
	c  net.Conn
	br *bufio.Reader
}

func dialClient(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &client{c: c, br: bufio.NewReader(c)}
}

func (c *client) send(paths ...string) error {
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: svc\r\n\r\n", p)
	}
	_, err := io.WriteString(c.c, b.String())
	return err
}

// expect reads one answer per path, in order, each with the path as its body.
func (c *client) expect(paths ...string) error {
	for _, want := range paths {
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			return fmt.Errorf("answer for %s: %w", want, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
			return fmt.Errorf("answer for %s: %d %q, %v", want, resp.StatusCode, body, err)
		}
	}
	return nil
}

func (c *client) roundTrip(t testing.TB, paths ...string) {
	t.Helper()
	if err := c.send(paths...); err != nil {
		t.Fatal(err)
	}
	if err := c.expect(paths...); err != nil {
		t.Fatal(err)
	}
}

// closedByProxy reports whether the proxy closed the connection: a read
// finds the end of the stream (or a reset).
func (c *client) closedByProxy(within time.Duration) error {
	_ = c.c.SetReadDeadline(time.Now().Add(within))
	b, err := c.br.ReadByte()
	if err == nil {
		return fmt.Errorf("read %q, want the end of the connection", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connection still open after %v", within)
	}
	return nil
}

func TestFastPathParkedThenServed(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // after the other cleanups
	p := startFastProxy(t, defaultClientLimits)
	c := dialClient(t, p.Addr())
	c.roundTrip(t, "/first")
	for i := range 5 {
		waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
		c.roundTrip(t, "/next-"+strconv.Itoa(i))
	}
	// A request that comes in pieces while parked.
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	req := "GET /pieces HTTP/1.1\r\nHost: svc\r\n\r\n"
	for _, part := range []string{req[:3], req[3:20], req[20:]} {
		if _, err := io.WriteString(c.c, part); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the stimulus: a client that sends slowly
	}
	if err := c.expect("/pieces"); err != nil {
		t.Fatal(err)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestFastPathPipelined(t *testing.T) {
	p := startFastProxy(t, defaultClientLimits)
	c := dialClient(t, p.Addr())
	// First request and two behind it, in one write: the first request is
	// on the plain path, the others are buffered already.
	c.roundTrip(t, "/a", "/b", "/c")
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	// Parked, then many at once: one wake-up, the rest buffered.
	paths := make([]string, 300) // more than the 4 KiB one read takes
	for i := range paths {
		paths[i] = "/p" + strconv.Itoa(i)
	}
	c.roundTrip(t, paths...)
	// A client that sends its next request before reading the answer.
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	for i := range 20 {
		if err := c.send("/q" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if err := c.expect("/q" + strconv.Itoa(i-1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.expect("/q19"); err != nil {
		t.Fatal(err)
	}
}

func TestFastPathClientClosesWhileParked(t *testing.T) {
	p := startFastProxy(t, defaultClientLimits)
	c := dialClient(t, p.Addr())
	c.roundTrip(t, "/x")
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	c.c.Close()
	waitFor(t, "the proxy closed its side", func() bool { return p.conns() == 0 })
	// Half-closed: the client sends a request and its FIN together.
	c = dialClient(t, p.Addr())
	c.roundTrip(t, "/y")
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	if err := c.send("/z"); err != nil {
		t.Fatal(err)
	}
	_ = c.c.(*net.TCPConn).CloseWrite()
	if err := c.expect("/z"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the proxy closed its side", func() bool { return p.conns() == 0 })
}

func TestFastPathIdleTimeoutWhileParked(t *testing.T) {
	limits := clientLimits{header: time.Second, idle: 300 * time.Millisecond}
	p := startFastProxy(t, limits)
	c := dialClient(t, p.Addr())
	c.roundTrip(t, "/x")
	start := time.Now()
	waitFor(t, "the connection is parked", func() bool { return p.parked() == 1 })
	if err := c.closedByProxy(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The loop checks every idle/128, at least every 10 ms.
	if d := time.Since(start); d < limits.idle-limits.idle/128-10*time.Millisecond {
		t.Errorf("closed after %v, before the idle limit %v", d, limits.idle)
	}
	waitFor(t, "the proxy forgot the connection", func() bool { return p.conns() == 0 })
	// A connection that keeps sending is not closed by the idle limit.
	c = dialClient(t, p.Addr())
	for i := range 8 {
		c.roundTrip(t, "/busy-"+strconv.Itoa(i))
		time.Sleep(limits.idle / 3) // the stimulus: a client idle for less than the limit
	}
}

func TestFastPathShutdownWithParkedConns(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // after the other cleanups
	p := startFastProxy(t, defaultClientLimits)
	var cs []*client
	for i := range 20 {
		c := dialClient(t, p.Addr())
		c.roundTrip(t, "/c"+strconv.Itoa(i))
		cs = append(cs, c)
	}
	waitFor(t, "all connections are parked", func() bool { return p.parked() == 20 })
	start := time.Now()
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > shutdownGrace/2 {
		t.Errorf("Run returned %v after its context ended: parked connections were not woken", d)
	}
	for i, c := range cs {
		if err := c.closedByProxy(5 * time.Second); err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
	}
}

func TestFastPathManyConns(t *testing.T) {
	const n = 1000
	p := startFastProxy(t, defaultClientLimits)
	cs := make([]*client, n)
	for i := range cs {
		cs[i] = dialClient(t, p.Addr())
		cs[i].roundTrip(t, "/first")
	}
	waitFor(t, "all connections are parked", func() bool { return p.parked() == n })
	// Every parked connection is woken by its request; at most 64 are
	// busy at once, so that the proxy does not dial a thousand
	// connections to the instance at once.
	sem := make(chan struct{}, 64)
	for round := range 2 {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i, c := range cs {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				path := fmt.Sprintf("/r%d-c%d", round, i)
				if err := c.send(path); err != nil {
					errs <- err
					return
				}
				if err := c.expect(path); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		waitFor(t, "all connections are parked again", func() bool { return p.parked() == n })
	}
}

// The fast path's reader: one non-blocking attempt finds nothing, then
// the plain read waits.
func TestFastConnWouldBlock(t *testing.T) {
	f, err := newFastPath(time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go f.run()
	defer f.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fc := f.conn(s)
	buf := make([]byte, 8)
	fc.try = true
	if _, err := fc.Read(buf); err != errWouldBlock {
		t.Fatalf("non-blocking read of an empty socket: %v, want errWouldBlock", err)
	}
	io.WriteString(c, "hi")
	fc.try = false
	if n, err := fc.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	c.Close()
	fc.try = true
	var got error
	waitFor(t, "the non-blocking read sees the end", func() bool { _, got = fc.Read(buf); return got != errWouldBlock })
	if got != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", got)
	}
}
