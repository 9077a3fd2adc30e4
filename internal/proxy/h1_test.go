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

	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
)

// staticCatalog serves fixed services: the proxy's HTTP handling is under
// test here, not the view.
type staticCatalog struct {
	mu        sync.Mutex
	spec      registry.Service
	instances map[string][]registry.InstanceHealth
	ch        chan struct{}
}

// set replaces a service's instances and tells the proxy.
func (c *staticCatalog) set(svc string, ins []registry.InstanceHealth) {
	c.mu.Lock()
	c.instances[svc] = ins
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}

func (c *staticCatalog) Services() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for s := range c.instances {
		out = append(out, s)
	}
	return out
}

func (c *staticCatalog) Service(name string) (registry.Service, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	spec := c.spec
	spec.Name = name
	return spec, true
}

func (c *staticCatalog) Instances(svc string) []registry.InstanceHealth {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instances[svc]
}

func (c *staticCatalog) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ch
}

// startProxy runs a proxy in front of backends (service "svc").
func startProxy(t testing.TB, backends ...string) *Proxy {
	t.Helper()
	p, _ := startProxySpec(t, registry.Service{}, backends...)
	return p
}

func startProxySpec(t testing.TB, spec registry.Service, backends ...string) (*Proxy, *staticCatalog) {
	t.Helper()
	return startProxyLimits(t, spec, defaultClientLimits, backends...)
}

// startProxyLimits is startProxySpec with the given limits on clients.
func startProxyLimits(t testing.TB, spec registry.Service, limits clientLimits, backends ...string) (*Proxy, *staticCatalog) {
	t.Helper()
	cat := &staticCatalog{spec: spec, instances: map[string][]registry.InstanceHealth{}, ch: make(chan struct{})}
	for i, addr := range backends {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		cat.instances["svc"] = append(cat.instances["svc"], registry.InstanceHealth{
			Instance: registry.Instance{Service: "svc", ID: fmt.Sprintf("svc-%d", i+1), Address: host, Port: p},
			Status:   registry.Passing,
		})
	}
	p := New(Config{Addr: "127.0.0.1:0", Bind: "127.0.0.1", Domain: "tandem.", Node: "n1"}, cat, NewMetrics(), slog.New(slog.DiscardHandler))
	p.limits = limits
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for p.Addr() == "" {
		if time.Now().After(deadline) {
			t.Fatal("proxy did not listen")
		}
		time.Sleep(time.Millisecond)
	}
	return p, cat
}

func backendAddr(s *httptest.Server) string { return s.Listener.Addr().String() }

// instance listens for an instance of raw TCP, closed when the test ends,
// and serves each connection in a goroutine with its number, from 0.
func instance(tb testing.TB, serve func(c net.Conn, n int)) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c, n)
		}
	}()
	return ln
}

// raw sends raw bytes to the proxy and returns the connection's reader.
func raw(t *testing.T, p *Proxy, request string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func TestH1Headers(t *testing.T) {
	var got http.Header
	var gotHost string
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotHost = r.Header.Clone(), r.Host
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "hop")
		w.Header().Set("X-Kept", "yes")
		fmt.Fprint(w, "ok")
	}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))
	_, br := raw(t, p, "GET /a?b=c HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Request-Id: abc\r\nUser-Agent: t\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if gotHost != "svc" || got.Get("X-Drop") != "" || got.Get("Forwarded") != "" || got.Get("User-Agent") != "t" {
		t.Errorf("backend got host %q, headers %v", gotHost, got)
	}
	if xff := got.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the client's address only", xff)
	}
	if got.Get("X-Forwarded-Host") != "svc" || got.Get("X-Forwarded-Proto") != "http" || got.Get("X-Request-Id") != "abc" {
		t.Errorf("forwarding headers: %v", got)
	}
	if resp.Header.Get("X-Secret") != "" || resp.Header.Get("X-Kept") != "yes" || resp.Header.Get("X-Request-Id") != "abc" {
		t.Errorf("response headers: %v", resp.Header)
	}
}

