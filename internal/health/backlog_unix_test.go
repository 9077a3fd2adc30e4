//go:build unix

package health

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// fullBacklog returns the address of a listener whose accept queue is full,
// so that a new connection to it hangs in the handshake.
func fullBacklog(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Skipf("shrink backlog: %v %v", err, lerr)
	}
	addr := ln.Addr().String()
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // this one hung: the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue on this system")
	return ""
}
