package health

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tandemhq/tandem/internal/registry"
)

// grpcServer starts a gRPC server with the standard health service on
// 127.0.0.1:0; the whole server and service "app" start SERVING.
func grpcServer(t *testing.T) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, hs := serveGRPC(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

func serveGRPC(ln net.Listener) (*grpc.Server, *health.Server) {
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	return srv, hs
}

func TestGRPC(t *testing.T) {
	addr, hs := grpcServer(t)
	inst := instanceAt(t, addr)
	whole := newChecker(t, registry.Check{Type: registry.CheckGRPC}, inst)
	app := newChecker(t, registry.Check{Type: registry.CheckGRPC, GRPC: addr + "/app"}, inst)
	unknown := newChecker(t, registry.Check{Type: registry.CheckGRPC, GRPC: addr + "/nope"}, inst)

	steps := []struct {
		name   string
		set    func()
		ch     Checker
		want   string
		output string
	}{
		{"whole server serving", nil, whole, P, "SERVING"},
		{"app serving", nil, app, P, "SERVING"},
		{"unknown service", nil, unknown, C, "NotFound"},
		{"app not serving", func() { hs.SetServingStatus("app", healthpb.HealthCheckResponse_NOT_SERVING) }, app, C, "NOT_SERVING"},
		{"whole server unaffected", nil, whole, P, "SERVING"},
		{"app unknown status", func() { hs.SetServingStatus("app", healthpb.HealthCheckResponse_UNKNOWN) }, app, C, "UNKNOWN"},
		{"app back", func() { hs.SetServingStatus("app", healthpb.HealthCheckResponse_SERVING) }, app, P, "SERVING"},
		{"shutdown", func() { hs.Shutdown() }, whole, C, "NOT_SERVING"},
	}
	for _, s := range steps {
		if s.set != nil {
			s.set()
		}
		r := run(t, s.ch, 2*time.Second)
		if r.Status != s.want || !strings.Contains(r.Output, s.output) {
			t.Errorf("%s: %+v, want %s with %q", s.name, r, s.want, s.output)
		}
	}
}

// TestGRPCReconnect checks that one checker, reused across runs, notices a
// server going away and coming back on the same address.
func TestGRPCReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv, _ := serveGRPC(ln)
	ch := newChecker(t, registry.Check{Type: registry.CheckGRPC, GRPC: addr}, registry.Instance{})
	if r := run(t, ch, 2*time.Second); r.Status != P {
		t.Fatalf("serving: %+v", r)
	}

	srv.Stop()
	// Fail a few runs so gRPC's reconnect backoff would have grown.
	for i := range 3 {
		if r := run(t, ch, 500*time.Millisecond); r.Status != C {
			t.Fatalf("stopped, run %d: %+v, want critical", i+1, r)
		}
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv, _ = serveGRPC(ln)
	defer srv.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := run(t, ch, 500*time.Millisecond)
		if r.Status == P {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server back for 5s, check still %+v", r)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}

	if err := ch.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if r := run(t, ch, time.Second); r.Status != C || !strings.Contains(r.Output, "closed") {
		t.Errorf("after Close: %+v, want critical", r)
	}
}