// A request framed both ways reaches the instance framed one way only
// (chunked, which RFC 9112 says wins), so the two cannot disagree about
// where it ends.
func TestH1AmbiguousFraming(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
	}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))
	// The body is read as chunked, the answer says the connection closes,
	// and what followed it on the connection is never read as a request
	// (RFC 9112, section 6.1).
	_, br := raw(t, p, "POST /one HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5\r\nhello\r\n0\r\n\r\nGET /two HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Errorf("answer to a request with Content-Length and chunked: want Connection: close, got %v", resp.Header)
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("the connection answered a second request after an ambiguously framed one")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, "|") != "POST /one hello" {
		t.Fatalf("backend saw %q", seen)
	}
}

func TestH1BadInput(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))
	for _, tc := range []struct{ req, want string }{
		{"NOT HTTP\r\n\r\n", " 400 "},
		{"GET / HTTP/1.1\r\n\r\n", " 400 "}, // no Host
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", " 400 "},
		{"GET / HTTP/1.1\r\nHost: svc\r\nBad Name: x\r\n\r\n", " 400 "},
		{"GET / HTTP/1.1\r\nHost: svc\r\nX-Ctl: a\x01b\r\n\r\n", " 400 "},
		{"GET / HTTP/1.1\r\nHost: svc\r\nExpect: magic\r\n\r\n", " 417 "},
		{"CONNECT svc:80 HTTP/1.1\r\nHost: svc:80\r\n\r\n", " 405 "},
		{"GET / HTTP/1.1\r\nHost: svc\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", " 431 "},
		{"GET / HTTP/1.1\r\nHost: nosuch\r\n\r\n", " 404 "},
		// ways to smuggle a request past something in front of the proxy
		{"GET / HTTP/1.1\r\nHost: svc\r\nX-A: a\r\n b\r\n\r\n", " 400 "},
		{"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length : 5\r\n\r\nhello", " 400 "},
		{"POST / HTTP/1.0\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", " 400 "},
		{"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", " 501 "},
		{"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", " 400 "},
		{"GET / HTTP/1.1\r\nHost: svc\r\nHost: other\r\n\r\n", " 400 "},
		{"GET http://svc/ HTTP/1.1\r\n\r\n", " 400 "}, // no Host field
		{"GET / HTTP/2.0\r\nHost: svc\r\n\r\n", " 505 "},
	} {
		_, br := raw(t, p, tc.req)
		line, err := br.ReadString('\n')
		if !strings.Contains(line, tc.want) {
			t.Errorf("%.40q: got %q (%v), want %s", tc.req, line, err, tc.want)
		}
	}
}

// Bodies stream both ways: the instance sees each piece of a request body
// as the client sends it, and the client each piece of the answer as the
// instance flushes it.
func TestH1StreamsBothWays(t *testing.T) {
	lines := make(chan string)
	release := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rd := bufio.NewReader(r.Body)
		for {
			line, err := rd.ReadString('\n')
			if line != "" {
				lines <- line
			}
			if err != nil {
				break
			}
		}
		fmt.Fprint(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "end\n")
	}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.Addr()+"/", pr)
	req.Host = "svc"
	respc := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		respc <- resp
	}()
	recv := func(what string) string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("the instance did not get %s", what)
			return ""
		}
	}
	for _, l := range []string{"one\n", "two\n"} {
		fmt.Fprint(pw, l)
		if got := recv(l); got != l {
			t.Fatalf("instance got %q, want %q", got, l)
		}
	}
	pw.Close()
	resp := <-respc
	if resp == nil {
		return
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); line != "first\n" {
		t.Fatalf("first streamed line %q, %v", line, err)
	}
	close(release)
	if line, err := rd.ReadString('\n'); line != "end\n" {
		t.Fatalf("last line %q, %v", line, err)
	}
}

