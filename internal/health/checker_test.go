package health

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/registry"
)

// instanceAt is an instance listening on addr (host:port).
func instanceAt(t *testing.T, addr string) registry.Instance {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return registry.Instance{ID: "i1", Service: "web", Address: host, Port: p}
}

// newChecker builds a checker and closes it when the test ends.
func newChecker(t *testing.T, c registry.Check, inst registry.Instance) Checker {
	t.Helper()
	ch, err := New(c, inst, Node{Name: "n1", AllowExec: true})
	if err != nil {
		t.Fatalf("New(%+v): %v", c, err)
	}
	if cl, ok := ch.(io.Closer); ok {
		t.Cleanup(func() { cl.Close() })
	}
	return ch
}

// run runs one check with the given timeout.
func run(t *testing.T, ch Checker, timeout time.Duration) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return ch.Check(ctx)
}

// hungListener accepts connections and never answers on them.
func hungListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln
}

func TestNew(t *testing.T) {
	inst := registry.Instance{Address: "10.0.0.7", Port: 8080}
	tests := []struct {
		name    string
		check   registry.Check
		wantErr error // nil: any error is checked by errText
		errText bool
		check2  func(t *testing.T, ch Checker)
	}{
		{name: "ttl is refused", check: registry.Check{Type: registry.CheckTTL}, wantErr: ErrTTL},
		{name: "unknown type", check: registry.Check{Type: "ping"}, errText: true},
		{name: "empty type", check: registry.Check{}, errText: true},
		{name: "exec without command", check: registry.Check{Type: registry.CheckExec}, errText: true},
		{name: "http bad URL", check: registry.Check{Type: registry.CheckHTTP, HTTP: "ftp://x"}, errText: true},
		{
			name: "http path on the instance", check: registry.Check{Type: registry.CheckHTTP, HTTP: "/healthz"},
			check2: func(t *testing.T, ch Checker) {
				if got := ch.(*httpChecker).url; got != "http://10.0.0.7:8080/healthz" {
					t.Errorf("url = %q", got)
				}
			},
		},
		{
			name: "http full URL", check: registry.Check{Type: registry.CheckHTTP, HTTP: "https://example.test:9/h"},
			check2: func(t *testing.T, ch Checker) {
				if got := ch.(*httpChecker).url; got != "https://example.test:9/h" {
					t.Errorf("url = %q", got)
				}
			},
		},
		{
			name: "tcp defaults to the instance", check: registry.Check{Type: registry.CheckTCP},
			check2: func(t *testing.T, ch Checker) {
				if got := ch.(*tcpChecker).addr; got != "10.0.0.7:8080" {
					t.Errorf("addr = %q", got)
				}
			},
		},
		{
			name: "tcp explicit", check: registry.Check{Type: registry.CheckTCP, TCP: "db:5432"},
			check2: func(t *testing.T, ch Checker) {
				if got := ch.(*tcpChecker).addr; got != "db:5432" {
					t.Errorf("addr = %q", got)
				}
			},
		},
		{
			name: "grpc defaults to the instance", check: registry.Check{Type: registry.CheckGRPC},
			check2: func(t *testing.T, ch Checker) {
				g := ch.(*grpcChecker)
				if g.target != "10.0.0.7:8080" || g.service != "" {
					t.Errorf("target, service = %q, %q", g.target, g.service)
				}
			},
		},
		{
			name: "grpc with service", check: registry.Check{Type: registry.CheckGRPC, GRPC: "127.0.0.1:9000/pkg.Svc"},
			check2: func(t *testing.T, ch Checker) {
				g := ch.(*grpcChecker)
				if g.target != "127.0.0.1:9000" || g.service != "pkg.Svc" {
					t.Errorf("target, service = %q, %q", g.target, g.service)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, err := New(tt.check, inst, Node{Name: "n1", AllowExec: true})
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("New err = %v, want %v", err, tt.wantErr)
				}
			case tt.errText:
				if err == nil {
					t.Fatalf("New(%+v) = nil error, want one", tt.check)
				}
				t.Logf("error: %v", err)
			default:
				if err != nil {
					t.Fatal(err)
				}
				if cl, ok := ch.(io.Closer); ok {
					defer cl.Close()
				}
				tt.check2(t, ch)
			}
		})
	}

	ch, err := New(registry.Check{Type: registry.CheckTCP}, registry.Instance{Address: "::1", Port: 80}, Node{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ch.(*tcpChecker).addr; got != "[::1]:80" {
		t.Errorf("ipv6 addr = %q", got)
	}
}

// TestDeadline is the contract every checker kind shares: a healthy target
// passes, and a target that never answers is critical by ctx's deadline.
func TestDeadline(t *testing.T) {
	tests := []struct {
		name    string
		healthy func(t *testing.T) (registry.Check, registry.Instance)
		hung    func(t *testing.T) (registry.Check, registry.Instance)
	}{
		{
			name: "http",
			healthy: func(t *testing.T) (registry.Check, registry.Instance) {
				srv := httpServer(t)
				return registry.Check{Type: registry.CheckHTTP, HTTP: "/ok"}, instanceAt(t, srv.Listener.Addr().String())
			},
			hung: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckHTTP, HTTP: "/ok"}, instanceAt(t, hungListener(t).Addr().String())
			},
		},
		{
			name: "tcp",
			healthy: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckTCP}, instanceAt(t, hungListener(t).Addr().String())
			},
			hung: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckTCP}, instanceAt(t, fullBacklog(t))
			},
		},
		{
			name: "grpc",
			healthy: func(t *testing.T) (registry.Check, registry.Instance) {
				addr, _ := grpcServer(t)
				return registry.Check{Type: registry.CheckGRPC}, instanceAt(t, addr)
			},
			hung: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckGRPC}, instanceAt(t, hungListener(t).Addr().String())
			},
		},
		{
			name: "exec",
			healthy: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckExec, Command: []string{"/bin/sh", "-c", "exit 0"}}, registry.Instance{}
			},
			hung: func(t *testing.T) (registry.Check, registry.Instance) {
				return registry.Check{Type: registry.CheckExec, Command: []string{"/bin/sh", "-c", "sleep 5; echo late"}}, registry.Instance{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, inst := tt.healthy(t)
			if r := run(t, newChecker(t, c, inst), 5*time.Second); r.Status != P {
				t.Errorf("healthy target: %+v, want passing", r)
			}

			c, inst = tt.hung(t)
			ch := newChecker(t, c, inst)
			start := time.Now()
			r := run(t, ch, 200*time.Millisecond)
			elapsed := time.Since(start)
			if r.Status != C {
				t.Errorf("hung target: %+v, want critical", r)
			}
			if elapsed > time.Second {
				t.Errorf("hung target: Check took %s with a 200ms deadline", elapsed)
			}
			t.Logf("hung target: %q after %s", r.Output, elapsed.Round(time.Millisecond))
		})
	}
}
