package health

import (
	"context"
	"net"

	"github.com/tandemhq/tandem/internal/registry"
)

// tcpChecker passes when a TCP connection to addr opens.
type tcpChecker struct {
	addr string
}

func (t *tcpChecker) Check(ctx context.Context) Result {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return failure(ctx, err)
	}
	conn.Close()
	return Result{Status: registry.Passing, Output: "TCP connect " + t.addr + ": ok"}
}