func TestH1ExpectContinueAndHTTP10(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.(http.Flusher).Flush() // no Content-Length: chunked to 1.1, close-delimited to 1.0
		fmt.Fprintf(w, "got %s", b)
	}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))

	c, br := raw(t, p, "PUT / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	if line, _ := br.ReadString('\n'); !strings.Contains(line, " 100 ") {
		t.Fatalf("want 100 Continue before the body, got %q", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "abc")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "got abc" || len(resp.TransferEncoding) == 0 {
		t.Fatalf("%q %v", b, resp.TransferEncoding)
	}

	_, br = raw(t, p, "POST / HTTP/1.0\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhi")
	all, _ := io.ReadAll(br) // the proxy closes the connection to end the body
	if !strings.HasSuffix(string(all), "\r\n\r\ngot hi") || strings.Contains(string(all), "chunked") {
		t.Fatalf("HTTP/1.0 answer: %q", all)
	}
}

// An idle connection the instance closed is not used for a POST (never
// sent twice: it probes first), and a GET that found it closed goes again
// on a new connection: both get through.
func TestH1InstanceClosesIdleConnections(t *testing.T) {
	// The instance answers one request per connection and then closes it
	// without saying so, as a server does whose idle timeout struck.
	closed := make(chan struct{}, 16)
	ln := instance(t, func(c net.Conn, _ int) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		c.Close()
		closed <- struct{}{}
	})
	p := startProxy(t, ln.Addr().String())
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest(http.MethodPost, "http://"+p.Addr()+"/", strings.NewReader("x"))
		if i%2 == 1 {
			req, _ = http.NewRequest(http.MethodGet, "http://"+p.Addr()+"/", nil)
		}
		req.Host = "svc"
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
		<-closed
	}
}

func TestH1HeadKeepsContentLength(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
	}))
	defer be.Close()
	p := startProxy(t, backendAddr(be))
	_, br := raw(t, p, "HEAD / HTTP/1.1\r\nHost: svc\r\n\r\nGET /x HTTP/1.1\r\nHost: nosuch\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ContentLength != 1234 {
		t.Fatalf("HEAD Content-Length %d", resp.ContentLength)
	}
	// The connection is still in step: the next answer follows.
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 404 {
		t.Fatalf("next answer: %v %v", resp, err)
	}
}

// An instance that leaves the view gets no new requests; one in flight
// may go on for the service's response_header timeout, and is then cut.
func TestH1DrainTimeout(t *testing.T) {
	started := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "streaming\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done() // streams until the proxy hangs up
	}))
	defer be.Close()
	spec := registry.Service{Timeouts: registry.ProxyTimeouts{ResponseHeader: config.Duration(300 * time.Millisecond)}}
	p, cat := startProxySpec(t, spec, backendAddr(be))
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addr()+"/", nil)
	req.Host = "svc"
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cat.set("svc", nil)
	rest, err := io.ReadAll(resp.Body) // ends when the drain cuts the stream
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the stream went on for 10 s after the instance left; want it cut after 300 ms")
	}
	if string(rest) != "streaming\n" {
		t.Fatalf("body %q", rest)
	}
}

// recordingInstance answers every request with an empty 200 and records
// the heads it receives.
func recordingInstance(t *testing.T) (addr string, heads <-chan string) {
	ch := make(chan string, 16)
	ln := instance(t, func(c net.Conn, _ int) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
				head.WriteString(line)
			}
			ch <- head.String()
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	return ln.Addr().String(), ch
}

// The request goes on as the client wrote it, field names spelled and
// ordered as they were, less what is the proxy's to write; an
// absolute-form target goes on as its path and query.
func TestH1RequestAsSent(t *testing.T) {
	addr, heads := recordingInstance(t)
	p := startProxy(t, addr)
	for _, tc := range []struct{ req, want string }{
		{"GET /a%20b?c HTTP/1.1\r\nhost: svc\r\nx-CuStOm: 1\r\nConnection: x-drop\r\nX-Drop: 2\r\nKeep-Alive: 5\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\nX-Request-Id: abc\r\n\r\n",
			"GET /a%20b?c HTTP/1.1\r\nHost: svc\r\nx-CuStOm: 1\r\nAccept: */*\r\nX-Request-Id: abc\r\n" +
				"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: svc\r\nX-Forwarded-Proto: http\r\n"},
		{"GET http://svc/p?q HTTP/1.1\r\nHost: ignored\r\nX-Request-Id: abc\r\n\r\n",
			"GET /p?q HTTP/1.1\r\nHost: svc\r\nX-Request-Id: abc\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: svc\r\nX-Forwarded-Proto: http\r\n"},
		{"OPTIONS * HTTP/1.1\r\nHost: svc\r\nX-Request-Id: abc\r\n\r\n",
			"OPTIONS * HTTP/1.1\r\nHost: svc\r\nX-Request-Id: abc\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: svc\r\nX-Forwarded-Proto: http\r\n"},
		{"PUT /x HTTP/1.1\r\nHost: svc\r\nX-Request-Id:\r\nX-Request-Id: second\r\n\r\n", // an empty id is replaced
			"PUT /x HTTP/1.1\r\nHost: svc\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: svc\r\nX-Forwarded-Proto: http\r\nX-Request-Id: " + idPrefix},
	} {
		_, br := raw(t, p, tc.req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%q: %s", tc.req, resp.Status)
		}
		if got := <-heads; !strings.HasPrefix(got, tc.want) {
			t.Errorf("%q reached the instance as\n%q, want\n%q", tc.req, got, tc.want)
		}
	}
}

