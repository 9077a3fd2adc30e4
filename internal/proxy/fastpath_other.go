//go:build !linux

package proxy

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// Elsewhere than on Linux there is no fast path: every connection takes
// the plain path (fastpath_linux.go says what the fast path is).

type fastPath struct{}

type fastConn struct{}

func newFastPath(time.Duration, *slog.Logger) (*fastPath, error) {
	return nil, errors.New("the epoll fast path exists on Linux only")
}

func (*fastPath) run()                    {}
func (*fastPath) close()                  {}
func (*fastPath) parked() int             { return 0 }
func (*fastPath) conn(net.Conn) *fastConn { return nil }

func (*fastConn) Read([]byte) (int, error) { return 0, io.EOF }
func (*fastConn) forget()                  {}
func (*fastConn) detach()                  {}

func (*fastConn) wait(br *bufio.Reader, _ time.Time, _ *atomic.Bool) error {
	_, err := br.Peek(1)
	return err
}
