package cli

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/demo"
)

// runDemo runs `tandem demo args...` in-process until the returned cancel
// is called, and returns its base URL (read from its "demo listening on"
// line), its stderr and the channel its error comes back on.
func runDemo(t *testing.T, env map[string]string, args ...string) (string, *syncBuffer, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd := demoCmd(func(k string) string { return env[k] })
	stderr := &syncBuffer{}
	cmd.SetErr(stderr)
	cmd.SetOut(io.Discard)
	cmd.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	listening := regexp.MustCompile(`demo listening on (\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := listening.FindStringSubmatch(stderr.String()); m != nil {
			return "http://" + m[1], stderr, cancel, done
		}
		select {
		case err := <-done:
			t.Fatalf("demo exited before listening: %v\n%s", err, stderr)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo did not print its address:\n%s", stderr)
		}
	}
}

// fetch GETs url and returns the status and body.
func fetch(t *testing.T, cl *http.Client, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(header) == 2 {
		req.Header.Set(header[0], header[1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestDemoCommand(t *testing.T) {
	base, stderr, stop, done := runDemo(t, nil, "--addr", "127.0.0.1:0", "--id", "a", "--node", "n1", "--fail-after", "2")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}

	if code, body := fetch(t, cl, base+"/"); code != 200 || body != "demo instance a on node n1: request 1\n" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	code, body := fetch(t, cl, base+"/", "Accept", "application/json")
	var a demo.Answer
	if code != 200 || json.Unmarshal([]byte(body), &a) != nil || a.Instance != "a" || a.Node != "n1" || a.Request != 2 {
		t.Fatalf("GET / as JSON: %d %q", code, body)
	}
	// Two requests counted: fail-after 2 is reached.
	if code, body := fetch(t, cl, base+"/healthz"); code != 503 || !strings.Contains(body, "--fail-after 2") {
		t.Fatalf("GET /healthz after 2 requests: %d %q, want 503", code, body)
	}
	if code, body := fetch(t, cl, base+"/"); code != 500 || !strings.HasPrefix(body, "demo instance a on node n1: request 3: failing") {
		t.Fatalf("GET / #3: %d %q, want 500", code, body)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr)
	}
}

// TestDemoDrains stops the demo (as SIGTERM does) with a request in
// flight: it stops accepting connections at once, answers the request in
// full, and exits 0.
func TestDemoDrains(t *testing.T) {
	base, stderr, stop, done := runDemo(t, nil, "--addr", "127.0.0.1:0")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	if code, body := fetch(t, cl, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("GET /healthz: %d %q", code, body)
	}

	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := cl.Get(base + "/slow?ms=1000")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, string(b), err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var a demo.Answer
		_, body := fetch(t, cl, base+"/?format=json")
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		if a.InFlight >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow request never got in flight")
		}
	}

	stop()
	addr := strings.TrimPrefix(base, "http://")
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // refused: no longer accepting
		}
		c.Close()
		select {
		case r := <-slow:
			t.Fatalf("the slow request ended (%+v) while the demo still accepted connections", r)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the demo still accepts connections after it was stopped")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	r := <-slow
	if r.err != nil || r.code != 200 || !strings.Contains(r.body, "slept 1s") {
		t.Fatalf("the request in flight: %+v, want it answered in full", r)
	}
	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr)
	}
}

func TestResolveDemoConfig(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		flags    func(*demo.Config)
		addr, id string
		node     string
		err      string
	}{
		{name: "defaults", addr: "127.0.0.1:8080"},
		{name: "env", env: map[string]string{"PORT": "9001", "TANDEM_PORT_HTTP": "9002", "TANDEM_INSTANCE": "web-3", "TANDEM_NODE": "n2"},
			addr: "127.0.0.1:9001", id: "web-3", node: "n2"},
		{name: "named port only", env: map[string]string{"TANDEM_PORT_HTTP": "9002"}, addr: "127.0.0.1:9002"},
		{name: "flags win", env: map[string]string{"PORT": "9001", "TANDEM_INSTANCE": "web-3", "TANDEM_NODE": "n2"},
			flags: func(c *demo.Config) { c.Addr, c.ID, c.Node = "127.0.0.1:0", "a", "n1" },
			addr:  "127.0.0.1:0", id: "a", node: "n1"},
		{name: "bad PORT", env: map[string]string{"PORT": "http"}, err: `PORT="http" is not a port number`},
		{name: "PORT out of range", env: map[string]string{"PORT": "70000"}, err: "not a port number"},
		{name: "bad fail-after", flags: func(c *demo.Config) { c.FailAfter = -2 }, err: "--fail-after -2"},
		{name: "bad shutdown timeout", flags: func(c *demo.Config) { c.ShutdownTimeout = 0 }, err: "--shutdown-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := demo.DefaultConfig()
			cfg.Addr = ""
			if tt.flags != nil {
				tt.flags(&cfg)
			}
			err := resolveDemoConfig(&cfg, func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Addr != tt.addr || (tt.id != "" && cfg.ID != tt.id) || (tt.node != "" && cfg.Node != tt.node) {
				t.Fatalf("got addr %q id %q node %q", cfg.Addr, cfg.ID, cfg.Node)
			}
			if cfg.ID == "" || cfg.Node == "" {
				t.Fatalf("id %q node %q: want defaults", cfg.ID, cfg.Node)
			}
		})
	}
}