// The limits on clients hold: a head that trickles in is cut after the
// header limit, on a connection's first request and on a later one; an
// idle connection is closed after the idle limit. A body, and an answer,
// may take longer than the header limit.
func TestH1ClientLimits(t *testing.T) {
	slow := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-slow
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %q", b)
	}))
	defer be.Close()
	limits := clientLimits{header: 200 * time.Millisecond, idle: 10 * time.Second}
	p, _ := startProxyLimits(t, registry.Service{}, limits, backendAddr(be))

	// closedBefore reports whether the proxy closes c before a client
	// trickling a head (one field every 50 ms) for 3 s is done.
	closedBefore := func(c net.Conn) bool {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
					return
				}
			}
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.ReadAll(c)
		select {
		case <-done:
			return false
		default:
			// The proxy closed the connection (a reset, if it had unread
			// bytes of the trickle); the trickle goes on.
			var ne net.Error
			return !errors.As(err, &ne) || !ne.Timeout()
		}
	}
	ask := func(c net.Conn, br *bufio.Reader, req string) string {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	t.Run("slow head on a first request", func(t *testing.T) {
		c, _ := raw(t, p, "GET / HTTP/1.1\r\nHost: svc\r\n")
		if !closedBefore(c) {
			t.Fatal("a head trickling in for 3 s was not cut; the header limit is 200 ms")
		}
	})
	t.Run("slow head on a later request", func(t *testing.T) {
		c, br := raw(t, p, "")
		if got := ask(c, br, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); got != `got ""` {
			t.Fatalf("first answer %q", got)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc\r\n")
		if !closedBefore(c) {
			t.Fatal("a head trickling in for 3 s was not cut; the header limit is 200 ms")
		}
	})
	t.Run("slow body, slow answer", func(t *testing.T) {
		c, br := raw(t, p, "")
		io.WriteString(c, "PUT / HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
		if line, _ := br.ReadString('\n'); !strings.Contains(line, " 100 ") {
			t.Fatalf("want 100 Continue, got %q", line)
		}
		br.ReadString('\n')
		time.Sleep(3 * limits.header) // the stimulus: a client slower than the header limit
		if got := ask(c, br, "ok"); got != `got "ok"` {
			t.Fatalf("answer %q", got)
		}
		go func() { time.Sleep(3 * limits.header); close(slow) }() // an instance slower than it
		if got := ask(c, br, "GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n"); got != `got ""` {
			t.Fatalf("slow answer %q", got)
		}
		if got := ask(c, br, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); got != `got ""` {
			t.Fatalf("next answer %q", got)
		}
	})
	t.Run("idle", func(t *testing.T) {
		p, _ := startProxyLimits(t, registry.Service{}, clientLimits{header: 5 * time.Second, idle: 300 * time.Millisecond}, backendAddr(be))
		c, br := raw(t, p, "")
		for i := 0; i < 3; i++ {
			if got := ask(c, br, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); got != `got ""` {
				t.Fatalf("answer %q", got)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("idle connection: %v, want it closed by the proxy after 300 ms", err)
		}
	})
}
