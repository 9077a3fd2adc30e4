package system

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tandemhq/tandem/internal/clustertest"
	"github.com/tandemhq/tandem/internal/config"
	"github.com/tandemhq/tandem/internal/registry"
)

// proxyClient sends requests to a node's proxy with Host: svc.
func proxyClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
}

func proxyURL(nd *clustertest.Node) string {
	return "http://" + nd.Proxy
}

// TestProxyRoutesAroundFailure sends GETs and POSTs through every node's
// proxy to three real backend processes, one per node, then kills -9 a
// backend and later a whole node with its backend.
func TestProxyRoutesAroundFailure(t *testing.T) {
	c := clustertest.Start(t, 3, clustertest.Options{Mode: clustertest.Processes})
	ctx := ctxT(t, 3*time.Minute)
	var backends []*clustertest.Backend
	for i, nd := range c.Nodes {
		b := clustertest.StartBackend(t, fmt.Sprintf("web-%d", i+1))
		backends = append(backends, b)
		if _, err := nd.Client().Register(ctx, registry.Instance{Service: "web", ID: b.Name, Address: "127.0.0.1", Port: b.Port,
			Checks: []registry.Check{{Type: registry.CheckHTTP, HTTP: "/healthz", Interval: config.Duration(time.Second)}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.Eventually(30*time.Second, "every proxy reaches all three backends", func() error {
		for _, nd := range c.Nodes {
			seen := map[string]bool{}
			for range 30 {
				body, err := get(proxyURL(nd), "web")
				if err != nil {
					return err
				}
				seen[body] = true
			}
			if len(seen) != 3 {
				return fmt.Errorf("%s reaches %v", nd.Name, seen)
			}
		}
		return nil
	})

	type counts struct{ ok, failed atomic.Int64 }
	phase := 0
	run := func(nodes []*clustertest.Node, during func()) (gets, posts *counts, failures []string) {
		phase++
		gets, posts = &counts{}, &counts{}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		hc := proxyClient()
		for w := 0; w < 8; w++ {
			nd := nodes[w%len(nodes)]
			post := w%4 == 3
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					method := http.MethodGet
					if post {
						method = http.MethodPost
					}
					var reqBody io.Reader
					if post {
						reqBody = strings.NewReader("x")
					}
					req, _ := http.NewRequest(method, proxyURL(nd)+"/", reqBody)
					req.Host = "web"
					req.Header.Set("X-Request-Id", fmt.Sprintf("p%d-%s-w%d-%d", phase, nd.Name, w, i))
					resp, err := hc.Do(req)
					ok := err == nil && resp.StatusCode == http.StatusOK
					var body []byte
					if err == nil {
						body, _ = io.ReadAll(io.LimitReader(resp.Body, 512))
						resp.Body.Close()
					}
					cnt := gets
					if post {
						cnt = posts
					}
					if ok {
						cnt.ok.Add(1)
					} else {
						cnt.failed.Add(1)
						mu.Lock()
						failures = append(failures, fmt.Sprintf("%s via %s: %v %v %s", method, nd.Name, err, statusOf(resp), strings.TrimSpace(string(body))))
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(2 * time.Second) // load before the fault, as a user's traffic would be
		during()
		time.Sleep(3 * time.Second) // and after it
		close(stop)
		wg.Wait()
		return gets, posts, failures
	}

	gets, posts, failures := run(c.Nodes, func() { backends[1].Kill() })
	rate := float64(gets.ok.Load()) / float64(gets.ok.Load()+gets.failed.Load())
	t.Logf("backend killed: %d GETs, %.4f%% ok; %d POSTs ok, %d failed", gets.ok.Load()+gets.failed.Load(), 100*rate, posts.ok.Load(), posts.failed.Load())
	t.Logf("first failures: %v", first(failures, 5))
	if rate < 0.999 {
		t.Fatalf("GET success %.4f%% < 99.9%%", 100*rate)
	}
	checkNoDuplicatePosts(t, backends)

	// A whole node dies with its backend: the other nodes' proxies go on.
	gets, _, failures = run(c.Nodes[:2], func() {
		c.Nodes[2].Kill()
		backends[2].Kill()
	})
	rate = float64(gets.ok.Load()) / float64(gets.ok.Load()+gets.failed.Load())
	t.Logf("node killed: %d GETs through the other nodes, %.4f%% ok", gets.ok.Load()+gets.failed.Load(), 100*rate)
	t.Logf("first failures: %v", first(failures, 5))
	if rate < 0.999 {
		t.Fatalf("GET success %.4f%% < 99.9%% after a node died", 100*rate)
	}
	checkNoDuplicatePosts(t, backends)
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	return resp.Status
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// checkNoDuplicatePosts: no POST (by request id) reached a backend twice.
func checkNoDuplicatePosts(t *testing.T, backends []*clustertest.Backend) {
	t.Helper()
	seen := map[string]string{}
	total := 0
	for _, b := range backends {
		f, err := os.Open(b.PostLog)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			total++
			if prev, dup := seen[sc.Text()]; dup {
				t.Errorf("POST %s reached a backend twice (%s and %s)", sc.Text(), prev, b.Name)
			}
			seen[sc.Text()] = b.Name
		}
		f.Close()
	}
	t.Logf("%d POSTs reached backends, none twice", total)
}

func get(base, host string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Host = host
	resp, err := proxyClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), nil
}

// named starts an in-process HTTP server answering its name; with ws it
// also echoes WebSocket messages on /ws.
func named(t *testing.T, name string) *httptest.Server {
	up := websocket.Upgrader{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer conn.Close()
			for {
				typ, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				_ = conn.WriteMessage(typ, append([]byte(name+": "), msg...))
			}
		}
		fmt.Fprintln(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func portOf(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

func registerServer(t *testing.T, nd *clustertest.Node, svc, id string, port int) {
	t.Helper()
	if _, err := nd.Client().Register(ctxT(t, 10*time.Second), registry.Instance{Service: svc, ID: id, Address: "127.0.0.1", Port: port, InitialState: registry.Passing}); err != nil {
		t.Fatal(err)
	}
}

// TestProxyFeatures: WebSocket, TCP on lb_port with half-close, consistent
// hashing, and bad input.
func TestProxyFeatures(t *testing.T) {
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1})
	nd := c.Nodes[0]
	ctx := ctxT(t, 2*time.Minute)

	t.Run("websocket", func(t *testing.T) {
		registerServer(t, nd, "chat", "chat-1", portOf(named(t, "chat-1")))
		var conn *websocket.Conn
		c.Eventually(10*time.Second, "websocket through the proxy", func() error {
			h := http.Header{}
			h.Set("Host", "chat")
			d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) { return net.Dial("tcp", nd.Proxy) }}
			var err error
			conn, _, err = d.Dial("ws://chat/ws", nil)
			return err
		})
		defer conn.Close()
		for _, msg := range []string{"hello", "again"} {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := conn.ReadMessage()
			if err != nil || string(got) != "chat-1: "+msg {
				t.Fatalf("echo: %q %v", got, err)
			}
		}
	})

	t.Run("tcp on lb_port with half-close", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					data, _ := io.ReadAll(conn) // until the client's half-close
					conn.Write([]byte(strings.ToUpper(string(data))))
				}()
			}
		}()
		lbPort := clustertest.FreePorts(t, 1)[0]
		if err := nd.Client().PutService(ctx, registry.Service{Name: "echo", LBPort: lbPort}); err != nil {
			t.Fatal(err)
		}
		registerServer(t, nd, "echo", "echo-1", ln.Addr().(*net.TCPAddr).Port)
		c.Eventually(10*time.Second, "echo over the lb_port", func() error {
			conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lbPort)))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.Write([]byte("half-close works"))
			conn.(*net.TCPConn).CloseWrite()
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			got, err := io.ReadAll(conn)
			if err != nil {
				return err
			}
			if string(got) != "HALF-CLOSE WORKS" {
				return fmt.Errorf("got %q", got)
			}
			return nil
		})
	})

	t.Run("consistent hashing keeps a key on its instance", func(t *testing.T) {
		if err := nd.Client().PutService(ctx, registry.Service{Name: "cart", Balance: "hash", HashOn: "header:X-User"}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			registerServer(t, nd, "cart", fmt.Sprintf("cart-%d", i), portOf(named(t, fmt.Sprintf("cart-%d", i))))
		}
		hc := proxyClient()
		send := func(user string) (string, error) {
			req, _ := http.NewRequest(http.MethodGet, proxyURL(nd)+"/", nil)
			req.Host = "cart"
			req.Header.Set("X-User", user)
			resp, err := hc.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return strings.TrimSpace(string(b)), nil
		}
		c.Eventually(10*time.Second, "three cart instances in the proxy", func() error {
			seen := map[string]bool{}
			for u := range 60 {
				got, err := send(fmt.Sprint("u", u))
				if err != nil {
					return err
				}
				seen[got] = true
			}
			if len(seen) != 3 {
				return fmt.Errorf("users spread over %v", seen)
			}
			return nil
		})
		for u := range 20 {
			user := fmt.Sprint("user-", u)
			first, _ := send(user)
			for range 10 {
				if got, _ := send(user); got != first {
					t.Fatalf("user %s moved from %s to %s", user, first, got)
				}
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		// A malformed request: 400 from the proxy itself.
		conn, err := net.Dial("tcp", nd.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("NOT HTTP AT ALL\r\n\r\n"))
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.Contains(line, " 400 ") {
			t.Fatalf("malformed request: %q, want 400", line)
		}
		// An unknown host: 404 saying so.
		req, _ := http.NewRequest(http.MethodGet, proxyURL(nd)+"/", nil)
		req.Host = "nosuch.example"
		resp, err := proxyClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no service for host") {
			t.Fatalf("unknown host: %d %s", resp.StatusCode, body)
		}
		// A service with no live instance: a fast 503, never a hang.
		if _, err := nd.Client().Register(ctx, registry.Instance{Service: "down", ID: "down-1", Address: "127.0.0.1", Port: 1,
			Checks: []registry.Check{{Type: registry.CheckTCP, Interval: config.Duration(200 * time.Millisecond)}}}); err != nil {
			t.Fatal(err)
		}
		c.Eventually(10*time.Second, "503 for a service with no live instance", func() error {
			req, _ := http.NewRequest(http.MethodGet, proxyURL(nd)+"/", nil)
			req.Host = "down"
			start := time.Now()
			resp, err := proxyClient().Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no passing instance") {
				return fmt.Errorf("%d %s", resp.StatusCode, body)
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("503 took %s", took)
			}
			return nil
		})
	})

	t.Run("h2c", func(t *testing.T) {
		protos := new(http.Protocols)
		protos.SetUnencryptedHTTP2(true)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: protos}}
		registerServer(t, nd, "h2", "h2-1", portOf(named(t, "h2-1")))
		c.Eventually(10*time.Second, "an HTTP/2 request without TLS through the proxy", func() error {
			req, _ := http.NewRequest(http.MethodGet, proxyURL(nd)+"/", nil)
			req.Host = "h2"
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "h2-1" {
				return fmt.Errorf("%s %d %q", resp.Proto, resp.StatusCode, body)
			}
			return nil
		})
	})

	t.Run("load across the cluster", func(t *testing.T) {
		// The cart subtest sent traffic; within a stats window (5 s) the
		// cluster-wide load shows it.
		c.Eventually(15*time.Second, "cart's load is reported", func() error {
			resp, err := c.HTTP().Get(nd.URL("/v1/services/cart/load"))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var load struct {
				Nodes int     `json:"nodes"`
				RPS   float64 `json:"requests_per_second"`
				P99   float64 `json:"p99_ms"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&load); err != nil {
				return err
			}
			if load.Nodes != 1 || load.RPS <= 0 || load.P99 <= 0 {
				return fmt.Errorf("%+v", load)
			}
			return nil
		})
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := c.HTTP().Get(nd.URL("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"tandem_proxy_requests_total{", "tandem_proxy_request_duration_seconds_bucket{", "tandem_proxy_inflight_requests{"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// TestProxyTLS: with a certificate the proxy serves HTTPS, HTTP/2 by ALPN.
func TestProxyTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, pool := selfSigned(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c := clustertest.Start(t, 1, clustertest.Options{Voters: 1, Flags: []string{"--proxy-tls-cert", certFile, "--proxy-tls-key", keyFile}})
	nd := c.Nodes[0]
	registerServer(t, nd, "secure", "secure-1", portOf(named(t, "secure-1")))
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "secure"},
		ForceAttemptHTTP2: true,
	}}
	c.Eventually(10*time.Second, "HTTPS with HTTP/2 through the proxy", func() error {
		req, _ := http.NewRequest(http.MethodGet, "https://"+nd.Proxy+"/", nil)
		req.Host = "secure"
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || strings.TrimSpace(string(body)) != "secure-1" {
			return fmt.Errorf("%s %d %q", resp.Proto, resp.StatusCode, body)
		}
		return nil
	})
}

// selfSigned makes a certificate for the name "secure" and a pool trusting it.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "secure"}, DNSNames: []string{"secure"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), pool
}
