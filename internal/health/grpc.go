package health

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tandemhq/tandem/internal/registry"
)

// grpcChecker asks a server's grpc.health.v1 service about one service
// ("" = the whole server): SERVING passes, anything else fails. It keeps
// one connection across runs, dialled on first use.
type grpcChecker struct {
	target  string
	service string

	mu     sync.Mutex
	conn   *grpc.ClientConn // nil until the first run
	closed bool
}

func (g *grpcChecker) client() (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("grpc check: checker is closed")
	}
	if g.conn == nil {
		conn, err := grpc.NewClient(g.target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithNoProxy())
		if err != nil {
			return nil, fmt.Errorf("grpc check %s: %w", g.target, err)
		}
		g.conn = conn
	}
	return g.conn, nil
}

func (g *grpcChecker) Check(ctx context.Context) Result {
	conn, err := g.client()
	if err != nil {
		return failure(ctx, err)
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.service})
	if err != nil {
		st := status.Convert(err)
		if st.Code() == codes.Unavailable {
			// Retry the connection on the next run instead of after
			// gRPC's backoff, which grows to minutes.
			conn.ResetConnectBackoff()
		}
		if ctx.Err() != nil {
			return failure(ctx, err)
		}
		return Result{Status: registry.Critical, Output: fmt.Sprintf("gRPC %s: %s", st.Code(), st.Message())}
	}
	out := "gRPC health: " + resp.GetStatus().String()
	if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		return Result{Status: registry.Passing, Output: out}
	}
	return Result{Status: registry.Critical, Output: out}
}

// Close closes the connection. Later runs are critical.
func (g *grpcChecker) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.conn == nil {
		return nil
	}
	err := g.conn.Close()
	g.conn = nil
	return err
}
